package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestPlaintextFloodGivesBackDescriptors: 5 000 concurrent echo connections into one pod through
// its plaintext port (15006) all work, an unrelated pod is served meanwhile, and once they end the
// proxy's descriptors are back near where they were (issue 10, item 8, "fds not returned after a
// flood": a third of them used to be reset, and 5 s after they ended the proxy still held ~13 300
// descriptors, mostly the pipes Go's splice keeps per copy until a garbage collection).
func TestPlaintextFloodGivesBackDescriptors(t *testing.T) {
	const n = 5000
	c := twoNodes(t)
	victim := addPod(t, c, testbed.PodSpec{Name: "victim", Node: "node2", ServiceAccount: "victim", Enrolled: true})
	bystander := addPod(t, c, testbed.PodSpec{Name: "bystander", Node: "node2", ServiceAccount: "bystander", Enrolled: true})
	flooder := addPod(t, c, testbed.PodSpec{Name: "flooder", Node: "node1"}) // off-mesh: plaintext into 15006
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true})
	serve(t, victim, 8080, echo)
	serve(t, bystander, 8080, echo)
	victimAddr := netip.AddrPortFrom(victim.IP(), 8080).String()
	if err := tryEcho(flooder, victimAddr, "warm up"); err != nil {
		t.Fatal(err)
	}
	fds0 := proxyFDs(t, c, "node2")

	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			conn, err := flooder.Dial(ctx, victimAddr)
			if err != nil {
				errs[i] = err
				return
			}
			conns[i] = conn
			errs[i] = roundTripTimeout(conn, fmt.Sprintf("flood %05d", i), 20*time.Second)
		})
	}
	wg.Wait()
	defer func() {
		for _, conn := range conns {
			if conn != nil {
				conn.Close()
			}
		}
	}()
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed < 3 {
				t.Errorf("flood connection %d: %v", i, err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d flood connections failed", failed, n)
	}
	// All of them open: another pod on the node is served, over HBONE.
	if err := tryEcho(client, netip.AddrPortFrom(bystander.IP(), 8080).String(), "meanwhile"); err != nil {
		t.Errorf("another pod during the flood: %v", err)
	}
	during := proxyFDs(t, c, "node2")

	for _, conn := range conns {
		if conn != nil {
			conn.Close()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	after := proxyFDs(t, c, "node2")
	for after > fds0+2*32+10 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		after = proxyFDs(t, c, "node2")
	}
	t.Logf("proxy descriptors: %d before, %d with %d connections open, %d after", fds0, during, n, after)
	if after > fds0+2*32+10 {
		t.Errorf("5 s after the flood the proxy still holds %d descriptors (%d before)", after, fds0)
	}
}
