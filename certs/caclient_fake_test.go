package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	pb "istio.io/api/security/v1alpha1"
)

// fakeCA is an IstioCertificateService on 127.0.0.1 that signs CSRs with its own test root and
// records every call.
type fakeCA struct {
	pb.UnimplementedIstioCertificateServiceServer
	t       *testing.T
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	addr    string // host:port the server listens on
	// serverRootFile verifies the server's TLS certificate (DNS SAN "istiod.test", no IP SAN); set
	// only for TLS fakes.
	serverRootFile string
	serverRootPEM  []byte

	mu sync.Mutex // guards respond and calls
	// respond, if set, answers call n (0-based) instead of sign.
	respond func(n int, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error)
	calls   []caCall
	// called receives the number of each call once it is recorded (buffered; dropped when full).
	called chan int
}

type caCall struct {
	md  metadata.MD
	req *pb.IstioCertificateRequest
}

// newFakeCA starts a fake CA, with TLS if withTLS, stopped when the test ends.
func newFakeCA(t *testing.T, withTLS bool) *fakeCA {
	t.Helper()
	f := &fakeCA{t: t, called: make(chan int, 100)}
	f.rootKey, f.root = mkCert(t, nil, nil, &x509.Certificate{
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	})
	var opts []grpc.ServerOption
	if withTLS {
		srvRootKey, srvRoot := mkCert(t, nil, nil, &x509.Certificate{
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		})
		key, cert := mkCert(t, srvRootKey, srvRoot, &x509.Certificate{
			DNSNames:    []string{"istiod.test"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		f.serverRootPEM = encodeCertsPEM([]*x509.Certificate{srvRoot})
		f.serverRootFile = filepath.Join(t.TempDir(), "root-cert.pem")
		writeFile(t, f.serverRootFile, f.serverRootPEM)
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
			MinVersion:   tls.VersionTLS12,
		})))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	srv := grpc.NewServer(opts...)
	pb.RegisterIstioCertificateServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

func (f *fakeCA) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, caCall{md: md.Copy(), req: proto.Clone(req).(*pb.IstioCertificateRequest)})
	respond := f.respond
	f.mu.Unlock()
	select {
	case f.called <- n:
	default:
	}
	if respond != nil {
		return respond(n, req)
	}
	return f.sign(req)
}

// setRespond replaces the answer function; nil restores normal signing.
func (f *fakeCA) setRespond(fn func(n int, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error)) {
	f.mu.Lock()
	f.respond = fn
	f.mu.Unlock()
}

// sign answers req normally: a leaf for the CSR's key and URI SANs, valid for the requested
// duration, followed by the root.
func (f *fakeCA) sign(req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	pub, uris, err := decodeCSR(req.Csr)
	if err != nil {
		return nil, err
	}
	leaf := f.leaf(pub, uris, time.Duration(req.ValidityDuration)*time.Second, f.rootKey, f.root, true)
	return &pb.IstioCertificateResponse{CertChain: []string{pemOf(leaf), pemOf(f.root)}}, nil
}

// leaf signs a workload certificate for pub with the given URI SANs, valid from now for ttl; both
// serverAuth and clientAuth if both, else serverAuth only.
func (f *fakeCA) leaf(pub crypto.PublicKey, uris []*url.URL, ttl time.Duration, parentKey crypto.Signer, parent *x509.Certificate, both bool) *x509.Certificate {
	f.t.Helper()
	serial, _ := randomSerial()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now,
		NotAfter:     now.Add(ttl),
		URIs:         uris,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if !both {
		tmpl.ExtKeyUsage = tmpl.ExtKeyUsage[:1]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		f.t.Error(err)
		return nil
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		f.t.Error(err)
	}
	return c
}

// callsSnapshot returns the calls recorded so far.
func (f *fakeCA) callsSnapshot() []caCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]caCall(nil), f.calls...)
}

// waitCall waits for call number n (0-based) to reach the server.
func (f *fakeCA) waitCall(n int) {
	f.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-f.called:
			if got >= n {
				return
			}
		case <-timeout:
			f.t.Fatalf("CA call %d did not happen within 10s", n)
		}
	}
}

func decodeCSR(csrPEM string) (crypto.PublicKey, []*url.URL, error) {
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, nil, errors.New("fake CA: CSR is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, err
	}
	return csr.PublicKey, csr.URIs, nil
}

func pemOf(certs ...*x509.Certificate) string { return string(encodeCertsPEM(certs)) }

// newP256 returns a fresh key, for certificates that must not match the CSR key.
func newP256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newIntermediate returns an intermediate CA signed by f's root.
func (f *fakeCA) newIntermediate() (*ecdsa.PrivateKey, *x509.Certificate) {
	return mkCert(f.t, f.rootKey, f.root, &x509.Certificate{
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		Subject: pkix.Name{CommonName: "intermediate"},
	})
}
