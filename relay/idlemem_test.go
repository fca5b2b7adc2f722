package relay

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"
)

// Memory held per idle proxied connection (issue 5): n client connections held open through
// proxy A (a loopback listener whose handler opens a pooled HBONE stream and relays, as the
// proxy's outbound handler does) and proxy B (an hbone.Server whose handler dials the application
// and relays, as its HBONE inbound handler does). The test's own ends (client sockets, accepted application
// sockets) are measured alone first and subtracted, so the figure is what the two proxies add.
//
// Run: go test ./relay -run '^$' -bench IdleConnMemory -benchtime 1x

const idleMemConns = 1000

// BenchmarkIdleConnMemory reports the heap and stack bytes per idle connection per proxy.
func BenchmarkIdleConnMemory(b *testing.B) {
	for b.Loop() {
		ends := measureHeldConns(b, idleMemConns, false)
		mesh := measureHeldConns(b, idleMemConns, true)
		perProxy := float64(mesh.bytes-ends.bytes) / idleMemConns / 2
		b.ReportMetric(perProxy, "B/conn/proxy")
		b.ReportMetric(float64(mesh.goroutines-ends.goroutines)/idleMemConns/2, "goroutines/conn/proxy")
	}
}

// BenchmarkIdleConnMemoryParked is BenchmarkIdleConnMemory with idle copies parked, as the proxy
// runs: the figure is taken once every copy is parked.
func BenchmarkIdleConnMemoryParked(b *testing.B) {
	for b.Loop() {
		ends := measureHeldConnsWith(b, idleMemConns, false, 100*time.Millisecond)
		mesh := measureHeldConnsWith(b, idleMemConns, true, 100*time.Millisecond)
		b.ReportMetric(float64(mesh.bytes-ends.bytes)/idleMemConns/2, "B/conn/proxy")
		b.ReportMetric(float64(mesh.goroutines-ends.goroutines)/idleMemConns/2, "goroutines/conn/proxy")
	}
}

// TestIdleConnMemoryHarness checks that the harness really carries bytes both ways through
// both proxies, so the benchmark measures live tunnels.
func TestIdleConnMemoryHarness(t *testing.T) {
	measureHeldConns(t, 20, true)
}

type memSample struct {
	bytes      int64 // HeapInuse + StackInuse with the connections open, minus before
	goroutines int
}

// measureHeldConns opens n connections to an application listener, through the two proxies
// if mesh is set, checks each carries one byte both ways, and measures what they hold.
func measureHeldConns(tb testing.TB, n int, mesh bool) memSample {
	return measureHeldConnsWith(tb, n, mesh, -1)
}

// measureHeldConnsWith is measureHeldConns with the proxies parking copies idle for idle (never if
// negative); the connections are measured once all their copies are parked.
func measureHeldConnsWith(tb testing.TB, n int, mesh bool, idle time.Duration) memSample {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)

	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer app.Close()
	appConns := make(chan net.Conn, n)
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			appConns <- c
		}
	}()
	target := app.Addr().String()
	var r *Relay
	if mesh {
		r = newRelay(tb, idle)
		target = startMesh(tb, ctx, r, target).target
	}

	before := memInUse()
	g0 := runtime.NumGoroutine()
	clients := make([]net.Conn, 0, n)
	servers := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		for _, c := range servers {
			c.Close()
		}
	}()
	var one [1]byte
	for range n {
		c, err := net.Dial("tcp", target)
		if err != nil {
			tb.Fatal(err)
		}
		clients = append(clients, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{'p'}); err != nil {
			tb.Fatal(err)
		}
		var s net.Conn
		select {
		case s = <-appConns:
		case <-time.After(10 * time.Second):
			tb.Fatal("application did not get the connection")
		}
		servers = append(servers, s)
		s.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.Read(one[:]); err != nil || one[0] != 'p' {
			tb.Fatalf("application read %q, %v", one[:], err)
		}
		if _, err := s.Write([]byte{'q'}); err != nil {
			tb.Fatal(err)
		}
		if _, err := c.Read(one[:]); err != nil || one[0] != 'q' {
			tb.Fatalf("client read %q, %v", one[:], err)
		}
	}
	if idle >= 0 && mesh {
		for deadline := time.Now().Add(30 * time.Second); r.Stats().Parked < 2*n; {
			if time.Now().After(deadline) {
				tb.Fatalf("%d of %d copies parked", r.Stats().Parked, 2*n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	after := memInUse()
	return memSample{bytes: after - before, goroutines: runtime.NumGoroutine() - g0}
}

// memInUse is HeapInuse+StackInuse after two collections (the second lets stacks shrink).
func memInUse() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}
