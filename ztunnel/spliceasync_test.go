package ztunnel

import (
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// asyncMesh is a two-proxy HBONE mesh (startIdleMeshWith) splicing through spliceAsync with a
// fast idle poller, and an application listener behind it.
type asyncMesh struct {
	idle   *idlePoller
	target string
	app    chan net.Conn

	mu    sync.Mutex
	ended []spliceResult
}

func newAsyncMesh(t *testing.T, ctx context.Context) *asyncMesh {
	t.Helper()
	idle, err := newIdlePoller(100 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	m := &asyncMesh{idle: idle, app: make(chan net.Conn, 100)}
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			m.app <- c
		}
	}()
	target, stop := startIdleMeshWith(t, ctx, app.Addr().String(), idle, func(r spliceResult) {
		m.mu.Lock()
		m.ended = append(m.ended, r)
		m.mu.Unlock()
	})
	m.target = target
	t.Cleanup(func() {
		stop()
		app.Close()
		idle.close()
	})
	return m
}

// dial opens a connection through the mesh and returns both ends.
func (m *asyncMesh) dial(t *testing.T) (client, server net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", m.target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	echo(t, c, nil, "p")
	select {
	case s := <-m.app:
		t.Cleanup(func() { s.Close() })
		readExactly(t, s, "p")
		echo(t, s, c, "q")
		return c, s
	case <-time.After(5 * time.Second):
		t.Fatal("application did not get the connection")
	}
	return nil, nil
}

// echo writes msg to from and, if to is not nil, reads it at to.
func echo(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	if _, err := from.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if to != nil {
		readExactly(t, to, msg)
	}
}

func readExactly(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, len(want))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != want {
		t.Fatalf("read %q, %v; want %q", b, err, want)
	}
	c.SetReadDeadline(time.Time{})
}

func (m *asyncMesh) waitParked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for m.idle.numParked() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d copies parked, want %d", m.idle.numParked(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (m *asyncMesh) waitEnded(t *testing.T, n int) []spliceResult {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		got := append([]spliceResult(nil), m.ended...)
		m.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d splices ended, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Idle tunnels hold no goroutine: after idleAfter both proxies' TCP→stream copies are parked and
// the goroutine count is back to what the mesh itself needs; traffic then wakes them, both ways,
// and half-close and the byte counts still work.
func TestSpliceAsyncParksIdleTunnels(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := newAsyncMesh(t, ctx)
	m.dial(t) // the first connection brings up the pooled HBONE connection and its goroutines
	m.waitParked(t, 2)
	g0 := runtime.NumGoroutine()

	const n = 20
	clients := make([]net.Conn, n)
	servers := make([]net.Conn, n)
	for i := range n {
		clients[i], servers[i] = m.dial(t)
	}
	m.waitParked(t, 2*(n+1))
	if g := runtime.NumGoroutine(); g-g0 > 4 {
		t.Errorf("%d idle tunnels hold %d goroutines, want none", n, g-g0)
	}

	// Wake some in each direction, several times (a woken copy parks again).
	for round := range 3 {
		for i := range 5 {
			echo(t, clients[i], servers[i], "hello")
			echo(t, servers[i], clients[i], "world!")
		}
		m.waitParked(t, 2*(n+1))
		_ = round
	}

	// Half-close from the client while parked: the application sees EOF, still answers.
	c, s := clients[7], servers[7]
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("application read %q, %v after client half-close; want EOF", b, err)
	}
	echo(t, s, c, "late answer")
	s.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("client read %q, %v after application close; want EOF", b, err)
	}
	for _, r := range m.waitEnded(t, 2) {
		// The client sent "p" (dial); the application "q" and "late answer".
		if r.Err != nil || r.Received+r.Sent != 1+1+int64(len("late answer")) {
			t.Errorf("splice = %+v, want no error and 13 bytes", r)
		}
	}
}

// Ending the context while a copy is parked closes both sides and reports the cause; nothing
// stays parked.
func TestSpliceAsyncCancelWhileParked(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	m := newAsyncMesh(t, ctx)
	c, s := m.dial(t)
	m.waitParked(t, 2)
	cancel(errPolicyForTest)
	for _, r := range m.waitEnded(t, 2) {
		if r.Err != errPolicyForTest {
			t.Errorf("result error = %v, want the cancel cause", r.Err)
		}
	}
	if k := m.idle.numParked(); k != 0 {
		t.Errorf("%d copies still parked", k)
	}
	for _, conn := range []net.Conn{c, s} {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Error("connection still open after cancel")
		}
	}
}
