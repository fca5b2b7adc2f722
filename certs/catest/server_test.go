package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ztunnel-go/ztunnel/certs"
)

var (
	idA = certs.Identity{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "a"}
	idB = certs.Identity{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "b"}
)

// fixture is a fake CA served on loopback, stopped when the test ends.
type fixture struct {
	ca   *certs.LocalCA
	srv  *Server
	addr string
	rpc  pb.IstioCertificateServiceClient
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ca: ca, srv: NewServer(ca, slog.New(slog.DiscardHandler))}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	f.srv.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	f.addr = lis.Addr().String()
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f.rpc = pb.NewIstioCertificateServiceClient(conn)
	return f
}

// client returns the project's CA client pointed at the fixture over plaintext.
func (f *fixture) client(t *testing.T, impersonate bool) *certs.CAClient {
	t.Helper()
	c, err := certs.NewCAClient(certs.CAClientConfig{
		Address: "http://" + f.addr, TokenPath: "tok-123", ClusterID: "c1", Impersonate: impersonate,
		TTL: time.Hour, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func csrFor(t *testing.T, id certs.Identity) string {
	t.Helper()
	csr, _, err := certs.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	return string(csr)
}

func TestIssueThroughCAClient(t *testing.T) {
	f := newFixture(t)
	for _, impersonate := range []bool{false, true} {
		wc, err := f.client(t, impersonate).Issue(testCtx(t), idA)
		if err != nil {
			t.Fatalf("Issue (impersonate=%v): %v", impersonate, err)
		}
		if wc.Identity != idA {
			t.Errorf("identity = %s, want %s", wc.Identity, idA)
		}
		if len(wc.Roots) != 1 || !wc.Roots[0].Equal(f.ca.Roots()[0]) {
			t.Errorf("roots are not the LocalCA's root")
		}
		if life := wc.TLS.Leaf.NotAfter.Sub(wc.TLS.Leaf.NotBefore); life < time.Hour || life > time.Hour+2*time.Minute {
			t.Errorf("leaf lifetime %v, want the requested 1h (+ backdating)", life)
		}
	}
	want := []Request{
		{Identity: idA.String(), Token: "tok-123", ClusterID: "c1", TTL: time.Hour, Code: codes.OK},
		{Identity: idA.String(), ImpersonatedIdentity: idA.String(), Token: "tok-123", ClusterID: "c1", TTL: time.Hour, Code: codes.OK},
	}
	if diff := cmp.Diff(want, f.srv.Requests()); diff != "" {
		t.Errorf("Requests (-want +got):\n%s", diff)
	}
}

func TestImpersonationMismatchRefused(t *testing.T) {
	f := newFixture(t)
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "Bearer node-token")
	_, err := f.rpc.CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr:      csrFor(t, idA),
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"ImpersonatedIdentity": structpb.NewStringValue(idB.String())}},
	})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("CreateCertificate with a mismatching impersonated identity: %v, want PermissionDenied", err)
	}
	want := []Request{{Identity: idA.String(), ImpersonatedIdentity: idB.String(), Token: "node-token", Code: codes.PermissionDenied}}
	if diff := cmp.Diff(want, f.srv.Requests()); diff != "" {
		t.Errorf("Requests (-want +got):\n%s", diff)
	}
}

func TestFailNext(t *testing.T) {
	f := newFixture(t)
	f.srv.FailNext(2, codes.Unavailable)
	req := &pb.IstioCertificateRequest{Csr: csrFor(t, idA)}
	for i := range 2 {
		if _, err := f.rpc.CreateCertificate(testCtx(t), req); status.Code(err) != codes.Unavailable {
			t.Errorf("call %d: %v, want Unavailable", i, err)
		}
	}
	resp, err := f.rpc.CreateCertificate(testCtx(t), req)
	if err != nil {
		t.Fatalf("call after the injected failures: %v", err)
	}
	if len(resp.CertChain) != 2 {
		t.Errorf("cert chain has %d elements, want leaf and root", len(resp.CertChain))
	}
	f.srv.FailNext(1, codes.OK) // OK means Unavailable
	if _, err := f.rpc.CreateCertificate(testCtx(t), req); status.Code(err) != codes.Unavailable {
		t.Errorf("FailNext(1, OK): %v, want Unavailable", err)
	}
	f.srv.FailNext(3, codes.Internal)
	f.srv.FailNext(0, codes.Internal) // cancels
	if _, err := f.rpc.CreateCertificate(testCtx(t), req); err != nil {
		t.Errorf("after FailNext(0): %v", err)
	}
	var got []codes.Code
	for _, r := range f.srv.Requests() {
		got = append(got, r.Code)
	}
	if diff := cmp.Diff([]codes.Code{codes.Unavailable, codes.Unavailable, codes.OK, codes.Unavailable, codes.OK}, got); diff != "" {
		t.Errorf("recorded codes (-want +got):\n%s", diff)
	}
}

func TestBadCSR(t *testing.T) {
	f := newFixture(t)
	for name, csr := range map[string]string{
		"not PEM":      "hello",
		"not SPIFFE":   rawCSR(t, "https://example.com/x"),
		"two SANs":     rawCSR(t, idA.String(), idB.String()),
		"bad identity": rawCSR(t, "spiffe://cluster.local/ns/a"),
	} {
		_, err := f.rpc.CreateCertificate(testCtx(t), &pb.IstioCertificateRequest{Csr: csr})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestSignCSR(t *testing.T) {
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{WorkloadTTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ttl, want time.Duration
	}{{0, 2 * time.Hour}, {-time.Second, 2 * time.Hour}, {10 * time.Minute, 10 * time.Minute}} {
		chain, err := ca.SignCSR([]byte(csrFor(t, idB)), tc.ttl)
		if err != nil {
			t.Fatalf("SignCSR(ttl %v): %v", tc.ttl, err)
		}
		if len(chain) != 2 {
			t.Fatalf("chain has %d elements, want 2", len(chain))
		}
		leaf := parseCert(t, chain[0])
		root := parseCert(t, chain[1])
		if !root.Equal(ca.Roots()[0]) {
			t.Error("chain[1] is not the root")
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idB.String() {
			t.Errorf("leaf URIs %v, want [%s]", leaf.URIs, idB)
		}
		pool := x509.NewCertPool()
		pool.AddCert(root)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("leaf does not verify: %v", err)
		}
		if life := leaf.NotAfter.Sub(leaf.NotBefore) - time.Minute; life < tc.want-time.Second || life > tc.want+time.Second {
			t.Errorf("ttl %v: lifetime %v, want %v", tc.ttl, life, tc.want)
		}
	}
	// A tampered CSR (signature no longer valid) is refused.
	csr := csrFor(t, idA)
	block, _ := pem.Decode([]byte(csr))
	block.Bytes[len(block.Bytes)-3] ^= 0xff
	if _, err := ca.SignCSR(pem.EncodeToMemory(block), 0); err == nil {
		t.Error("SignCSR accepted a CSR with a broken signature")
	}
	if _, err := ca.SignCSR([]byte(rawCSR(t, "spiffe://cluster.local/ns/a/sa/b/c")), 0); err == nil || !strings.Contains(err.Error(), "CSR") {
		t.Errorf("SignCSR of a non-Istio SPIFFE ID: %v, want an error", err)
	}
}

// rawCSR returns a PEM CSR with the given URI SANs.
func rawCSR(t *testing.T, uris ...string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func parseCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		t.Fatalf("not PEM: %q", p)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
