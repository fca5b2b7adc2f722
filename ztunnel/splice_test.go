package ztunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestSpliceTCPToPipe drives copyWhenReadable (TCP source, non-TCP destination) and the
// pooled-buffer path the other way, with a megabyte each way, then half-closes.
func TestSpliceTCPToPipe(t *testing.T) {
	client, proxySide := tcpPair(t)
	upstream, app := net.Pipe()
	res := make(chan spliceResult, 1)
	go func() { res <- splice(context.Background(), proxySide, upstream) }()

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
	go func() {
		client.Write(up)
	}()
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, down) {
		t.Fatalf("client read %d bytes, %v; want %d", len(got), err, len(down))
	}
	if sum := <-appGot; sum != sha256.Sum256(up) {
		t.Fatal("application received corrupted data")
	}
	client.Close()
	select {
	case r := <-res:
		if r.Received != int64(len(up)) || r.Sent != int64(len(down)) {
			t.Errorf("counted received=%d sent=%d, want %d and %d", r.Received, r.Sent, len(up), len(down))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("splice did not end after both sides closed")
	}
}

// TestSpliceCancel: ending the context closes both sides at once, even when idle.
func TestSpliceCancel(t *testing.T) {
	client, proxySide := tcpPair(t)
	upstream, _ := net.Pipe()
	ctx, cancel := context.WithCancelCause(context.Background())
	res := make(chan spliceResult, 1)
	go func() { res <- splice(ctx, proxySide, upstream) }()
	time.Sleep(50 * time.Millisecond) // idle: waiting for data without buffers
	cancel(errPolicyForTest)
	select {
	case r := <-res:
		if r.Err != errPolicyForTest {
			t.Errorf("result error = %v, want the cancel cause", r.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("splice ignored its context")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("client connection still open after cancel")
	}
}

var errPolicyForTest = &policyError{reason: "test"}

// TCP to TCP, both sides ending cleanly (client half-closes, server answers and closes): every
// half-close is done once, so splice reports no error and both byte counts.
func TestSpliceTCPToTCPCleanEnd(t *testing.T) {
	for range 5 {
		client, down := tcpPair(t)
		up, server := tcpPair(t)
		done := make(chan spliceResult, 1)
		go func() { done <- splice(context.Background(), down, up) }()
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
		select {
		case res := <-done:
			if res.Err != nil || res.Received != 4 || res.Sent != 5 {
				t.Errorf("splice = %+v, want Received 4, Sent 5, no error", res)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("splice did not return")
		}
		client.Close()
	}
}

// TestSpliceThroughHBONE sends a few megabytes each way through two proxies joined by HBONE
// (copyToStream on both, WriteToAsync the other way), with a half-close in each direction, and
// checks the bytes and both proxies' counts.
func TestSpliceThroughHBONE(t *testing.T) {
	up := bytes.Repeat([]byte("upload-through-hbone-"), 150000)    // ~3 MB
	down := bytes.Repeat([]byte("download-through-hbone-"), 90000) // ~2 MB
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer appLn.Close()
	appGot := make(chan []byte, 1)
	go func() {
		c, err := appLn.Accept()
		if err != nil {
			appGot <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's half-close arrives
		appGot <- b
		c.Write(down)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan spliceResult, 2)
	addr, stop := startIdleMeshWith(t, ctx, appLn.Addr().String(), nil, func(r spliceResult) { results <- r })
	defer stop()

	c, err := net.Dial("tcp", addr)
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
	for range 2 {
		select {
		case r := <-results:
			if r.Err != nil || r.Received != int64(len(up)) || r.Sent != int64(len(down)) {
				t.Errorf("proxy splice = %+v, want Received %d, Sent %d, no error", r, len(up), len(down))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a proxy's splice did not end")
		}
	}
}

// prefixLen is the length of the common prefix of a and b.
func prefixLen(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
