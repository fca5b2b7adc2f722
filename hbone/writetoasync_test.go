package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// A WriteToAsync parked on an idle stream holds no goroutine; Close ends it with net.ErrClosed.
func TestWriteToAsyncIdleThenClose(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	release := make(chan struct{})
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		s.Write([]byte("hi"))
		<-release
		io.Copy(io.Discard, s)
	})}
	addr := startServer(t, srv)
	defer close(release)
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 10*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	dst, rcv := tcpPair(t)

	before := runtime.NumGoroutine()
	type result struct {
		n   int64
		err error
	}
	res := make(chan result, 2)
	s.WriteToAsync(newSocketSink(dst), func(n int64, err error) { res <- result{n, err} })
	var buf [2]byte
	rcv.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(rcv, buf[:]); err != nil || string(buf[:]) != "hi" {
		t.Fatalf("receiver got %q, %v; want \"hi\"", buf[:], err)
	}
	// Parked: the drain goroutine exits (the count goes back to what it was).
	waitFor(t, "drain goroutine to exit", 5*time.Second, func() bool { return runtime.NumGoroutine() <= before })

	s.Close()
	select {
	case r := <-res:
		if r.n != 2 || !errors.Is(r.err, net.ErrClosed) {
			t.Errorf("done(%d, %v), want done(2, net.ErrClosed)", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end WriteToAsync")
	}
	time.Sleep(10 * time.Millisecond)
	if len(res) != 0 {
		t.Error("done called twice")
	}
}
