package hbone

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testPKI is a throwaway CA with one server and one client certificate (SPIFFE URI SANs).
type testPKI struct {
	server, client *tls.Config
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey := mustKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hbone test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	leaf := func(serial int64, spiffe string, usage x509.ExtKeyUsage) tls.Certificate {
		key := mustKey(t)
		u, _ := url.Parse(spiffe)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			URIs:         []*url.URL{u},
			DNSNames:     []string{"hbone.test"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return &testPKI{
		server: &tls.Config{
			Certificates: []tls.Certificate{leaf(2, "spiffe://test/ns/server/sa/server", x509.ExtKeyUsageServerAuth)},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    roots,
			MinVersion:   tls.VersionTLS13,
		},
		client: &tls.Config{
			Certificates: []tls.Certificate{leaf(3, "spiffe://test/ns/client/sa/client", x509.ExtKeyUsageClientAuth)},
			RootCAs:      roots,
			ServerName:   "hbone.test",
			MinVersion:   tls.VersionTLS13,
		},
	}
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// checkLeaks fails the test if goroutines started during it are still running at the end. Register it
// first so that its cleanup runs last.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		var n int
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if n = runtime.NumGoroutine(); n <= before {
				return
			}
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, hboneStacks(string(buf)))
	})
}

// hboneStacks keeps the goroutine dumps that mention this package.
func hboneStacks(all string) string {
	var keep []string
	for g := range strings.SplitSeq(all, "\n\n") {
		if strings.Contains(g, "hbone") && !strings.Contains(g, "checkLeaks") {
			keep = append(keep, g)
		}
	}
	return strings.Join(keep, "\n\n")
}

// testLogger returns a debug logger that writes to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// startServerB is startServer for benchmarks.
func startServerB(b *testing.B, srv *Server) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// startServer serves srv on a loopback listener and shuts it down at cleanup.
func startServer(t *testing.T, srv *Server) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

// tcpPair returns both ends of a loopback TCP connection, closed at cleanup.
func tcpPair(t *testing.T) (*net.TCPConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	rcv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rcv.Close() })
	return dst.(*net.TCPConn), rcv
}

// testPool returns a pool dialing loopback with pki's client config; dials counts the dials.
func testPool(t *testing.T, pki *testPKI, cfg PoolConfig) (*Pool, *atomic.Int32) {
	t.Helper()
	var dials atomic.Int32
	if cfg.Dial == nil {
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}
	cfg.TLSConfig = func(ctx context.Context, k Key) (*tls.Config, error) { return pki.client, nil }
	p := NewPool(cfg)
	t.Cleanup(func() { p.Close() })
	return p, &dials
}

func testKey(dst netip.AddrPort) Key {
	return Key{
		SrcIdentity:   "spiffe://test/ns/client/sa/client",
		DstIdentities: "spiffe://test/ns/server/sa/server",
		Dst:           dst,
		SrcIP:         netip.MustParseAddr("127.0.0.1"),
	}
}

// echoHandler accepts and echoes until EOF, then half-closes and closes.
var echoHandler = HandlerFunc(func(ctx context.Context, r *Request) {
	s, err := r.Accept(nil)
	if err != nil {
		return
	}
	defer s.Close()
	if _, err := io.Copy(s, s); err != nil {
		return
	}
	_ = s.CloseWrite()
	// Wait for the client to finish with the stream (its Close or CloseWrite ends it).
	_, _ = io.Copy(io.Discard, s)
})

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it is true or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func netipMust(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

var discardLogger = slog.New(slog.DiscardHandler)
