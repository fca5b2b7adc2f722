package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"
)

// DefaultRootCAFile is where ztunnel looks for the control plane's root certificate
// (XDS_ROOT_CA / CA_ROOT_CA unset).
const DefaultRootCAFile = "./var/run/secrets/istio/root-cert.pem"

// DefaultClusterID is the "clusterid" header sent when DialConfig.ClusterID is empty.
const DefaultClusterID = "Kubernetes"

// Keepalive and connect settings of ztunnel's control plane channels (ztunnel-behavior.md §3.3).
const (
	keepaliveTime       = 30 * time.Second // HTTP/2 PING interval
	keepaliveTimeout    = 10 * time.Second // PING ack deadline
	tcpKeepalive        = 300 * time.Second
	defaultDialTimeout  = 5 * time.Second
	maxReconnectBackoff = 15 * time.Second
)

// DialConfig says how to reach a control plane gRPC server (istiod's XDS or CA endpoint).
type DialConfig struct {
	// Address is "https://host:port" (TLS), "http://host:port" (plaintext gRPC, for tests and
	// trusted local set-ups) or "host:port" (= https). A missing port means 443 (https) or 80
	// (http). Required: the zero value is ErrNoAddress.
	Address string
	// RootCAFile holds the roots that verify the server's TLS certificate: a PEM file path,
	// "SYSTEM" for the OS roots, or inline PEM if the value starts with "-----BEGIN". It is read
	// by each Dial and ignored for http:// addresses. Zero means DefaultRootCAFile.
	RootCAFile string
	// AltHostname is the name the server certificate is verified against (and sent as SNI)
	// instead of the host of Address. Zero means the host of Address.
	AltHostname string
	// TokenPath is the bearer token source. If it names an existing file, the file is re-read on
	// every request and its content (surrounding white space trimmed) is sent as
	// "authorization: Bearer <token>"; any other value is used as a static token. Zero means no
	// authorization header.
	TokenPath string
	// ClusterID is sent as header "clusterid". Zero means DefaultClusterID.
	ClusterID string
	// Headers (XDS_HEADER_* / CA_HEADER_*) are extra request metadata. Names are lower-cased;
	// names reserved by HTTP/2 or gRPC, "authorization" and "clusterid" are rejected. Zero means
	// none.
	Headers map[string]string
	// DialTimeout bounds each TCP connect. Zero means 5s.
	DialTimeout time.Duration
	// Logger receives configuration warnings. Nil means slog.Default().
	Logger *slog.Logger
}

func (c DialConfig) withDefaults() DialConfig {
	if c.RootCAFile == "" {
		c.RootCAFile = DefaultRootCAFile
	}
	if c.ClusterID == "" {
		c.ClusterID = DefaultClusterID
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = defaultDialTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Dial validates cfg and returns a gRPC channel to the server; it does not connect (the first
// RPC does). The channel carries the per-request credentials described on DialConfig, HTTP/2
// keepalive (PING every 30s, 10s timeout), TCP keepalive 300s, the connect timeout and a
// reconnect backoff capped at 15s; extra options are appended after these. A bad address or
// scheme, unusable root certificates, an unreadable token file or invalid headers are errors
// naming the culprit.
func Dial(cfg DialConfig, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	cfg = cfg.withDefaults()
	addr, err := ParseAddress(cfg.Address)
	if err != nil {
		return nil, err
	}
	transport, err := transportCredentials(addr, cfg)
	if err != nil {
		return nil, err
	}
	auth, err := newRequestAuth(cfg, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if !addr.TLS && auth.sendsToken() {
		cfg.Logger.Warn("control plane client sends its bearer token over plaintext", "address", cfg.Address)
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: tcpKeepalive}
	bo := grpcbackoff.DefaultConfig
	bo.MaxDelay = maxReconnectBackoff
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithPerRPCCredentials(auth),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", a)
		}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: cfg.DialTimeout}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
	}
	conn, err := grpc.NewClient("dns:///"+addr.HostPort, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", cfg.Address, err)
	}
	return conn, nil
}
