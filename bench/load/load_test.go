package load

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// loopback starts a Server on 127.0.0.1 and returns a dialer to it.
func loopback(t *testing.T) Dialer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("server close: %v", err)
		}
	})
	addr := ln.Addr().String()
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func TestThroughput(t *testing.T) {
	dial := loopback(t)
	ctx := context.Background()
	for _, streams := range []int{1, 3} {
		r, err := Throughput(ctx, dial, streams, 100*time.Millisecond)
		if err != nil {
			t.Fatalf("%d streams: %v", streams, err)
		}
		if r.Bytes < BufSize || r.Elapsed < 100*time.Millisecond || r.Gbps() <= 0 {
			t.Errorf("%d streams: %+v (%.2f Gbit/s): want at least one buffer over at least the duration", streams, r, r.Gbps())
		}
	}
	if _, err := Throughput(ctx, dial, 0, time.Millisecond); err == nil {
		t.Error("0 streams: no error")
	}
}

func TestRTT(t *testing.T) {
	dial := loopback(t)
	for _, size := range []int{1, 1024} {
		got, err := RTT(context.Background(), dial, size, time.Minute, 50)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if len(got) != 50 {
			t.Errorf("size %d: %d samples, want the count limit 50", size, len(got))
		}
		for _, d := range got {
			if d <= 0 {
				t.Fatalf("size %d: non-positive round trip %v", size, d)
			}
		}
	}
	got, err := RTT(context.Background(), dial, 1, 30*time.Millisecond, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		t.Error("time-limited run recorded nothing")
	}
}

func TestConnRate(t *testing.T) {
	dial := loopback(t)
	r, err := ConnRate(context.Background(), dial, 4, time.Minute, 200)
	if err != nil {
		t.Fatal(err)
	}
	if r.Done != 200 || r.Failed != 0 || r.PerSecond() <= 0 {
		t.Errorf("result %+v: want exactly the count limit, 200, without failures", r)
	}
}

func TestConnRateFailures(t *testing.T) {
	// A listener that closes every connection at once: no echo ever comes back.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	_, err = ConnRate(context.Background(), dial, 2, time.Minute, 20)
	if err == nil || !strings.Contains(err.Error(), "20 of 20 attempts failed") {
		t.Errorf("err = %v, want 20 of 20 attempts failed", err)
	}
}

func TestHold(t *testing.T) {
	dial := loopback(t)
	h, err := Hold(context.Background(), dial, 40)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Len() != 40 {
		t.Errorf("held %d, want 40", h.Len())
	}
	// The held connections still echo.
	for _, c := range h.conns[:3] {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{'y'}); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil || b[0] != 'y' {
			t.Fatalf("echo on a held connection: %q, %v", b, err)
		}
	}
}

func TestServerIgnoresUnknownMode(t *testing.T) {
	dial := loopback(t)
	c, err := dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{'?'})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if n, err := c.Read(b[:]); n != 0 || err == nil {
		t.Errorf("read = %d, %v; want the server to close", n, err)
	}
}
