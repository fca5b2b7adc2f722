package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http2"
)

// refusals counts OnRefused calls by reason.
type refusals struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusals) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = make(map[string]int)
	}
	r.n[reason]++
}

func (r *refusals) get() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.n)
}

func (r *refusals) total() int {
	n := 0
	for _, v := range r.get() {
		n += v
	}
	return n
}

// dialFrom dials addr from the loopback address src (any 127.0.0.0/8 address is local on Linux).
func dialFrom(ctx context.Context, src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.DialContext(ctx, "tcp", addr)
}

// silentConns opens n TCP connections to addr from src that never send a byte. It returns those
// that connected, and how many were reset while connecting (the server refused them so fast).
func silentConns(t *testing.T, src string, addr netip.AddrPort, n int) ([]net.Conn, int) {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	reset := 0
	for i := range n {
		c, err := dialFrom(context.Background(), src, addr.String())
		if errors.Is(err, syscall.ECONNRESET) {
			reset++
			continue
		}
		if err != nil {
			t.Fatalf("silent connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	return conns, reset
}

// heldOpen reports how many of conns the server still holds open, and how many it reset. A
// connection it closed without a reset counts in neither.
func heldOpen(t *testing.T, conns []net.Conn) (held, reset int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(300 * time.Millisecond)
	for _, c := range conns {
		// Each read in its own goroutine: once a deadline has passed, Read reports it without
		// looking at the socket.
		wg.Go(func() {
			c.SetReadDeadline(deadline)
			_, err := c.Read(make([]byte, 1))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				held++
			case errors.Is(err, syscall.ECONNRESET):
				reset++
			}
		})
	}
	wg.Wait()
	return held, reset
}

// poolFrom returns a pool whose connections come from the loopback address src.
func poolFrom(t *testing.T, pki *testPKI, src string) *Pool {
	pool, _ := testPool(t, pki, PoolConfig{Dial: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return dialFrom(ctx, src, addr)
	}})
	return pool
}

// echoOnce opens a tunnel through pool and checks that it echoes.
func echoOnce(t *testing.T, pool *Pool, addr netip.AddrPort, msg string) {
	t.Helper()
	s, err := pool.Connect(ctxTimeout(t, 3*time.Second), testKey(addr), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("%s: Connect: %v", msg, err)
	}
	defer s.Close()
	checkEcho(t, s, msg)
}

func checkEcho(t *testing.T, s *Stream, msg string) {
	t.Helper()
	s.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatalf("%s: Write: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != msg {
		t.Fatalf("%s: echo = %q, %v", msg, buf, err)
	}
}

// TestHandshakeFloodPerSource: silent connections from one source beyond MaxPerSource are reset at
// once and counted; the server holds only MaxPerSource of them; an established tunnel keeps working
// and a client from another source completes its handshake meanwhile.
func TestHandshakeFloodPerSource(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	var refused refusals
	lim := &HandshakeLimiter{MaxTotal: 1000, MaxPerSource: 50}
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler, HandshakeTimeout: time.Minute,
		Handshakes: lim, OnRefused: refused.add})
	pool := poolFrom(t, pki, "127.0.0.2")
	established, err := pool.Connect(ctxTimeout(t, 3*time.Second), testKey(addr), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()

	const flood = 300
	silent, reset := silentConns(t, "127.0.0.1", addr, flood)
	waitFor(t, "the flood to be accepted", 5*time.Second, func() bool { return refused.total() >= flood-50 })
	held, r := heldOpen(t, silent)
	reset += r
	if held != 50 || reset != flood-50 {
		t.Errorf("of %d silent connections from one source the server holds %d and reset %d, want 50 and %d",
			flood, held, reset, flood-50)
	}
	if diff := cmp.Diff(map[string]int{RefusedHandshakesPerSource: flood - 50}, refused.get()); diff != "" {
		t.Errorf("OnRefused reasons (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(HandshakeStats{InHandshake: 50, RefusedPerSource: flood - 50}, lim.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}

	checkEcho(t, established, "established tunnel during the flood")
	start := time.Now()
	echoOnce(t, poolFrom(t, pki, "127.0.0.3"), addr, "new client from another source during the flood")
	if d := time.Since(start); d > time.Second {
		t.Errorf("a legitimate handshake took %v during the flood", d)
	}

	for _, c := range silent {
		c.Close()
	}
	waitFor(t, "the slots to be released", 5*time.Second, func() bool { return lim.Stats().InHandshake == 0 })
	echoOnce(t, poolFrom(t, pki, "127.0.0.1"), addr, "the flooding source after its connections closed")
}

// TestHandshakeLimiterAcrossServers: one limiter caps the connections in their handshake across
// every server it is set on; over MaxTotal every source is refused, until handshakes end.
func TestHandshakeLimiterAcrossServers(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	lim := &HandshakeLimiter{MaxTotal: 40, MaxPerSource: -1}
	var refusedA, refusedB refusals
	addrA := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler, HandshakeTimeout: time.Minute,
		Handshakes: lim, OnRefused: refusedA.add})
	addrB := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler, HandshakeTimeout: time.Minute,
		Handshakes: lim, OnRefused: refusedB.add})

	silentA, _ := silentConns(t, "127.0.0.1", addrA, 30)
	waitFor(t, "server A's handshakes", 5*time.Second, func() bool { return lim.Stats().InHandshake == 30 })
	silentB, resetB := silentConns(t, "127.0.0.4", addrB, 30)
	waitFor(t, "server B's refusals", 5*time.Second, func() bool { return refusedB.total() == 20 })
	heldA, _ := heldOpen(t, silentA)
	heldB, r := heldOpen(t, silentB)
	resetB += r
	if heldA != 30 || heldB != 10 || resetB != 20 {
		t.Errorf("held %d on A and %d on B (%d reset), want 30, 10 (20)", heldA, heldB, resetB)
	}
	if diff := cmp.Diff(map[string]int{RefusedHandshakes: 20}, refusedB.get()); diff != "" {
		t.Errorf("server B's OnRefused reasons (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(HandshakeStats{InHandshake: 40, RefusedTotal: 20}, lim.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	// Full: a client from a new source is refused on either server.
	pool := poolFrom(t, pki, "127.0.0.5")
	if _, err := pool.Connect(ctxTimeout(t, 3*time.Second), testKey(addrA), "10.0.0.1:80", nil); err == nil {
		t.Errorf("Connect succeeded while the shared cap was full")
	}
	if got := refusedA.get()[RefusedHandshakes]; got != 1 {
		t.Errorf("server A refused %d connections, want 1", got)
	}
	for _, c := range silentA {
		c.Close()
	}
	waitFor(t, "server A's slots to be released", 5*time.Second, func() bool { return lim.Stats().InHandshake == 10 })
	echoOnce(t, pool, addrB, "server B once slots are free")
}

// TestHandshakeTimeout: a client that stops part-way through its TLS ClientHello, after the TLS
// handshake, or after the HTTP/2 preface without its SETTINGS frame is closed HandshakeTimeout after
// it was accepted, and its slot is released.
func TestHandshakeTimeout(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	const timeout = 2 * time.Second
	lim := &HandshakeLimiter{}
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler, HandshakeTimeout: timeout, Handshakes: lim})
	// A ClientHello record that announces 512 bytes and stops after 6 of them.
	halfHello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	cases := []struct {
		name  string
		delay time.Duration // before the TLS handshake: the deadline counts from the accept
		tls   bool
		send  []byte // after the handshake (if tls), else raw
	}{
		{name: "half a ClientHello", send: halfHello},
		{name: "TLS handshake then nothing", delay: time.Second, tls: true},
		{name: "half the preface", delay: time.Second, tls: true, send: []byte(http2.ClientPreface[:10])},
		{name: "preface without SETTINGS", delay: time.Second, tls: true, send: []byte(http2.ClientPreface)},
	}
	t.Cleanup(func() {
		waitFor(t, "the slots to be released", time.Second, func() bool { return lim.Stats().InHandshake == 0 })
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			raw, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			c := raw
			if tc.tls {
				time.Sleep(tc.delay)
				cfg := pki.client.Clone()
				cfg.NextProtos = []string{"h2"}
				tlsc := tls.Client(raw, cfg)
				if err := tlsc.Handshake(); err != nil {
					t.Fatalf("TLS handshake: %v", err)
				}
				c = tlsc
			}
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.Copy(io.Discard, c) // the server's SETTINGS, if any, then the close
			d := time.Since(start)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("still open after %v", d)
			}
			if d < timeout-100*time.Millisecond || d > timeout+700*time.Millisecond {
				t.Errorf("closed after %v, want about %v after the accept", d, timeout)
			}
		})
	}
}

// TestCloseAbortsHandshakes: Server.Close closes the connections still in their handshake at once,
// rather than leaving them to HandshakeTimeout, and Shutdown does not wait for them either.
func TestCloseAbortsHandshakes(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	for _, shutdown := range []bool{false, true} {
		lim := &HandshakeLimiter{}
		srv := &Server{TLSConfig: pki.server, Handler: echoHandler, HandshakeTimeout: time.Minute, Handshakes: lim}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		silent, _ := silentConns(t, "127.0.0.1", netip.MustParseAddrPort(ln.Addr().String()), 20)
		waitFor(t, "the handshakes", 5*time.Second, func() bool { return lim.Stats().InHandshake == 20 })
		start := time.Now()
		if shutdown {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			cancel()
		} else {
			srv.Close()
		}
		if err := <-served; err != ErrServerClosed {
			t.Errorf("Serve = %v", err)
		}
		for i, c := range silent {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("shutdown=%v: connection %d still open after %v", shutdown, i, time.Since(start))
			}
		}
		waitFor(t, "the slots to be released", time.Second, func() bool { return lim.Stats().InHandshake == 0 })
	}
}

// TestResetConnUnwraps: resetConn finds the TCP socket under wrappers with a NetConn method and resets
// it (the peer reads ECONNRESET, not EOF).
func TestResetConnUnwraps(t *testing.T) {
	a, b := tcpPair(t)
	resetConn(tls.Server(a, &tls.Config{}))
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer read %v, want ECONNRESET", err)
	}
}
