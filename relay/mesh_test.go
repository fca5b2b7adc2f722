package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/hbone"
)

// TestRelayThroughHBONE sends a few megabytes each way through two proxies joined by HBONE (the
// TCP-to-tunnel copy on both, the tunnel-to-TCP delivery the other way), with a half-close in each
// direction, and checks the bytes and both proxies' counts.
func TestRelayThroughHBONE(t *testing.T) {
	up := bytes.Repeat([]byte("upload-through-hbone-"), 150000)    // ~3 MB
	down := bytes.Repeat([]byte("download-through-hbone-"), 90000) // ~2 MB
	appAddr, appConns := appListener(t)
	appGot := make(chan []byte, 1)
	go func() {
		c := <-appConns
		b, _ := io.ReadAll(c) // until the client's half-close arrives
		appGot <- b
		c.Write(down)
		c.Close()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := startMesh(t, ctx, newRelay(t, -1), appAddr)

	c, err := net.Dial("tcp", m.target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.Write(up)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, down) {
		t.Fatalf("client read %d bytes, %v; want %d (equal prefix %d)", len(got), err, len(down), prefixLen(got, down))
	}
	if b := <-appGot; !bytes.Equal(b, up) {
		t.Fatalf("application read %d bytes, want %d (equal prefix %d)", len(b), len(up), prefixLen(b, up))
	}
	for _, r := range m.waitEnded(t, 2) {
		if r.res.Err != nil || r.res.Received != int64(len(up)) || r.res.Sent != int64(len(down)) ||
			r.res.Down != FIN || r.res.Up != FIN {
			t.Errorf("proxy %s relay = %+v, want Received %d, Sent %d, FIN both sides, no error", r.proxy, r.res, len(up), len(down))
		}
	}
}

// meshConn opens a connection through the mesh, checks a byte each way, and returns the client's
// and the application's ends.
func meshConn(t *testing.T, m *mesh, appConns <-chan *net.TCPConn) (client, app *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", m.target)
	if err != nil {
		t.Fatal(err)
	}
	client = c.(*net.TCPConn)
	t.Cleanup(func() { client.Close() })
	echo(t, client, nil, "p")
	select {
	case app = <-appConns:
	case <-time.After(5 * time.Second):
		t.Fatal("application did not get the connection")
	}
	readExactly(t, app, "p")
	echo(t, app, client, "q")
	return client, app
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

// expectReset reads c until it fails and wants a connection reset, not an end of stream.
func expectReset(t *testing.T, who string, c *net.TCPConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%s: read ended with %v, want a connection reset", who, err)
	}
}

// A reset travels end to end through HBONE: the application resets its connection and the client
// sees a reset (proxy B resets the stream, proxy A the client's socket), and the other way round.
// Before issue 10 the reset became a FIN: the client saw a clean, truncated end.
func TestRelayResetTravelsThroughHBONE(t *testing.T) {
	for _, appResets := range []bool{true, false} {
		name := "application resets"
		if !appResets {
			name = "client resets"
		}
		t.Run(name, func(t *testing.T) {
			appAddr, appConns := appListener(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m := startMesh(t, ctx, newRelay(t, -1), appAddr)
			client, app := meshConn(t, m, appConns)
			if appResets {
				ResetClose(app)
				expectReset(t, "client", client)
			} else {
				ResetClose(client)
				expectReset(t, "application", app)
			}
			for _, r := range m.waitEnded(t, 2) {
				var re *Error
				if !errors.As(r.res.Err, &re) || re.End != Reset {
					t.Errorf("proxy %s: result %+v (%v), want a reset", r.proxy, r.res, r.res.Err)
				}
			}
		})
	}
}

// A tunnel whose HTTP/2 connection dies mid-stream resets the client's connection, and the relay
// reports the tunnel's failure (before issue 10 the client got a FIN and the relay no error).
func TestRelayTunnelDeathResetsClient(t *testing.T) {
	appAddr, appConns := appListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := startMesh(t, ctx, newRelay(t, -1), appAddr)
	client, _ := meshConn(t, m, appConns)
	m.srv.Close() // proxy B's HBONE connections die, as when its node goes away
	expectReset(t, "client", client)
	var resA *Result
	for _, r := range m.waitEnded(t, 2) {
		if r.proxy == "A" {
			resA = &r.res
		}
	}
	if resA == nil {
		t.Fatal("proxy A's relay did not end")
	}
	var re *Error
	var ce *hbone.ConnError
	if !errors.As(resA.Err, &re) || re.Side != "upstream" || re.End != Failed || !errors.As(resA.Err, &ce) || resA.Up != Failed {
		t.Errorf("proxy A: result %+v (%v), want the upstream tunnel failed with the HBONE connection error", *resA, resA.Err)
	}
}

// Idle tunnels hold no goroutine: after IdleAfter both proxies' TCP-to-tunnel copies are parked and
// the goroutine count is back to what the mesh itself needs; traffic then wakes them, both ways,
// and half-close and the byte counts still work.
func TestRelayParksIdleTunnels(t *testing.T) {
	appAddr, appConns := appListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newRelay(t, 100*time.Millisecond)
	m := startMesh(t, ctx, r, appAddr)
	meshConn(t, m, appConns) // the first connection brings up the pooled HBONE connection and its goroutines
	waitParked(t, r, 2)
	g0 := runtime.NumGoroutine()

	const n = 20
	clients := make([]*net.TCPConn, n)
	servers := make([]*net.TCPConn, n)
	for i := range n {
		clients[i], servers[i] = meshConn(t, m, appConns)
	}
	waitParked(t, r, 2*(n+1))
	if g := runtime.NumGoroutine(); g-g0 > 4 {
		t.Errorf("%d idle tunnels hold %d goroutines, want none", n, g-g0)
	}

	// Wake some in each direction, several times (a woken copy parks again).
	for range 3 {
		for i := range 5 {
			echo(t, clients[i], servers[i], "hello")
			echo(t, servers[i], clients[i], "world!")
		}
		waitParked(t, r, 2*(n+1))
	}

	// Half-close from the client while parked: the application sees EOF, still answers.
	c, s := clients[7], servers[7]
	if err := c.CloseWrite(); err != nil {
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
		if r.res.Err != nil || r.res.Received+r.res.Sent != 1+1+int64(len("late answer")) {
			t.Errorf("proxy %s relay = %+v, want no error and 13 bytes", r.proxy, r.res)
		}
	}
}

// Ending the context while copies are parked resets both sides and reports the cause; nothing
// stays parked.
func TestRelayCancelWhileParked(t *testing.T) {
	appAddr, appConns := appListener(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	r := newRelay(t, 100*time.Millisecond)
	m := startMesh(t, ctx, r, appAddr)
	c, s := meshConn(t, m, appConns)
	waitParked(t, r, 2)
	cancel(errPolicyForTest)
	// Both proxies share the context here: either may see the other's reset of the stream before
	// its own context ends, but the first to act reports the cancel cause.
	sawCause := false
	for _, res := range m.waitEnded(t, 2) {
		var re *Error
		switch {
		case res.res.Err == errPolicyForTest:
			sawCause = true
		case !errors.As(res.res.Err, &re) || re.End != Reset:
			t.Errorf("proxy %s: result error = %v, want the cancel cause or the peer's reset", res.proxy, res.res.Err)
		}
	}
	if !sawCause {
		t.Error("neither proxy reported the cancel cause")
	}
	if k := r.Stats().Parked; k != 0 {
		t.Errorf("%d copies still parked", k)
	}
	expectReset(t, "client", c)
	expectReset(t, "application", s)
}

func waitParked(t *testing.T, r *Relay, n int) {
	t.Helper()
	waitFor(t, "copies to park", 5*time.Second, func() bool { return r.Stats().Parked == n })
}
