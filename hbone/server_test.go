package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func TestRejectStatuses(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		code := map[string]int{"10.0.0.1:400": 400, "10.0.0.1:401": 401, "10.0.0.1:503": 503}[r.Authority]
		if err := r.Reject(code, "test"); err != nil {
			t.Errorf("Reject: %v", err)
		}
		if _, err := r.Accept(nil); !errors.Is(err, errAlreadyAnswered) {
			t.Errorf("Accept after Reject = %v", err)
		}
	})}
	addr := startServer(t, srv)
	pool, dials := testPool(t, pki, PoolConfig{})
	for _, code := range []int{400, 401, 503} {
		_, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.1:"+strconv.Itoa(code), nil)
		var se *StatusError
		if !errors.As(err, &se) || se.Code != code {
			t.Errorf("Connect = %v, want StatusError %d", err, code)
		}
	}
	if dials.Load() != 1 {
		t.Errorf("dials = %d: rejects should not break the connection", dials.Load())
	}
	// The rejected streams are freed on both sides.
	waitFor(t, "streams freed", time.Second, func() bool {
		pool.mu.Lock()
		defer pool.mu.Unlock()
		for c := range pool.all {
			c.mu.Lock()
			n := len(c.streams)
			c.mu.Unlock()
			if n != 0 {
				return false
			}
		}
		return true
	})
}

func TestHandlerWithoutAnswerGets503(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {})})
	pool, _ := testPool(t, pki, PoolConfig{})
	_, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.1:80", nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 503 {
		t.Errorf("Connect = %v, want StatusError 503", err)
	}
}

func TestPlaintextClientRefused(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	var called atomic.Bool
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		called.Store(true)
		r.Reject(500, "must not happen")
	})})
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fr := http2.NewFramer(c, c)
	io.WriteString(c, http2.ClientPreface)
	fr.WriteSettings()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)                                // the server answers with a TLS alert at most, then closes
	if err != nil && !errors.Is(err, syscall.ECONNRESET) { // closing with our bytes unread is a reset
		t.Fatalf("read: %v (want the server to close the conn)", err)
	}
	if len(b) > 0 && b[0] != 0x15 { // 0x15: TLS alert record
		t.Errorf("server sent %q, want nothing or a TLS alert", b)
	}
	if called.Load() {
		t.Error("handler called for a plaintext connection")
	}
}

// TestShutdownGoAway: after Server.Shutdown the pool stops using the old connection (GOAWAY) and dials a
// new one for the next Connect, while the existing tunnel keeps working until it ends.
func TestShutdownGoAway(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	srv1 := &Server{TLSConfig: pki.server, Handler: echoHandler}
	addr1 := startServer(t, srv1)
	srv2 := &Server{TLSConfig: pki.server, Handler: echoHandler}
	addr2 := startServer(t, srv2)
	var target atomic.Value
	target.Store(addr1.String())
	var dials atomic.Int32
	pool, _ := testPool(t, pki, PoolConfig{Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, target.Load().(string))
	}})
	k := testKey(addr1)
	old, err := pool.Connect(ctxTimeout(t, 5*time.Second), k, "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	target.Store(addr2.String())
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- srv1.Shutdown(ctxTimeout(t, 5*time.Second)) }()
	waitFor(t, "GOAWAY to remove the conn from the pool", 2*time.Second, func() bool { return pool.NumConns() == 0 })

	fresh, err := pool.Connect(ctxTimeout(t, 5*time.Second), k, "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("Connect after GOAWAY: %v", err)
	}
	defer fresh.Close()
	if dials.Load() != 2 || fresh.c == old.c {
		t.Errorf("dials = %d; want a second connection after GOAWAY", dials.Load())
	}
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned %v while a stream is open", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The old tunnel still works.
	old.Write([]byte("still here"))
	old.CloseWrite()
	if got, err := io.ReadAll(old); err != nil || string(got) != "still here" {
		t.Errorf("old stream echo = %q, %v", got, err)
	}
	old.Close()
	if err := <-shutdownDone; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	waitFor(t, "old conn closed", 2*time.Second, func() bool {
		select {
		case <-old.c.done:
			return true
		default:
			return false
		}
	})
}

// TestShutdownTimeout: Shutdown gives up when ctx ends, closes the conns, and handlers see ctx done.
func TestShutdownTimeout(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	handlerCtxDone := make(chan struct{})
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		<-ctx.Done()
		close(handlerCtxDone)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(netip.MustParseAddrPort(ln.Addr().String())), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := srv.Shutdown(ctxTimeout(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	<-handlerCtxDone
	if err := <-serveDone; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve = %v", err)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("client Read = %v, want net.ErrClosed", err)
	}
}
