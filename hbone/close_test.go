package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// stuckPeers is a TLS HTTP/2 server that answers every CONNECT with 200, grants huge windows, and
// then stops reading the connection, with a small receive buffer so that it fills quickly.
type stuckPeers struct {
	t       *testing.T
	ln      net.Listener
	release chan struct{} // closed at cleanup: the peers close their sockets
	wg      sync.WaitGroup
	mu      sync.Mutex
	raws    []net.Conn
}

func newStuckPeers(t *testing.T, pki *testPKI) *stuckPeers {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sp := &stuckPeers{t: t, ln: ln, release: make(chan struct{})}
	sp.wg.Add(1)
	go func() {
		defer sp.wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			_ = raw.(*net.TCPConn).SetReadBuffer(4 << 10)
			sp.mu.Lock()
			sp.raws = append(sp.raws, raw)
			sp.mu.Unlock()
			sp.wg.Add(1)
			go func() {
				defer sp.wg.Done()
				sp.serve(raw, pki)
			}()
		}
	}()
	t.Cleanup(sp.close)
	return sp
}

// serve answers one CONNECT, then reads nothing more until released.
func (sp *stuckPeers) serve(raw net.Conn, pki *testPKI) {
	defer raw.Close()
	cfg := pki.server.Clone()
	cfg.NextProtos = []string{"h2"}
	tc := tls.Server(raw, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if tc.Handshake() != nil {
		return
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(tc, preface); err != nil {
		return
	}
	p := newRawPeer(sp.t, tc)
	fr := p.fr
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	fr.WriteWindowUpdate(0, 1<<30)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, EndHeaders: true,
				BlockFragment: p.block(":status", "200")})
			break
		}
	}
	_ = tc.SetDeadline(time.Time{})
	<-sp.release
}

func (sp *stuckPeers) addr() string { return sp.ln.Addr().String() }

// close releases the peers and resets their sockets, which also unblocks anything still writing to
// them, so that a failing test ends quickly.
func (sp *stuckPeers) close() {
	sp.ln.Close()
	select {
	case <-sp.release:
	default:
		close(sp.release)
	}
	sp.mu.Lock()
	for _, raw := range sp.raws {
		_ = raw.(*net.TCPConn).SetLinger(0)
		raw.Close()
	}
	sp.mu.Unlock()
	sp.wg.Wait()
}

// fillStreams writes to every stream from its own goroutine until the writes stop making progress
// (the peers' receive buffers and our send buffers are full), and returns the writers' WaitGroup:
// they end once their stream fails.
func fillStreams(t *testing.T, streams []*Stream) *sync.WaitGroup {
	t.Helper()
	var written atomic.Int64
	var wg sync.WaitGroup
	// Small writes: each goes out in a batch of its own, so the writes that block are the batch
	// writes under the TLS layer, which a close_notify alert then queues behind.
	chunk := make([]byte, 1000)
	for _, s := range streams {
		wg.Go(func() {
			for {
				n, err := s.Write(chunk)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
	}
	last, still := int64(-1), 0
	for deadline := time.Now().Add(20 * time.Second); still < 6; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("writes kept making progress: %d bytes", written.Load())
		}
		if n := written.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	t.Logf("%d streams blocked after %d bytes", len(streams), last)
	return &wg
}

// TestPoolCloseStuckPeers: closing a pool whose 100 connections go to peers that stopped reading
// (their receive buffers full) returns well under a second: each close gives up on its close_notify
// after a short grace, and the connections close in parallel.
func TestPoolCloseStuckPeers(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	peers := newStuckPeers(t, pki)
	pool, _ := testPool(t, pki, PoolConfig{
		MaxStreamsPerConn: 1,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialTCP(ctx, network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetWriteBuffer(4 << 10)
			}
			return c, err
		},
	})
	const n = 100
	k := testKey(netipMust(peers.addr()))
	streams := make([]*Stream, n)
	for i := range streams {
		s, err := pool.Connect(ctxTimeout(t, 5*time.Second), k, "10.0.0.1:80", nil)
		if err != nil {
			t.Fatalf("Connect %d: %v", i, err)
		}
		streams[i] = s
	}
	if got := pool.NumConns(); got != n {
		t.Fatalf("NumConns = %d, want %d", got, n)
	}
	writers := fillStreams(t, streams)

	start := time.Now()
	closed := make(chan struct{})
	go func() {
		pool.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Errorf("Pool.Close still blocked after 3s")
		peers.close() // reset the peers' sockets: the blocked writes fail, Close can finish
		<-closed
	}
	if d := time.Since(start); d >= time.Second {
		t.Errorf("Pool.Close took %v with %d stuck peers, want < 1s", d, n)
	} else {
		t.Logf("Pool.Close took %v with %d stuck peers", d, n)
	}
	for _, s := range streams {
		s.Close()
	}
	writers.Wait()
}

// TestServerCloseStuckClients: Server.Close returns well under a second when its clients stopped
// reading while handlers were writing to them.
func TestServerCloseStuckClients(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	var written atomic.Int64
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		chunk := make([]byte, 1000)
		for {
			n, err := s.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(smallSendBufListener{ln}) }()
	const n = 50
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range n {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = raw.(*net.TCPConn).SetReadBuffer(4 << 10)
		clients = append(clients, raw)
		cfg := pki.client.Clone()
		cfg.NextProtos = []string{"h2"}
		tc := tls.Client(raw, cfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		p := newRawPeer(t, tc)
		p.clientHandshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
		p.fr.WriteWindowUpdate(0, 1<<30)
		p.writeHeaders(1, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
		// Read nothing: the server's writes fill our receive buffer.
	}
	last, still := int64(-1), 0
	for deadline := time.Now().Add(20 * time.Second); still < 6; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("writes kept making progress: %d bytes", written.Load())
		}
		if w := written.Load(); w == last && w > 0 {
			still++
		} else {
			last, still = w, 0
		}
	}
	t.Logf("%d handlers blocked after %d bytes", n, last)
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Errorf("Server.Close still blocked after 3s")
		for _, c := range clients {
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		<-closed
	}
	if d := time.Since(start); d >= time.Second {
		t.Errorf("Server.Close took %v with %d stuck clients, want < 1s", d, n)
	}
	if err := <-served; err != ErrServerClosed {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
}

// smallSendBufListener gives its connections a small send buffer, so that a peer that stops reading
// blocks their writes soon.
type smallSendBufListener struct{ net.Listener }

func (l smallSendBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		_ = c.(*net.TCPConn).SetWriteBuffer(4 << 10)
	}
	return c, err
}
