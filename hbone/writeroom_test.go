package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// withRoom returns payload behind FrameHeaderRoom bytes of room, as WriteHeadroom wants it.
func withRoom(payload []byte) []byte {
	return append(make([]byte, FrameHeaderRoom), payload...)
}

// acceptOne is a handler that accepts the stream and hands it to the test, then waits for ctx.
func acceptOne(streams chan<- *Stream) Handler {
	return HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		streams <- s
		<-ctx.Done()
	})
}

// openRaw opens stream 1 from a raw client with the given settings and returns the server's Stream.
func openRaw(t *testing.T, settings ...http2.Setting) (*rawPeer, *Stream) {
	t.Helper()
	streams := make(chan *Stream, 1)
	p, _ := serveLoopback(t, &Server{Handler: acceptOne(streams)})
	p.clientHandshake(settings...)
	p.writeHeaders(1, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	if h, ok := p.next(true).(*http2.MetaHeadersFrame); !ok || h.PseudoValue("status") != "200" {
		t.Fatalf("want a 200 response")
	}
	return p, <-streams
}

// readDataFrames reads DATA frames from p until want bytes arrived (frames at most maxFrame long).
func readDataFrames(t *testing.T, p *rawPeer, want, maxFrame int) []byte {
	t.Helper()
	var got []byte
	for len(got) < want {
		d, ok := p.next(true).(*http2.DataFrame)
		if !ok {
			t.Fatalf("want DATA after %d of %d bytes", len(got), want)
		}
		if len(d.Data()) > maxFrame {
			t.Fatalf("DATA frame of %d bytes, larger than %d", len(d.Data()), maxFrame)
		}
		got = append(got, d.Data()...)
	}
	if len(got) != want {
		t.Fatalf("received %d bytes, want exactly %d", len(got), want)
	}
	return got
}

// TestWriteHeadroomFlowControl sends with WriteHeadroom to a peer with a small window and the
// smallest frame size: the frames are built in place (each header over the end of the previous
// payload), the write blocks until the window grows, and CloseWrite's END_STREAM comes after the data.
func TestWriteHeadroomFlowControl(t *testing.T) {
	checkLeaks(t)
	p, s := openRaw(t, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	payload := pattern(3, 100000)
	res := make(chan error, 1)
	go func() {
		n, err := s.WriteHeadroom(withRoom(payload))
		if err == nil && n != len(payload) {
			err = errors.New("short write")
		}
		if err == nil {
			err = s.CloseWrite()
		}
		res <- err
	}()
	got := readDataFrames(t, p, 1000, minFrameSize)
	p.fr.WritePing(false, [8]byte{1}) // a PING round trip proves nothing more was sent meanwhile
	if f, ok := p.next(false).(*http2.PingFrame); !ok || !f.IsAck() {
		t.Fatalf("got %v, want only a PING ack while the window is closed", f)
	}
	p.fr.WriteWindowUpdate(0, 1<<20)
	p.fr.WriteWindowUpdate(1, 1<<20)
	got = append(got, readDataFrames(t, p, len(payload)-1000, minFrameSize)...)
	if !bytes.Equal(got, payload) {
		t.Fatalf("payload corrupted (equal prefix %d of %d)", commonPrefix(got, payload), len(payload))
	}
	if d, ok := p.next(true).(*http2.DataFrame); !ok || !d.StreamEnded() || len(d.Data()) != 0 {
		t.Errorf("want an empty END_STREAM DATA frame after the data")
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	p.fr.WriteData(1, true, nil)
}

// TestWriteHeadroomWriterBusy: while another goroutine holds the writer role, WriteHeadroom queues its
// data for that writer (Write's path) instead of writing to the socket itself, and it still arrives:
// small pieces through the writer's buffer, larger ones in place (several frames, each header over
// the end of the piece before).
func TestWriteHeadroomWriterBusy(t *testing.T) {
	for _, size := range []int{1000, 5000, 40000} {
		t.Run(strconv.Itoa(size), func(t *testing.T) { testWriteHeadroomWriterBusy(t, size) })
	}
}

func testWriteHeadroomWriterBusy(t *testing.T, size int) {
	checkLeaks(t)
	p, s := openRaw(t)
	c := s.c
	waitFor(t, "an idle writer", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.writing && len(c.wq) == 0
	})
	c.mu.Lock()
	c.writing = true // pose as the holder of the writer role
	c.mu.Unlock()

	payload := pattern(7, size)
	res := make(chan error, 1)
	go func() {
		_, err := s.WriteHeadroom(withRoom(payload))
		res <- err
	}()
	waitFor(t, "the DATA item to be queued", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.wq) == 1 && c.wq[0].kind == wData && len(c.wq[0].data) == len(payload) &&
			len(c.wq[0].framed) == FrameHeaderRoom+len(payload)
	})
	c.mu.Lock()
	c.writing = false // hand the role back: the writer goroutine takes the queued item
	c.wcond.Broadcast()
	c.mu.Unlock()

	if got := readDataFrames(t, p, len(payload), minFrameSize); !bytes.Equal(got, payload) {
		t.Fatal("payload corrupted")
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// TestWriteHeadroomDeadline: a WriteHeadroom blocked on flow control returns at the write deadline
// with what it sent so far.
func TestWriteHeadroomDeadline(t *testing.T) {
	checkLeaks(t)
	p, s := openRaw(t, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	s.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := s.WriteHeadroom(withRoom(pattern(1, 100)))
	if n != 10 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("WriteHeadroom = %d, %v; want 10, %v", n, err, os.ErrDeadlineExceeded)
	}
	if got := readDataFrames(t, p, 10, minFrameSize); !bytes.Equal(got, pattern(1, 10)) {
		t.Error("payload corrupted")
	}
}

func TestWriteHeadroomShortBuffer(t *testing.T) {
	checkLeaks(t)
	_, s := openRaw(t)
	if n, err := s.WriteHeadroom(make([]byte, FrameHeaderRoom-1)); n != 0 || !errors.Is(err, errNoHeadroom) {
		t.Errorf("WriteHeadroom(short) = %d, %v; want 0, %v", n, err, errNoHeadroom)
	}
	if n, err := s.WriteHeadroom(make([]byte, FrameHeaderRoom)); n != 0 || err != nil {
		t.Errorf("WriteHeadroom(room only) = %d, %v; want 0, nil", n, err)
	}
}

// countingConn counts the Write calls on a net.Conn and the bytes they carried.
type countingConn struct {
	net.Conn
	writes, bytes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.Conn.Write(p)
}

// TestFullFrameOneSocketWrite: over TLS, a full-size DATA frame (four TLS records) sent with
// WriteHeadroom leaves in one socket write, and so does one sent with Write (the queued path).
func TestFullFrameOneSocketWrite(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	received := make(chan int64, 1)
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		n, _ := io.Copy(io.Discard, s)
		received <- n
		s.CloseWrite()
	})}
	addr := startServer(t, srv)
	var raw *countingConn
	pool, _ := testPool(t, pki, PoolConfig{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dialTCP(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		raw = &countingConn{Conn: nc}
		return raw, nil
	}})
	s, err := pool.Connect(ctxTimeout(t, 10*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.Sleep(50 * time.Millisecond) // let the SETTINGS exchange finish

	check := func(what string, write func([]byte) (int, error), b []byte, wantWrites int64) {
		t.Helper()
		before := raw.writes.Load()
		if _, err := write(b); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := raw.writes.Load() - before; got != wantWrites {
			t.Errorf("%s of %d bytes: %d socket writes, want %d", what, len(b), got, wantWrites)
		}
	}
	check("WriteHeadroom", s.WriteHeadroom, make([]byte, FrameHeaderRoom+MaxDataWrite), 1)
	check("WriteHeadroom", s.WriteHeadroom, make([]byte, FrameHeaderRoom+3*MaxDataWrite), 3)
	check("Write", s.Write, make([]byte, MaxDataWrite), 1)
	s.CloseWrite()
	select {
	case n := <-received:
		if want := int64(5 * MaxDataWrite); n != want {
			t.Errorf("server received %d bytes, want %d", n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not see the end of the stream")
	}
}

// recordingConn records the Write calls on it.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordingConn) take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

func TestSockConnBatches(t *testing.T) {
	rec := &recordingConn{}
	c := newSockConn(rec)
	c.Write([]byte("a"))
	if w := rec.take(); len(w) != 1 || string(w[0]) != "a" {
		t.Fatalf("outside a batch: writes %q, want one write of \"a\"", w)
	}
	c.beginBatch()
	c.Write([]byte("bc"))
	c.Write([]byte("d"))
	if w := rec.take(); len(w) != 0 {
		t.Fatalf("inside a batch: %d socket writes, want none before endBatch", len(w))
	}
	if err := c.endBatch(); err != nil || c.wbuf != nil {
		t.Fatalf("endBatch = %v (buffer held %v), want nil and no buffer", err, c.wbuf != nil)
	}
	if w := rec.take(); len(w) != 1 || string(w[0]) != "bcd" {
		t.Fatalf("batch: writes %q, want one write of \"bcd\"", w)
	}

	// A batch that overflows goes out in order: what was collected, then the rest.
	big := bytes.Repeat([]byte{'x'}, batchBufSize-1)
	huge := bytes.Repeat([]byte{'y'}, batchBufSize+1)
	c.beginBatch()
	c.Write([]byte("12"))
	c.Write(big)  // does not fit behind "12": "12" goes first
	c.Write(huge) // larger than a batch: big goes first, then huge directly
	c.Write([]byte("z"))
	c.endBatch()
	w := rec.take()
	want := [][]byte{[]byte("12"), big, huge, []byte("z")}
	if len(w) != len(want) {
		t.Fatalf("overflowing batch: %d writes, want %d", len(w), len(want))
	}
	for i := range want {
		if !bytes.Equal(w[i], want[i]) {
			t.Errorf("write %d: %d bytes, want %d", i, len(w[i]), len(want[i]))
		}
	}
	if err := c.endBatch(); err != nil || len(rec.take()) != 0 {
		t.Errorf("empty batch: %v or a socket write, want neither", err)
	}
}

// TestSockConnConcurrentWrite: a write from another goroutine (the TLS layer's close_notify) during a
// batch neither races with it nor overtakes what the batch collected.
func TestSockConnConcurrentWrite(t *testing.T) {
	rec := &recordingConn{}
	c := newSockConn(rec)
	for range 200 {
		c.beginBatch()
		c.Write([]byte("1"))
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.Write([]byte("2"))
		}()
		c.endBatch()
		<-done
		var all []byte
		for _, w := range rec.take() {
			all = append(all, w...)
		}
		if string(all) != "12" {
			t.Fatalf("socket got %q, want \"12\"", all)
		}
	}
}

// TestSockConnUnderTLS checks that sockConnOf finds the batching socket under a tls.Conn.
func TestSockConnUnderTLS(t *testing.T) {
	sc := newSockConn(&recordingConn{})
	if got := sockConnOf(tls.Client(sc, &tls.Config{})); got != sc {
		t.Error("sockConnOf did not find the sockConn under the TLS layer")
	}
	if got := sockConnOf(&recordingConn{}); got != nil {
		t.Error("sockConnOf found a sockConn under a plain connection")
	}
}
