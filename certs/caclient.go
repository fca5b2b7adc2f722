package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ztunnel-go/ztunnel/internal/controlplane"
)

// DefaultCARootFile is where ztunnel looks for the CA's root certificate when CA_ROOT_CA is unset.
const DefaultCARootFile = controlplane.DefaultRootCAFile

// impersonationKey is the metadata field naming the identity requested on behalf of a workload.
const impersonationKey = "ImpersonatedIdentity"

// CAClientConfig configures a CAClient (ztunnel-behavior §6; transport as in §3.3).
type CAClientConfig struct {
	// Address (CA_ADDRESS) is "https://host:port" (TLS), "http://host:port" (plaintext gRPC, for tests
	// and trusted local set-ups) or "host:port" (= https). A missing port means 443 (https) or 80 (http).
	// Required: the zero value is an error.
	Address string
	// RootCAFile (CA_ROOT_CA) holds the roots that verify the CA's TLS certificate: a PEM file path,
	// "SYSTEM" for the OS roots, or inline PEM if the value starts with "-----BEGIN". It is read once, in
	// NewCAClient, and ignored for http:// addresses. Zero means DefaultCARootFile.
	RootCAFile string
	// AltHostname (ALT_CA_HOSTNAME) is the name the CA's certificate is verified against (and sent as
	// SNI) instead of the host of Address. Zero means the host of Address.
	AltHostname string
	// TokenPath (AUTH_TOKEN) is the bearer token source. If it names an existing file, the file is
	// re-read on every request and its content (surrounding white space trimmed) is sent as
	// "authorization: Bearer <token>"; any other value is used as a static token. Zero means no
	// authorization header.
	TokenPath string
	// ClusterID is sent as header "clusterid". Zero means "Kubernetes".
	ClusterID string
	// Headers (CA_HEADER_*) are extra request headers. Names are lower-cased; names reserved by HTTP/2
	// or gRPC, "authorization" and "clusterid" are rejected. Zero means none.
	Headers map[string]string
	// Impersonate (shared proxy mode) adds metadata {"ImpersonatedIdentity": "<spiffe id>"} to each
	// request, so the CA issues for the workload rather than for the caller's own identity. The
	// returned identity is checked in every mode.
	Impersonate bool
	// TTL is the requested validity (validity_duration, whole seconds rounded up; SECRET_TTL). The CA
	// may shorten it. Zero means 24h.
	TTL time.Duration
	// DialTimeout bounds each TCP connect to the CA. Zero means 5s.
	DialTimeout time.Duration
	// Logger receives configuration warnings. Nil means slog.Default().
	Logger *slog.Logger
}

func (c CAClientConfig) withDefaults() CAClientConfig {
	if c.RootCAFile == "" {
		c.RootCAFile = DefaultCARootFile
	}
	if c.ClusterID == "" {
		c.ClusterID = "Kubernetes"
	}
	if c.TTL <= 0 {
		c.TTL = 24 * time.Hour
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// CAClient is an [Issuer] backed by the Istio CA: each Issue sends a fresh CSR to
// istio.v1.auth.IstioCertificateService/CreateCertificate and verifies the chain that comes back. The
// roots returned with the chain become the certificate's trust anchors.
//
// A CAClient holds one gRPC channel, connected lazily and reconnected as needed. It is immutable after
// NewCAClient and safe for concurrent use; in-flight limits, single flight and retries are the
// Manager's job.
type CAClient struct {
	cfg    CAClientConfig
	target string // host:port dialed
	conn   *grpc.ClientConn
	rpc    pb.IstioCertificateServiceClient
}

var _ Issuer = (*CAClient)(nil)

// NewCAClient validates cfg and prepares the gRPC channel; it does not connect. A bad address or
// scheme, unusable root certificates, an unreadable token file or invalid headers are errors naming
// the culprit.
func NewCAClient(cfg CAClientConfig) (*CAClient, error) {
	cfg = cfg.withDefaults()
	if cfg.Address == "" {
		return nil, errNoAddress
	}
	addr, err := controlplane.ParseAddress(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("CA client: %w", err)
	}
	conn, err := controlplane.Dial(controlplane.DialConfig{
		Address:     cfg.Address,
		RootCAFile:  cfg.RootCAFile,
		AltHostname: cfg.AltHostname,
		TokenPath:   cfg.TokenPath,
		ClusterID:   cfg.ClusterID,
		Headers:     cfg.Headers,
		DialTimeout: cfg.DialTimeout,
		Logger:      cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("CA client: %w", err)
	}
	return &CAClient{cfg: cfg, target: addr.HostPort, conn: conn, rpc: pb.NewIstioCertificateServiceClient(conn)}, nil
}

// Issue generates a fresh P-256 key and CSR for id, asks the CA to sign it and returns the verified
// result. The response chain (leaf first, the last element holding the root or roots) must verify
// from the leaf to those roots, and the leaf must carry exactly id as its only URI SAN and our
// public key. RPC errors wrap the gRPC status (status.FromError finds it).
func (c *CAClient) Issue(ctx context.Context, id Identity) (*WorkloadCert, error) {
	csrPEM, key, err := NewCSR(id)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	req := &pb.IstioCertificateRequest{
		Csr:              string(csrPEM),
		ValidityDuration: ttlSeconds(c.cfg.TTL),
	}
	if c.cfg.Impersonate {
		req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			impersonationKey: structpb.NewStringValue(id.String()),
		}}
	}
	resp, err := c.rpc.CreateCertificate(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: CreateCertificate at %s: %w", id, c.target, err)
	}
	wc, err := certFromCAResponse(resp.GetCertChain(), key, id, time.Now())
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: response from %s: %w", id, c.target, err)
	}
	return wc, nil
}

// Close closes the gRPC channel. Issue calls after Close fail.
func (c *CAClient) Close() error {
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("close CA client %s: %w", c.target, err)
	}
	return nil
}

// ttlSeconds converts d to whole seconds, rounding up, at least 1.
func ttlSeconds(d time.Duration) int64 {
	s := math.Ceil(d.Seconds())
	if s < 1 {
		return 1
	}
	return int64(s)
}

// errNoAddress is returned for an empty CAClientConfig.Address.
var errNoAddress = errors.New("CA client: no CA address configured (CA_ADDRESS)")
