package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/hbone"
)

// The fast paths are offered by *hbone.Stream.
var _ tunnel = (*hbone.Stream)(nil)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (*net.TCPConn, *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// newRelay returns a Relay parking after idle (never if negative), closed at the end of the test.
func newRelay(tb testing.TB, idle time.Duration) *Relay {
	tb.Helper()
	r, err := New(Config{IdleAfter: idle})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.Close)
	return r
}

// runSync is Run waited for.
func runSync(r *Relay, ctx context.Context, down, up net.Conn) Result {
	done := make(chan Result, 1)
	r.Run(ctx, down, up, func(res Result) { done <- res })
	return <-done
}

// runAsync starts Run and returns a channel for its result.
func runAsync(r *Relay, ctx context.Context, down, up net.Conn) <-chan Result {
	done := make(chan Result, 1)
	r.Run(ctx, down, up, func(res Result) { done <- res })
	return done
}

// waitResult waits for a relay's result.
func waitResult(tb testing.TB, ch <-chan Result) Result {
	tb.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		tb.Fatal("the relay did not end")
	}
	return Result{}
}

// mesh is two proxies joined by HBONE, relaying with r: proxy A accepts TCP and opens a CONNECT
// stream per connection to proxy B, which dials the application. Every relay result goes to
// ended, in the order they end.
type mesh struct {
	r      *Relay
	target string // proxy A's address
	pool   *hbone.Pool
	srv    *hbone.Server

	mu    sync.Mutex
	ended []meshResult
}

type meshResult struct {
	proxy string // "A" (client side) or "B" (server side)
	res   Result
}

// startMesh starts the two proxies in front of the application at appAddr.
func startMesh(tb testing.TB, ctx context.Context, r *Relay, appAddr string) *mesh {
	tb.Helper()
	m := &mesh{r: r}
	cert := selfSignedCert(tb)
	m.srv = &hbone.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert},
		Handler: hbone.HandlerFunc(func(_ context.Context, req *hbone.Request) {
			var d net.Dialer
			up, err := d.DialContext(ctx, "tcp", appAddr)
			if err != nil {
				req.Reject(503, err.Error())
				return
			}
			st, err := req.Accept(nil)
			if err != nil {
				up.Close()
				return
			}
			r.Run(ctx, st, up, func(res Result) { m.record("B", res) })
		}),
	}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go m.srv.Serve(bln)

	m.pool = hbone.NewPool(hbone.PoolConfig{
		MaxStreamsPerConn: 100,
		SpreadConns:       1, // one connection per 100 streams: the per-connection figures stay exact
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSConfig: func(context.Context, hbone.Key) (*tls.Config, error) {
			return &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}, nil
		},
	})
	key := hbone.Key{Dst: netip.MustParseAddrPort(bln.Addr().String()), SrcIP: netip.MustParseAddr("127.0.0.1")}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	m.target = aln.Addr().String()
	go func() {
		for {
			c, err := aln.Accept()
			if err != nil {
				return
			}
			go func() {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				st, err := m.pool.Connect(cctx, key, appAddr, nil)
				cancel()
				if err != nil {
					ResetClose(c)
					return
				}
				r.Run(ctx, c, st, func(res Result) { m.record("A", res) })
			}()
		}
	}()
	tb.Cleanup(func() {
		aln.Close()
		m.pool.Close()
		m.srv.Close()
	})
	return m
}

func (m *mesh) record(proxy string, res Result) {
	m.mu.Lock()
	m.ended = append(m.ended, meshResult{proxy, res})
	m.mu.Unlock()
}

// waitEnded waits until n relays have ended and returns their results.
func (m *mesh) waitEnded(tb testing.TB, n int) []meshResult {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		got := append([]meshResult(nil), m.ended...)
		m.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d relays ended, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// appListener accepts connections for the application and hands them over on a channel.
func appListener(tb testing.TB) (string, <-chan *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	ch := make(chan *net.TCPConn, 1000)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tb.Cleanup(func() { c.Close() })
			ch <- c.(*net.TCPConn)
		}
	}()
	return ln.Addr().String(), ch
}

// selfSignedCert is a throwaway ECDSA certificate for both proxies.
func selfSignedCert(tb testing.TB) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// prefixLen is the length of the common prefix of a and b.
func prefixLen(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
