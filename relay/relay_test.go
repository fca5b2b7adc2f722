package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestRelayTCPToPipe drives the TCP-source copy into a destination without a fast path, and the
// plain copy the other way, with a megabyte each way, then half-closes.
func TestRelayTCPToPipe(t *testing.T) {
	r := newRelay(t, -1)
	client, proxySide := tcpPair(t)
	upstream, app := net.Pipe()
	res := runAsync(r, context.Background(), proxySide, upstream)

	up := bytes.Repeat([]byte("upload-"), 150000)
	down := bytes.Repeat([]byte("download-"), 120000)
	appGot := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		io.CopyN(h, app, int64(len(up)))
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		appGot <- sum
		app.Write(down)
		app.Close() // a pipe has no half-close: closing ends the downstream direction
	}()
	go client.Write(up)
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, down) {
		t.Fatalf("client read %d bytes, %v; want %d", len(got), err, len(down))
	}
	if sum := <-appGot; sum != sha256.Sum256(up) {
		t.Fatal("application received corrupted data")
	}
	client.Close()
	rr := waitResult(t, res)
	if rr.Received != int64(len(up)) || rr.Sent != int64(len(down)) {
		t.Errorf("counted received=%d sent=%d, want %d and %d", rr.Received, rr.Sent, len(up), len(down))
	}
}

var errPolicyForTest = errors.New("test policy says no")

// Ending the context resets both sides at once, even when idle, and the result carries the cause.
func TestRelayCancel(t *testing.T) {
	r := newRelay(t, -1)
	client, down := tcpPair(t)
	up, server := tcpPair(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	res := runAsync(r, ctx, down, up)
	time.Sleep(50 * time.Millisecond) // idle: waiting for data without buffers
	cancel(errPolicyForTest)
	if rr := waitResult(t, res); rr.Err != errPolicyForTest || rr.Down != Closed || rr.Up != Closed {
		t.Errorf("result = %+v, want the cancel cause and both sides closed by the relay", rr)
	}
	for name, c := range map[string]*net.TCPConn{"client": client, "server": server} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s read after cancel: %v, want a connection reset", name, err)
		}
	}
}

// TCP to TCP, both sides ending cleanly (client half-closes, server answers and closes): every
// half-close is passed on once, the relay reports no error, both byte counts and FIN on both sides,
// and it holds no pipe beyond the pool's spare ones.
func TestRelayTCPToTCPCleanEnd(t *testing.T) {
	r := newRelay(t, -1)
	for range 5 {
		client, down := tcpPair(t)
		up, server := tcpPair(t)
		done := runAsync(r, context.Background(), down, up)
		client.Write([]byte("ping"))
		client.CloseWrite()
		b, err := io.ReadAll(server)
		if err != nil || string(b) != "ping" {
			t.Fatalf("server read %q, %v", b, err)
		}
		server.Write([]byte("pong!"))
		server.Close()
		b, err = io.ReadAll(client)
		if err != nil || string(b) != "pong!" {
			t.Fatalf("client read %q, %v", b, err)
		}
		res := waitResult(t, done)
		if res.Err != nil || res.Received != 4 || res.Sent != 5 || res.Down != FIN || res.Up != FIN {
			t.Errorf("relay = %+v, want Received 4, Sent 5, FIN both sides, no error", res)
		}
		client.Close()
	}
	if p := r.Stats().Pipes; p > 2 {
		t.Errorf("%d pipes open after the copies ended, want at most the 2 a copy pair used", p)
	}
}

// A bulk transfer each way between TCP sockets (splice through pipes) with a slow reader on one
// side arrives whole.
func TestRelaySpliceBulk(t *testing.T) {
	r := newRelay(t, 50*time.Millisecond) // parks between bursts, too
	client, down := tcpPair(t)
	up, server := tcpPair(t)
	done := runAsync(r, context.Background(), down, up)
	upload := bytes.Repeat([]byte("0123456789abcdef-upload-"), 400000)     // ~9.6 MB
	download := bytes.Repeat([]byte("fedcba9876543210-download-"), 300000) // ~7.8 MB
	serverGot := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		chunk := make([]byte, 7000)
		for {
			n, err := server.Read(chunk)
			buf.Write(chunk[:n])
			if err != nil {
				break
			}
			if buf.Len()%(1<<20) < 7000 {
				time.Sleep(20 * time.Millisecond) // slow: the relay's writes back up
			}
		}
		serverGot <- buf.Bytes()
	}()
	go func() {
		server.Write(download)
		server.CloseWrite()
	}()
	go func() {
		client.Write(upload)
		client.CloseWrite()
	}()
	client.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, download) {
		t.Fatalf("client read %d bytes, %v; want %d (equal prefix %d)", len(got), err, len(download), prefixLen(got, download))
	}
	select {
	case b := <-serverGot:
		if !bytes.Equal(b, upload) {
			t.Fatalf("server read %d bytes, want %d (equal prefix %d)", len(b), len(upload), prefixLen(b, upload))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not see the end of the upload")
	}
	if res := waitResult(t, done); res.Err != nil || res.Received != int64(len(upload)) || res.Sent != int64(len(download)) {
		t.Errorf("relay = %+v", res)
	}
}

// A reset from either side travels to the other side as a reset, not as a FIN, and the result says
// which side reset (issue 10, item 1: the old splice took ECONNRESET for a clean end and sent a FIN).
func TestRelayResetTravelsTCP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resetUp bool
	}{{"upstream resets", true}, {"downstream resets", false}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelay(t, -1)
			client, down := tcpPair(t)
			up, server := tcpPair(t)
			done := runAsync(r, context.Background(), down, up)
			resetter, victim := server, client
			if !tc.resetUp {
				resetter, victim = client, server
			}
			// Some bytes first, so the reset comes mid-stream.
			if _, err := victim.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			resetter.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(resetter, buf); err != nil {
				t.Fatal(err)
			}
			ResetClose(resetter)
			victim.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := victim.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the other side read %v, want a connection reset", err)
			}
			res := waitResult(t, done)
			var re *Error
			wantSide, gotEnd := "upstream", res.Up
			if !tc.resetUp {
				wantSide, gotEnd = "downstream", res.Down
			}
			if !errors.As(res.Err, &re) || re.Side != wantSide || re.End != Reset || gotEnd != Reset {
				t.Errorf("result = %+v (err %v), want a reset of the %s", res, res.Err, wantSide)
			}
		})
	}
}

// Idle TCP-to-TCP relays hold no pipe and, parked, no goroutine; the pipes of a burst of busy
// relays go back to a small pool and the rest are closed (issue 10, item 8: 5 000 connections
// through 15006 left ~13 300 descriptors open after they ended: Go's splice keeps a pipe per copy
// for the copy's whole life and frees them only with the garbage collector).
func TestRelayIdleHoldsNoPipes(t *testing.T) {
	const n = 200
	r := newRelay(t, 100*time.Millisecond)
	fds0 := openFDs(t)
	type conn struct{ client, server *net.TCPConn }
	conns := make([]conn, n)
	for i := range conns {
		client, down := tcpPair(t)
		up, server := tcpPair(t)
		r.Run(context.Background(), down, up, func(Result) {})
		conns[i] = conn{client, server}
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1)
	for _, c := range conns {
		c.server.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c.server, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c.client, buf); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all copies to park", 10*time.Second, func() bool { return r.Stats().Parked == 2*n })
	// Each relayed connection is 4 sockets here (client, proxy downstream, proxy upstream, server).
	if extra := openFDs(t) - fds0 - 4*n; extra > 2*32 {
		t.Errorf("%d idle relays hold %d descriptors beyond their sockets, want at most the pool's %d", n, extra, 2*32)
	}
	for _, c := range conns {
		c.client.Close()
		c.server.Close()
	}
	waitFor(t, "the copies to end", 10*time.Second, func() bool { return r.Stats().Parked == 0 })
	if p := r.Stats().Pipes; p > 32 {
		t.Errorf("%d pipes open after the relays ended, want at most 32", p)
	}
}

// openFDs is how many descriptors the process has open.
func openFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
