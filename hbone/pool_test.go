package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoolReuse(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler})
	pool, dials := testPool(t, pki, PoolConfig{})
	for i := range 2 {
		s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
		if err != nil {
			t.Fatalf("Connect %d: %v", i, err)
		}
		s.Write([]byte("x"))
		s.CloseWrite()
		io.ReadAll(s)
		s.Close()
	}
	if n := pool.NumConns(); n != 1 {
		t.Errorf("NumConns = %d, want 1", n)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("dials = %d, want 1", n)
	}
	// A different key gets its own connection.
	k := testKey(addr)
	k.SrcIdentity = "spiffe://test/ns/other/sa/other"
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), k, "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if n := dials.Load(); n != 2 {
		t.Errorf("dials after a second key = %d, want 2", n)
	}
}

func TestPoolMaxStreamsPerConn(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler})
	pool, dials := testPool(t, pki, PoolConfig{MaxStreamsPerConn: 2})
	var streams []*Stream
	for range 3 {
		s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		streams = append(streams, s)
	}
	if n := pool.NumConns(); n != 2 {
		t.Errorf("NumConns = %d, want 2", n)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("dials = %d, want 2", n)
	}
	if streams[0].c != streams[1].c || streams[2].c == streams[0].c {
		t.Errorf("streams 1,2 should share a connection and 3 use another")
	}
	// Every tunnel works.
	for i, s := range streams {
		msg := []byte{'a' + byte(i)}
		s.Write(msg)
		s.CloseWrite()
		if got, err := io.ReadAll(s); err != nil || string(got) != string(msg) {
			t.Errorf("stream %d echo = %q, %v", i, got, err)
		}
	}
}

// TestPoolPacksAfterBurst: after a burst that needed extra connections, new streams go to the
// first connection with room rather than spread over all of them, so the extra ones go idle and
// close.
func TestPoolPacksAfterBurst(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler})
	pool, dials := testPool(t, pki, PoolConfig{MaxStreamsPerConn: 2, IdleTimeout: 300 * time.Millisecond})
	connect := func() *Stream {
		t.Helper()
		s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var burst []*Stream
	for range 6 {
		burst = append(burst, connect())
	}
	if n := dials.Load(); n != 3 {
		t.Fatalf("dials for 6 streams at 2 per connection = %d, want 3", n)
	}
	first := burst[0].c
	for _, s := range burst {
		s.Close()
	}
	// The burst is over: every new stream (two at a time, the limit) goes to the first
	// connection, again and again, while the other two stay unused until they time out.
	for range 10 {
		a, b := connect(), connect()
		if a.c != first || b.c != first {
			t.Fatalf("a new stream went to a later connection, not the first with room")
		}
		a.Close()
		b.Close()
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "the unused connections to close", 5*time.Second, func() bool { return pool.NumConns() == 1 })
	if n := dials.Load(); n != 3 {
		t.Errorf("dials = %d, want still 3", n)
	}
}

// TestPoolPeerMaxConcurrentStreams checks that the server's SETTINGS_MAX_CONCURRENT_STREAMS caps a conn.
func TestPoolPeerMaxConcurrentStreams(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler, MaxConcurrentStreams: 1})
	pool, dials := testPool(t, pki, PoolConfig{})
	s1, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n := dials.Load(); n != 2 {
		t.Errorf("dials = %d, want 2 (peer allows 1 stream per conn)", n)
	}
}

func TestPoolConcurrentConnectsDialOnce(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler})
	var dials atomic.Int32
	pool, _ := testPool(t, pki, PoolConfig{SpreadConns: 1, Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
		dials.Add(1)
		time.Sleep(100 * time.Millisecond) // keep the dial in flight while the others arrive
		var d net.Dialer
		return d.DialContext(ctx, network, a)
	}})
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
			if err != nil {
				t.Errorf("Connect: %v", err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Errorf("dials = %d, want 1", n)
	}
}

func TestPoolDialErrorShared(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	var dials atomic.Int32
	boom := errors.New("boom")
	pool, _ := testPool(t, pki, PoolConfig{Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
		dials.Add(1)
		if k, ok := KeyFromContext(ctx); !ok || k.SrcIP.String() != "127.0.0.1" {
			t.Errorf("KeyFromContext = %v, %v", k, ok)
		}
		time.Sleep(50 * time.Millisecond)
		return nil, boom
	}})
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			_, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(netipMust("127.0.0.1:1")), "10.0.0.5:80", nil)
			if !errors.Is(err, boom) {
				t.Errorf("Connect = %v, want boom", err)
			}
		})
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Errorf("dials = %d, want 1 (waiters share the failure)", n)
	}
}

func TestPoolIdleTimeout(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	srv := &Server{TLSConfig: pki.server, Handler: echoHandler}
	addr := startServer(t, srv)
	pool, _ := testPool(t, pki, PoolConfig{IdleTimeout: 150 * time.Millisecond})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Not idle while a stream is open, however long.
	time.Sleep(300 * time.Millisecond)
	if n := pool.NumConns(); n != 1 {
		t.Fatalf("NumConns with an open stream = %d, want 1", n)
	}
	s.Close()
	waitFor(t, "idle conn to be removed", 2*time.Second, func() bool { return pool.NumConns() == 0 })
	waitFor(t, "server to see the conn close", 2*time.Second, func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) == 0
	})
}

func TestPoolClose(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler})
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after pool Close = %v, want net.ErrClosed", err)
	}
	var ce *ConnError
	if _, err := s.Write([]byte("x")); !errors.As(err, &ce) {
		t.Errorf("Write after pool Close = %v, want *ConnError", err)
	}
	if _, err := pool.Connect(ctxTimeout(t, time.Second), testKey(addr), "10.0.0.5:80", nil); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Connect after Close = %v", err)
	}
}

func TestConnectBadAuthority(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	pool, dials := testPool(t, pki, PoolConfig{})
	if _, err := pool.Connect(ctxTimeout(t, time.Second), testKey(netipMust("127.0.0.1:1")), "no port", nil); err == nil {
		t.Error("Connect with a bad authority succeeded")
	}
	if dials.Load() != 0 {
		t.Error("a bad authority caused a dial")
	}
}

// Streams that are open together spread over SpreadConns connections once each carries SpreadAt:
// 8 held streams with SpreadConns 2 and SpreadAt 4 make two connections of 4 streams each. A
// failing extra dial does not fail streams that fit on the existing connection.
func TestPoolSpreadsBusyStreams(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: echoHandler})
	var dials atomic.Int32
	var failDials atomic.Bool
	pool, _ := testPool(t, pki, PoolConfig{SpreadConns: 2, SpreadAt: 4, Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
		dials.Add(1)
		if failDials.Load() {
			return nil, errors.New("no more connections")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, a)
	}})
	var streams []*Stream
	defer func() {
		for _, s := range streams {
			s.Close()
		}
	}()
	for i := range 8 {
		s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
		if err != nil {
			t.Fatalf("Connect %d: %v", i, err)
		}
		streams = append(streams, s)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("dials = %d, want 2", n)
	}
	perConn := map[*conn]int{}
	for _, s := range streams {
		perConn[s.c]++
	}
	if len(perConn) != 2 {
		t.Fatalf("streams on %d connections, want 2", len(perConn))
	}
	for c, n := range perConn {
		if n != 4 {
			t.Errorf("connection %p carries %d streams, want 4", c, n)
		}
	}

	// A third key's worth of streams on a pool whose extra dials fail: all still connect, on one
	// connection, and only one extra dial is tried.
	failDials.Store(false)
	key := testKey(addr)
	key.SrcIP = netip.MustParseAddr("127.0.0.2")
	dials.Store(0)
	var more []*Stream
	for i := range 6 {
		if i == 1 {
			failDials.Store(true) // the first dial worked; spreading ones fail
		}
		s, err := pool.Connect(ctxTimeout(t, 5*time.Second), key, "10.0.0.5:80", nil)
		if err != nil {
			t.Fatalf("Connect %d with failing extra dials: %v", i, err)
		}
		more = append(more, s)
	}
	for _, s := range more {
		s.Close()
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("dials = %d, want 2 (one that worked, one failed spreading attempt)", n)
	}
}
