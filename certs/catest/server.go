package catest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ztunnel-go/ztunnel/certs"
)

// impersonationKey is the request metadata field naming the identity asked for on behalf of a
// workload (ztunnel's shared mode).
const impersonationKey = "ImpersonatedIdentity"

// Request is one recorded CreateCertificate call.
type Request struct {
	// Identity is the CSR's URI SAN as sent ("" if the CSR could not be read or had none; the first
	// one if it had several).
	Identity string
	// ImpersonatedIdentity is the request metadata's "ImpersonatedIdentity" ("" when absent).
	ImpersonatedIdentity string
	// Token is the bearer token of the "authorization" header without "Bearer " ("" when absent).
	Token string
	// ClusterID is the "clusterid" header ("" when absent).
	ClusterID string
	// TTL is the requested validity_duration (zero when not set).
	TTL time.Duration
	// Code is the answer's status code: codes.OK when a certificate was returned.
	Code codes.Code
}

// Server is a fake IstioCertificateService. Create it with NewServer and add it to a gRPC server
// with Register.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer
	ca  *certs.LocalCA
	log *slog.Logger

	mu       sync.Mutex // guards requests, failLeft and failCode
	requests []Request
	failLeft int
	failCode codes.Code
}

var _ pb.IstioCertificateServiceServer = (*Server)(nil)

// NewServer returns a fake CA that signs with ca. A nil logger means slog.Default().
func NewServer(ca *certs.LocalCA, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.Default()
	}
	return &Server{ca: ca, log: logger}
}

// Register adds the service to g. Call it before g serves.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterIstioCertificateServiceServer(g, s)
}

// Requests returns a copy of every call received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// FailNext makes the next n calls fail with code (recorded like the others), replacing an earlier
// FailNext. n <= 0 cancels injected failures; codes.OK is taken as codes.Unavailable.
func (s *Server) FailNext(n int, code codes.Code) {
	if code == codes.OK {
		code = codes.Unavailable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLeft, s.failCode = max(n, 0), code
}

// CreateCertificate implements IstioCertificateService.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	r := Request{
		Identity:             csrURI(req.GetCsr()),
		ImpersonatedIdentity: req.GetMetadata().GetFields()[impersonationKey].GetStringValue(),
		TTL:                  ttlOf(req.GetValidityDuration()),
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		r.Token = bearer(md.Get("authorization"))
		if v := md.Get("clusterid"); len(v) > 0 {
			r.ClusterID = v[0]
		}
	}
	resp, err := s.answer(r, req)
	r.Code = status.Code(err)
	s.mu.Lock()
	s.requests = append(s.requests, r)
	s.mu.Unlock()
	s.log.Debug("CreateCertificate", "identity", r.Identity, "impersonated", r.ImpersonatedIdentity,
		"ttl", r.TTL, "code", r.Code, "error", err)
	return resp, err
}

// answer signs req, or returns the status error istiod would.
func (s *Server) answer(r Request, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	s.mu.Lock()
	if s.failLeft > 0 {
		s.failLeft--
		code := s.failCode
		s.mu.Unlock()
		return nil, status.Errorf(code, "catest: injected failure")
	}
	s.mu.Unlock()
	if r.ImpersonatedIdentity != "" && r.ImpersonatedIdentity != r.Identity {
		return nil, status.Errorf(codes.PermissionDenied,
			"catest: CSR asks for %q, but the impersonated identity is %q", r.Identity, r.ImpersonatedIdentity)
	}
	chain, err := s.ca.SignCSR([]byte(req.GetCsr()), r.TTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "catest: %v", err)
	}
	return &pb.IstioCertificateResponse{CertChain: chain}, nil
}

// ttlOf converts validity_duration seconds to a duration: zero if not positive, capped on overflow.
func ttlOf(secs int64) time.Duration {
	if secs <= 0 {
		return 0
	}
	if secs > math.MaxInt64/int64(time.Second) {
		return math.MaxInt64
	}
	return time.Duration(secs) * time.Second
}

// csrURI returns the first URI SAN of a PEM CSR, or "" if there is none or it cannot be parsed.
func csrURI(csrPEM string) string {
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil {
		return ""
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || len(csr.URIs) == 0 {
		return ""
	}
	return csr.URIs[0].String()
}

// bearer returns the token of the first "Bearer <token>" value, or "".
func bearer(values []string) string {
	for _, v := range values {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
	}
	return ""
}
