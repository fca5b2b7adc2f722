package hbone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConnectEcho(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	type seen struct {
		Authority, Forwarded, PeerURI string
	}
	got := make(chan seen, 1)
	srv := &Server{TLSConfig: pki.server, Config: Config{Logger: testLogger(t)},
		Handler: HandlerFunc(func(ctx context.Context, r *Request) {
			var uri string
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
				uri = r.TLS.PeerCertificates[0].URIs[0].String()
			}
			got <- seen{r.Authority, r.Header.Get(HeaderForwarded), uri}
			s, err := r.Accept(http.Header{"Baggage": {"k8s.namespace.name=server"}})
			if err != nil {
				t.Errorf("Accept: %v", err)
				return
			}
			defer s.Close()
			io.Copy(s, s)
			s.CloseWrite()
		})}
	addr := startServer(t, srv)
	pool, _ := testPool(t, pki, PoolConfig{})

	hdr := http.Header{}
	hdr.Set(HeaderForwarded, `for="127.0.0.1:1234"`)
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:8080", hdr)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer s.Close()
	if diff := cmp.Diff(seen{"10.0.0.5:8080", `for="127.0.0.1:1234"`, "spiffe://test/ns/client/sa/client"}, <-got); diff != "" {
		t.Errorf("request seen by the server (-want +got):\n%s", diff)
	}
	if got := s.ResponseHeader().Get(HeaderBaggage); got != "k8s.namespace.name=server" {
		t.Errorf("response baggage = %q", got)
	}
	if _, err := s.Write([]byte("hello hbone")); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if string(b) != "hello hbone" {
		t.Errorf("echo = %q", b)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, errWriteAfterCloseWrite) {
		t.Errorf("Write after CloseWrite = %v", err)
	}
	if s.LocalAddr() == nil || s.RemoteAddr().String() != addr.String() {
		t.Errorf("addrs: local %v remote %v, want remote %v", s.LocalAddr(), s.RemoteAddr(), addr)
	}
}

// pattern returns n deterministic bytes seeded by seed.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>11)
	}
	return b
}

// TestLargeTransferSmallWindows sends several MiB both ways at once with 64 KiB windows, so progress
// depends on WINDOW_UPDATEs in both directions.
func TestLargeTransferSmallWindows(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	small := Config{StreamWindow: 64 << 10, ConnWindow: 64 << 10, MaxFrameSize: 16 << 10}
	const n = 3<<20 + 12345
	up, down := pattern(1, n), pattern(2, n)
	serverGot := make(chan [32]byte, 1)
	srv := &Server{TLSConfig: pki.server, Config: small, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := s.Write(down); err != nil {
				t.Errorf("server Write: %v", err)
			}
			s.CloseWrite()
		})
		h := sha256.New()
		if _, err := io.Copy(h, s); err != nil {
			t.Errorf("server read: %v", err)
		}
		serverGot <- [32]byte(h.Sum(nil))
		wg.Wait()
	})}
	addr := startServer(t, srv)
	pool, _ := testPool(t, pki, PoolConfig{Config: small})
	// Two tunnels at once share the connection window.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			s, err := pool.Connect(ctxTimeout(t, 10*time.Second), testKey(addr), "10.0.0.5:80", nil)
			if err != nil {
				t.Errorf("Connect: %v", err)
				return
			}
			defer s.Close()
			s.SetDeadline(time.Now().Add(20 * time.Second))
			uploaded := make(chan struct{})
			defer func() { <-uploaded }() // before Close
			go func() {
				defer close(uploaded)
				// Uneven write sizes exercise frame splitting.
				for p := up; len(p) > 0; {
					k := min(len(p), 100_000)
					if _, err := s.Write(p[:k]); err != nil {
						t.Errorf("client Write: %v", err)
						return
					}
					p = p[k:]
				}
				s.CloseWrite()
			}()
			got, err := io.ReadAll(s)
			if err != nil {
				t.Errorf("client ReadAll: %v", err)
			}
			if !bytes.Equal(got, down) {
				t.Errorf("client got %d bytes, want %d (equal=%v)", len(got), len(down), bytes.Equal(got, down))
			}
		})
	}
	wg.Wait()
	for range 2 {
		if got := <-serverGot; got != sha256.Sum256(up) {
			t.Errorf("server received corrupted upload")
		}
	}
	if pool.NumConns() != 1 {
		t.Errorf("NumConns = %d, want 1", pool.NumConns())
	}
}

func TestHalfCloseClientToServer(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		req, err := io.ReadAll(s) // until the client's END_STREAM
		if err != nil {
			t.Errorf("server ReadAll: %v", err)
			return
		}
		// Keep sending after the client half-closed.
		for i := range 3 {
			time.Sleep(10 * time.Millisecond)
			if _, err := s.Write([]byte{'0' + byte(i)}); err != nil {
				t.Errorf("server Write after peer END_STREAM: %v", err)
				return
			}
		}
		s.Write(append([]byte(":"), req...))
		s.CloseWrite()
	})}
	addr := startServer(t, srv)
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write([]byte("request"))
	s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "012:request" {
		t.Errorf("ReadAll = %q, %v; want %q", got, err, "012:request")
	}
}

func TestHalfCloseServerToClient(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	serverGot := make(chan string, 1)
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		s.Write([]byte("banner"))
		s.CloseWrite()
		b, err := io.ReadAll(s)
		if err != nil {
			t.Errorf("server ReadAll: %v", err)
		}
		serverGot <- string(b)
	})}
	addr := startServer(t, srv)
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "banner" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	// The server's direction is done; ours keeps working.
	for _, part := range []string{"a", "b", "c"} {
		time.Sleep(10 * time.Millisecond)
		if _, err := s.Write([]byte(part)); err != nil {
			t.Fatalf("Write after peer END_STREAM: %v", err)
		}
	}
	s.CloseWrite()
	if got := <-serverGot; got != "abc" {
		t.Errorf("server got %q", got)
	}
}

func TestDeadlines(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	release := make(chan struct{})
	srv := &Server{TLSConfig: pki.server, Config: Config{StreamWindow: 65535},
		Handler: HandlerFunc(func(ctx context.Context, r *Request) {
			s, err := r.Accept(nil)
			if err != nil {
				return
			}
			defer s.Close()
			<-release // read nothing: the client's send window fills up
		})}
	addr := startServer(t, srv)
	defer close(release)
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read = %v, want deadline exceeded", err)
	}
	var ne net.Error
	s.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := s.Write(make([]byte, 1<<20))
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Write = %d, %v; want a timeout", n, err)
	}
	if n != 65535 {
		t.Errorf("Write wrote %d bytes before the timeout, want exactly the 65535-byte window", n)
	}
	// Clearing the deadline makes Read block again until Close unblocks it.
	s.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close = %v, want net.ErrClosed", err)
	}
}

// A stream the server resets, with Close (CANCEL) or Abort (CONNECT_ERROR), reads the data sent before
// the reset and then the reset as an error, never as EOF: a tunnel cut short must not look complete.
func TestStreamResetByServer(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(*Stream) error
		code ErrCode
	}{
		{"Close", (*Stream).Close, ErrCodeCancel},
		{"Abort", (*Stream).Abort, ErrCodeConnect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			pki := newTestPKI(t)
			srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
				s, err := r.Accept(nil)
				if err != nil {
					return
				}
				s.Write([]byte("partial"))
				tc.end(s) // neither side ended: RST_STREAM
				<-ctx.Done()
			})}
			addr := startServer(t, srv)
			pool, _ := testPool(t, pki, PoolConfig{})
			s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := io.ReadAll(s)
			var se *StreamError
			if string(got) != "partial" || !errors.As(err, &se) || se.Code != tc.code || !se.PeerReset() {
				t.Errorf("ReadAll = %q, %v; want \"partial\" then a %v reset by the peer", got, err, tc.code)
			}
			if _, err := s.Write([]byte("x")); !errors.As(err, &se) || se.Code != tc.code || !se.Remote {
				t.Errorf("Write after RST = %v, want remote %v StreamError", err, tc.code)
			}
		})
	}
}

// slowWriter accepts at most 1000 bytes per call and sleeps now and then, so WriteTo's
// credit-after-write path has to pace the sender.
type slowWriter struct {
	buf   bytes.Buffer
	calls int
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.calls++
	if w.calls%64 == 0 {
		time.Sleep(time.Millisecond)
	}
	return w.buf.Write(p)
}

func TestWriteTo(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	small := Config{StreamWindow: 64 << 10, ConnWindow: 128 << 10, MaxFrameSize: 16 << 10}
	payload := make([]byte, 3<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	srv := &Server{Config: small, TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		s.Write(payload)
		s.CloseWrite()
		io.Copy(io.Discard, s)
	})}
	addr := startServer(t, srv)
	pool, _ := testPool(t, pki, PoolConfig{Config: small})
	s, err := pool.Connect(ctxTimeout(t, 10*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var w slowWriter
	n, err := s.WriteTo(&w)
	if err != nil || n != int64(len(payload)) || !bytes.Equal(w.buf.Bytes(), payload) {
		t.Fatalf("WriteTo = %d, %v; got %d bytes, equal=%v", n, err, w.buf.Len(), bytes.Equal(w.buf.Bytes(), payload))
	}
	// After END_STREAM our direction still works, and WriteTo at EOF returns at once.
	if n, err := s.WriteTo(io.Discard); n != 0 || err != nil {
		t.Errorf("second WriteTo = %d, %v", n, err)
	}
	if _, err := s.Write([]byte("bye")); err != nil {
		t.Errorf("Write after the peer's END_STREAM: %v", err)
	}
	s.CloseWrite()
}

func TestWriteToDeadline(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	release := make(chan struct{})
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		<-release
	})}
	addr := startServer(t, srv)
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer close(release)
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	n, err := s.WriteTo(io.Discard)
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("WriteTo on an idle stream = %d, %v; want the deadline error", n, err)
	}
	if d := time.Since(start); d < 80*time.Millisecond || d > 2*time.Second {
		t.Errorf("WriteTo returned after %s, want about 100ms", d)
	}
}

// TestDeadlineSetWhileBlocked checks that a deadline set for the first time (the stream creates its
// deadline state lazily) still unblocks a Read and a Write that were already waiting without one.
func TestDeadlineSetWhileBlocked(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	release := make(chan struct{})
	srv := &Server{TLSConfig: pki.server, Config: Config{StreamWindow: 65535},
		Handler: HandlerFunc(func(ctx context.Context, r *Request) {
			s, err := r.Accept(nil)
			if err != nil {
				return
			}
			defer s.Close()
			<-release // read and write nothing
		})}
	addr := startServer(t, srv)
	defer close(release)
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	readDone := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		readDone <- err
	}()
	writeDone := make(chan error, 1)
	go func() {
		_, err := s.Write(make([]byte, 1<<20)) // blocks once the 65535-byte window is used up
		writeDone <- err
	}()
	time.Sleep(50 * time.Millisecond)
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	s.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	for name, ch := range map[string]chan error{"Read": readDone, "Write": writeDone} {
		select {
		case err := <-ch:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s = %v, want deadline exceeded", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked 5s after its deadline was set", name)
		}
	}
}
