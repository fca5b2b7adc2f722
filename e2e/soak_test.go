package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/bench/load"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// soakConns is how many connections TestLeakSoak opens through HBONE (and a quarter of that each
// through the passthrough and plaintext-inbound paths): modest in `make test`; the benchmark
// harness runs the full 20 000 (`bench -only soak`). ZT_SOAK_CONNS overrides it.
func soakConns(t *testing.T) int {
	if v := os.Getenv("ZT_SOAK_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("ZT_SOAK_CONNS=%q: want a positive integer", v)
		}
		return n
	}
	return 2000
}

// TestLeakSoak opens and closes many connections, 16 at a time, through each path the proxies
// carry (HBONE between two enrolled pods, passthrough to a pod outside the mesh, plaintext into an
// enrolled pod), then checks that both proxies are back within a small margin of where they
// started: goroutines, descriptors and resident memory (issue 10, "a leak soak").
func TestLeakSoak(t *testing.T) {
	n := soakConns(t)
	c := twoNodes(t)
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", ServiceAccount: "server", Enrolled: true})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true})
	outside := addPod(t, c, testbed.PodSpec{Name: "outside", Node: "node2"})
	plain := addPod(t, c, testbed.PodSpec{Name: "plain", Node: "node1"})
	for _, p := range []*testbed.Pod{server, outside} {
		ln, err := p.NetNS().Listen(context.Background(), "tcp", ":8080", redirect.SocketOptions{})
		if err != nil {
			t.Fatal(err)
		}
		srv := load.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	paths := []struct {
		name string
		dial load.Dialer
		n    int
	}{
		{"hbone", podDial(client, netip.AddrPortFrom(server.IP(), 8080)), n},
		{"passthrough", podDial(client, netip.AddrPortFrom(outside.IP(), 8080)), n / 4},
		{"plaintext inbound", podDial(plain, netip.AddrPortFrom(server.IP(), 8080)), n / 4},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	soak := func(warmUp bool) {
		for _, p := range paths {
			count := p.n
			if warmUp {
				count = 100 // certificates, the pooled HBONE connection, the runtime's first allocations
			}
			start := time.Now()
			r, err := load.ConnRate(ctx, p.dial, 16, time.Hour, int64(count))
			if err != nil || r.Failed > 0 {
				t.Fatalf("%s: %d of %d connections failed: %v (first: %v)", p.name, r.Failed, count, err, r.FirstErr)
			}
			if !warmUp {
				t.Logf("%s: %d connections in %s", p.name, r.Done, time.Since(start).Round(time.Millisecond))
			}
		}
	}
	soak(true)
	before := soakUsage(t, ctx, c)
	soak(false)

	// What the connections held is given back within a few seconds: they are closed, their
	// copies ended, and the memory they used is free again.
	var after map[string]testbed.ProxyUsage
	deadline := time.Now().Add(20 * time.Second)
	for {
		after = soakUsage(t, ctx, c)
		leaks := soakLeaks(before, after)
		if len(leaks) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, l := range leaks {
				t.Error(l)
			}
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for node := range before {
		t.Logf("%s: before %v; after %v", node, before[node], after[node])
	}
}

// podDial dials addr from inside p.
func podDial(p *testbed.Pod, addr netip.AddrPort) load.Dialer {
	return func(ctx context.Context) (net.Conn, error) { return p.Dial(ctx, addr.String()) }
}

func soakUsage(t *testing.T, ctx context.Context, c *testbed.Cluster) map[string]testbed.ProxyUsage {
	t.Helper()
	out := map[string]testbed.ProxyUsage{}
	for _, node := range []string{"node1", "node2"} {
		u, err := c.ProxyUsage(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		out[node] = u
	}
	return out
}

// soakLeaks lists what grew beyond the margin: a few goroutines (timers, a scrape's own
// connection), a few descriptors plus the pipes the relay keeps for reuse (up to 32, two each),
// and a quarter or 16 MiB of resident memory, whichever is more. Proxies built with the race
// detector (E2E_RACE) are not held to the memory margin: the detector's shadow memory follows the
// heap's high-water mark and is never given back (bench -soak measures it without).
func soakLeaks(before, after map[string]testbed.ProxyUsage) []string {
	checkRSS := os.Getenv("E2E_RACE") == ""
	var out []string
	for node, b := range before {
		a := after[node]
		if a.Goroutines > b.Goroutines+5 {
			out = append(out, fmt.Sprintf("%s: goroutines %d → %d", node, b.Goroutines, a.Goroutines))
		}
		if a.FDs > b.FDs+5+2*32 {
			out = append(out, fmt.Sprintf("%s: descriptors %d → %d", node, b.FDs, a.FDs))
		}
		if checkRSS && a.RSSKiB > b.RSSKiB+max(b.RSSKiB/4, 16<<10) {
			out = append(out, fmt.Sprintf("%s: resident %d KiB → %d KiB", node, b.RSSKiB, a.RSSKiB))
		}
	}
	return out
}
