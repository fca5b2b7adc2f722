package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestConnectionCapPerPod: a flood of plaintext connections to one pod stops at that pod's
// connection cap: the connections over it are reset at once and counted, while another pod on the
// same node keeps being served and the flood's own connections below the cap keep working; once
// the flood ends the pod takes new connections again (issue 10, item 4).
func TestConnectionCapPerPod(t *testing.T) {
	const perPod = 20
	c := newCluster(t, testbed.Config{
		Nodes:    []testbed.NodeSpec{{Name: "node1"}, {Name: "node2"}},
		ExtraEnv: []string{"MAX_CONNECTIONS_PER_POD=" + strconv.Itoa(perPod)},
	})
	victim := addPod(t, c, testbed.PodSpec{Name: "victim", Node: "node2", ServiceAccount: "victim", Enrolled: true})
	bystander := addPod(t, c, testbed.PodSpec{Name: "bystander", Node: "node2", ServiceAccount: "bystander", Enrolled: true})
	attacker := addPod(t, c, testbed.PodSpec{Name: "attacker", Node: "node1"}) // off-mesh: plaintext to 15006
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true})
	serve(t, victim, 8080, echo)
	serve(t, bystander, 8080, echo)
	victimAddr := netip.AddrPortFrom(victim.IP(), 8080).String()

	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	refused := 0
	for i := range perPod + 10 {
		conn, err := attacker.Dial(context.Background(), victimAddr)
		if err == nil {
			held = append(held, conn)
			err = roundTripTimeout(conn, fmt.Sprintf("m%03d", i), 5*time.Second)
		}
		if err != nil { // the reset may come before the dial returns
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
				t.Fatalf("connection %d over the cap: %v, want a reset", i, err)
			}
			refused++
		}
	}
	if refused != 10 {
		t.Errorf("%d of %d connections refused, want the 10 over the per-pod cap of %d", refused, perPod+10, perPod)
	}
	// The other pod on the node is served meanwhile, over HBONE.
	if err := tryEcho(client, netip.AddrPortFrom(bystander.IP(), 8080).String(), "bystander"); err != nil {
		t.Errorf("another pod on the node while the cap is hit: %v", err)
	}
	// The connections under the cap still work.
	if err := roundTripTimeout(held[0], "still here", 5*time.Second); err != nil {
		t.Errorf("a connection under the cap: %v", err)
	}
	fams := newNodeScraper(t, c, "node2").scrape(t)
	if n := sum(fams, "ztunnel_connections_refused_total", labels{"listener": "inbound", "reason": "pod_limit"}); n != 10 {
		t.Errorf("ztunnel_connections_refused_total{listener=inbound,reason=pod_limit} = %v, want 10\n%s", n,
			dump(fams, "ztunnel_connections_refused_total"))
	}
	waitLog(t, c, "node2", "connection refused: connection cap reached", "listener=inbound", "reason=pod_limit")

	// Once the flood ends, the pod takes connections again.
	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := tryEcho(attacker, victimAddr, "after")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the flood ended: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// roundTripTimeout is roundTrip with a deadline.
func roundTripTimeout(c net.Conn, msg string, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	return roundTrip(c, msg)
}

// TestHBONEHandshakeFlood: thousands of TCP connections to a pod's HBONE port that never send a
// TLS byte (item 8, "fd exhaustion without a certificate": ~23 000 of them used to exhaust the
// proxy's descriptors) are held to the handshake caps: those over the per-source cap are reset at
// once and counted, the proxy's descriptors stay bounded, and mesh traffic to the pod keeps
// working during the flood.
func TestHBONEHandshakeFlood(t *testing.T) {
	const flood = 3000
	c := newCluster(t, testbed.Config{Nodes: []testbed.NodeSpec{{Name: "node1"}, {Name: "node2"}}})
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", ServiceAccount: "server", Enrolled: true})
	attacker := addPod(t, c, testbed.PodSpec{Name: "attacker", Node: "node1"})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true})
	serve(t, server, 8080, echo)
	serverAddr := netip.AddrPortFrom(server.IP(), 8080).String()
	if err := tryEcho(client, serverAddr, "before"); err != nil {
		t.Fatal(err)
	}
	fds0 := proxyFDs(t, c, "node2")

	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	hbone := netip.AddrPortFrom(server.IP(), 15008).String()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < flood; i += 8 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				conn, err := attacker.Dial(ctx, hbone)
				cancel()
				if err != nil {
					continue // the listener's backlog may be full for a moment
				}
				mu.Lock()
				held = append(held, conn)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	t.Logf("%d of %d silent connections established", len(held), flood)
	// Mesh traffic works while the silent connections are held.
	if err := tryEcho(client, serverAddr, "during the flood"); err != nil {
		t.Errorf("mesh traffic during the flood: %v", err)
	}
	fds := proxyFDs(t, c, "node2")
	t.Logf("proxy descriptors: %d before, %d during the flood", fds0, fds)
	if fds-fds0 > 200 {
		t.Errorf("the proxy holds %d more descriptors during a flood of %d silent connections, want the per-source cap (64) and little more", fds-fds0, flood)
	}
	// The kernel completes TCP handshakes before the proxy accepts them: on a busy machine the
	// proxy may still be working through its backlog, so wait for the count to get there.
	var fams map[string]*dto.MetricFamily
	var n float64
	for deadline := time.Now().Add(15 * time.Second); ; {
		fams = newNodeScraper(t, c, "node2").scrape(t)
		n = sum(fams, "ztunnel_connections_refused_total", labels{"listener": "hbone", "reason": "handshakes_per_source"})
		if n >= flood-200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n < flood-200 {
		t.Errorf("ztunnel_connections_refused_total{listener=hbone,reason=handshakes_per_source} = %v, want nearly all of %d\n%s",
			n, flood, dump(fams, "ztunnel_connections_refused_total"))
	}
	waitLog(t, c, "node2", "HBONE connection refused: handshake cap reached", "reason=handshakes_per_source")
}

// proxyFDs counts the descriptors the node's proxy has open.
func proxyFDs(t *testing.T, c *testbed.Cluster, node string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(c.ProxyPID(node)) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
