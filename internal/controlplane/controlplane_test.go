package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]Address{
		"istiod.istio-system.svc:15012": {TLS: true, Host: "istiod.istio-system.svc", HostPort: "istiod.istio-system.svc:15012"},
		"https://istiod:15012":          {TLS: true, Host: "istiod", HostPort: "istiod:15012"},
		"https://istiod:15012/":         {TLS: true, Host: "istiod", HostPort: "istiod:15012"},
		"https://istiod":                {TLS: true, Host: "istiod", HostPort: "istiod:443"},
		"http://istiod":                 {Host: "istiod", HostPort: "istiod:80"},
		"http://127.0.0.1:15010":        {Host: "127.0.0.1", HostPort: "127.0.0.1:15010"},
		"http://[::1]:15010":            {Host: "::1", HostPort: "[::1]:15010"},
		"[fd00::1]:15012":               {TLS: true, Host: "fd00::1", HostPort: "[fd00::1]:15012"},
	} {
		got, err := ParseAddress(in)
		if err != nil {
			t.Errorf("ParseAddress(%q): %v", in, err)
			continue
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ParseAddress(%q) (-want +got):\n%s", in, diff)
		}
	}
}

func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one containing %q", what, parts)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not contain %q", what, err, p)
		}
	}
}

func TestDialConfigErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     DialConfig
		wantErr []string
	}{
		{"no address", DialConfig{}, []string{"no control plane address"}},
		{"bad scheme", DialConfig{Address: "unix:///run/x.sock"}, []string{`scheme "unix"`}},
		{"query", DialConfig{Address: "https://istiod:15012?x=1"}, []string{"no user, path, query"}},
		{"default root missing", DialConfig{Address: "istiod:15012"}, []string{DefaultRootCAFile}},
		{"garbage root", DialConfig{Address: "istiod:15012", RootCAFile: garbage}, []string{garbage, "not PEM"}},
		{"private key PEM", DialConfig{Address: "istiod:15012", RootCAFile: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, []string{"inline CA root PEM", "PRIVATE KEY"}},
		{"bad token", DialConfig{Address: "http://istiod:15010", TokenPath: "/no such/file"}, []string{"neither an existing file nor a valid token"}},
		{"clusterid header", DialConfig{Address: "http://istiod:15010", Headers: map[string]string{"ClusterID": "x"}}, []string{"ClusterID", "set by the client"}},
		{"bin header", DialConfig{Address: "http://istiod:15010", Headers: map[string]string{"x-bin": "x"}}, []string{"-bin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = quietLogger()
			conn, err := Dial(tc.cfg)
			if conn != nil {
				_ = conn.Close()
			}
			wantErr(t, "Dial", err, tc.wantErr...)
		})
	}
}

// recordingHealth is a gRPC health server that records the metadata of each call.
type recordingHealth struct {
	*health.Server
	md chan metadata.MD
}

func (h *recordingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h.md <- md
	return h.Server.Check(ctx, req)
}

// startServer serves the health service on 127.0.0.1 (TLS with cert for "istiod.test" if
// tlsCert is non-nil) until the test ends.
func startServer(t *testing.T, tlsCert *tls.Certificate) (string, *recordingHealth) {
	t.Helper()
	var opts []grpc.ServerOption
	if tlsCert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*tlsCert}})))
	}
	srv := grpc.NewServer(opts...)
	h := &recordingHealth{Server: health.NewServer(), md: make(chan metadata.MD, 10)}
	healthpb.RegisterHealthServer(srv, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), h
}

func check(t *testing.T, conn *grpc.ClientConn) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestDialPlaintextMetadataAndTokenRotation(t *testing.T) {
	addr, h := startServer(t, nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn, err := Dial(DialConfig{
		Address: "http://" + addr, TokenPath: tokenFile,
		Headers: map[string]string{"X-Extra": "v"}, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type seen struct{ Auth, ClusterID, Extra string }
	var got []seen
	for _, tok := range []string{"", "two"} {
		if tok != "" {
			if err := os.WriteFile(tokenFile, []byte(tok), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := check(t, conn); err != nil {
			t.Fatalf("Check: %v", err)
		}
		md := <-h.md
		got = append(got, seen{strings.Join(md.Get("authorization"), ","), strings.Join(md.Get("clusterid"), ","), strings.Join(md.Get("x-extra"), ",")})
	}
	want := []seen{{"Bearer one", "Kubernetes", "v"}, {"Bearer two", "Kubernetes", "v"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metadata seen (-want +got):\n%s", diff)
	}
}

func TestDialTLSAltHostname(t *testing.T) {
	rootPEM, cert := testServerCert(t)
	addr, _ := startServer(t, cert)
	for _, tc := range []struct {
		name, alt string
		ok        bool
	}{{"alt hostname in cert", "istiod.test", true}, {"IP not in cert", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := Dial(DialConfig{Address: addr, RootCAFile: string(rootPEM), AltHostname: tc.alt, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			err = check(t, conn)
			if tc.ok && err != nil {
				t.Fatalf("Check: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("Check succeeded against a server whose certificate does not name 127.0.0.1")
			}
		})
	}
}

// testServerCert returns a self-signed CA (PEM) and a server certificate for "istiod.test".
func testServerCert(t *testing.T) ([]byte, *tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"istiod.test"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		&tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}
