package ztunnel

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
	"runtime"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/hbone"
)

// Memory held per idle proxied connection (issue 5): n client connections held open through
// proxy A (a loopback listener whose handler opens a pooled HBONE stream and splices, as
// handleOutbound does) and proxy B (an hbone.Server whose handler dials the application and
// splices, as serveHBONE does). The test's own ends (client sockets, accepted application
// sockets) are measured alone first and subtracted, so the figure is what the two proxies add.
//
// Run: go test ./ztunnel -run '^$' -bench IdleConnMemory -benchtime 1x

const idleMemConns = 1000

// BenchmarkIdleConnMemory reports the heap and stack bytes per idle connection per proxy.
func BenchmarkIdleConnMemory(b *testing.B) {
	for b.Loop() {
		ends := measureHeldConns(b, idleMemConns, false)
		mesh := measureHeldConns(b, idleMemConns, true)
		perProxy := float64(mesh.bytes-ends.bytes) / idleMemConns / 2
		b.ReportMetric(perProxy, "B/conn/proxy")
		b.ReportMetric(float64(mesh.goroutines-ends.goroutines)/idleMemConns/2, "goroutines/conn/proxy")
	}
}

// BenchmarkIdleConnMemoryParked is BenchmarkIdleConnMemory with spliceAsync and the idle poller,
// as the proxy runs: the figure is taken once every copy is parked.
func BenchmarkIdleConnMemoryParked(b *testing.B) {
	idle, err := newIdlePoller(100 * time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	defer idle.close()
	for b.Loop() {
		ends := measureHeldConnsWith(b, idleMemConns, false, nil)
		mesh := measureHeldConnsWith(b, idleMemConns, true, idle)
		b.ReportMetric(float64(mesh.bytes-ends.bytes)/idleMemConns/2, "B/conn/proxy")
		b.ReportMetric(float64(mesh.goroutines-ends.goroutines)/idleMemConns/2, "goroutines/conn/proxy")
	}
}

// TestIdleConnMemoryHarness checks that the harness really carries bytes both ways through
// both proxies, so the benchmark measures live tunnels.
func TestIdleConnMemoryHarness(t *testing.T) {
	measureHeldConns(t, 20, true)
}

type memSample struct {
	bytes      int64 // HeapInuse + StackInuse with the connections open, minus before
	goroutines int
}

// measureHeldConns opens n connections to an application listener, through the two proxies
// if mesh is set, checks each carries one byte both ways, and measures what they hold.
func measureHeldConns(tb testing.TB, n int, mesh bool) memSample {
	return measureHeldConnsWith(tb, n, mesh, nil)
}

// measureHeldConnsWith is measureHeldConns with the proxies parking idle copies in idle (if not
// nil); the connections are measured once all their copies are parked.
func measureHeldConnsWith(tb testing.TB, n int, mesh bool, idle *idlePoller) memSample {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)

	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer app.Close()
	appConns := make(chan net.Conn, n)
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			appConns <- c
		}
	}()
	target := app.Addr().String()
	var stop func()
	if mesh {
		target, stop = startIdleMeshWith(tb, ctx, target, idle, nil)
		defer stop()
	}

	before := memInUse()
	g0 := runtime.NumGoroutine()
	clients := make([]net.Conn, 0, n)
	servers := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		for _, c := range servers {
			c.Close()
		}
	}()
	var one [1]byte
	for range n {
		c, err := net.Dial("tcp", target)
		if err != nil {
			tb.Fatal(err)
		}
		clients = append(clients, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{'p'}); err != nil {
			tb.Fatal(err)
		}
		var s net.Conn
		select {
		case s = <-appConns:
		case <-time.After(10 * time.Second):
			tb.Fatal("application did not get the connection")
		}
		servers = append(servers, s)
		s.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.Read(one[:]); err != nil || one[0] != 'p' {
			tb.Fatalf("application read %q, %v", one[:], err)
		}
		if _, err := s.Write([]byte{'q'}); err != nil {
			tb.Fatal(err)
		}
		if _, err := c.Read(one[:]); err != nil || one[0] != 'q' {
			tb.Fatalf("client read %q, %v", one[:], err)
		}
	}
	if idle != nil && mesh {
		for deadline := time.Now().Add(30 * time.Second); idle.numParked() < 2*n; {
			if time.Now().After(deadline) {
				tb.Fatalf("%d of %d copies parked", idle.numParked(), 2*n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	after := memInUse()
	return memSample{bytes: after - before, goroutines: runtime.NumGoroutine() - g0}
}

// memInUse is HeapInuse+StackInuse after two collections (the second lets stacks shrink).
func memInUse() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// startIdleMeshWith starts proxy B (HBONE server → appAddr) and proxy A (TCP listener → HBONE
// pool → B) and returns A's address. Both splice through spliceAsync with the idle poller idle
// when it is not nil (else through splice), reporting each ended splice to ended (if not nil).
func startIdleMeshWith(tb testing.TB, ctx context.Context, appAddr string, idle *idlePoller, ended func(spliceResult)) (string, func()) {
	doSplice := func(ctx context.Context, down, up net.Conn, done func()) {
		if idle == nil {
			res := splice(ctx, down, up)
			if ended != nil {
				ended(res)
			}
			done()
			return
		}
		spliceAsync(ctx, down, up, idle, func(res spliceResult) {
			if ended != nil {
				ended(res)
			}
			done()
		})
	}
	cert := selfSignedCert(tb)
	var conns connTracker
	track := func() (context.Context, func()) {
		connCtx, cancel := context.WithCancelCause(ctx)
		tc := &trackedConn{cancel: cancel}
		untrack := conns.track(tc)
		conns.set(tc, ConnView{Direction: "outbound", Src: "x", Protocol: "HBONE"})
		return connCtx, func() { untrack(); cancel(nil) }
	}

	srv := &hbone.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert},
		Handler: hbone.HandlerFunc(func(_ context.Context, r *hbone.Request) {
			connCtx, done := track()
			var d net.Dialer
			up, err := d.DialContext(connCtx, "tcp", appAddr)
			if err != nil {
				r.Reject(503, err.Error())
				done()
				return
			}
			st, err := r.Accept(nil)
			if err != nil {
				up.Close()
				done()
				return
			}
			doSplice(connCtx, st, up, done)
		}),
	}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(bln)

	pool := hbone.NewPool(hbone.PoolConfig{
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
	go func() {
		for {
			c, err := aln.Accept()
			if err != nil {
				return
			}
			go func() {
				connCtx, done := track()
				cctx, cancel := context.WithTimeout(connCtx, 10*time.Second)
				st, err := pool.Connect(cctx, key, appAddr, nil)
				cancel()
				if err != nil {
					resetClose(c)
					done()
					return
				}
				doSplice(connCtx, c, st, done)
			}()
		}
	}()
	return aln.Addr().String(), func() {
		aln.Close()
		pool.Close()
		srv.Close()
	}
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
