package e2e

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestPassthroughClosedPortNeverLoops: many connections from a mesh pod to a closed port of an
// address outside the mesh all fail, and none is ever carried: before issue 10 some of the
// proxy's passthrough dials were captured by the conntrack entry of an earlier, reset connection
// of the pod to the same address and port, so they reached the proxy's own 15001 listener and
// were logged as complete connections to a port that refuses everything.
func TestPassthroughClosedPortNeverLoops(t *testing.T) {
	const n = 3000
	c := twoNodes(t)
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true})
	outside := addPod(t, c, testbed.PodSpec{Name: "outside", Node: "node2"}) // off-mesh, nothing listens
	serve(t, outside, 8080, echo)
	addr := netip.AddrPortFrom(outside.IP(), 9999).String()

	connected := 0
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := client.Dial(ctx, addr)
		cancel()
		if err != nil {
			continue // refused at once: the proxy reset the redirected connection
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			connected++
		}
		conn.Close()
	}
	if connected > 0 {
		t.Errorf("%d of %d connections to a closed port delivered data", connected, n)
	}
	// Every one was logged as failed; none as complete, and none arrived at the proxy as a
	// connection from the pod's own address to itself.
	b, err := os.ReadFile(c.ProxyLog("node1"))
	if err != nil {
		t.Fatal(err)
	}
	complete, failed := 0, 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "dst.addr="+addr) {
			continue
		}
		switch {
		case strings.Contains(line, `msg="connection complete"`):
			complete++
			if complete <= 3 {
				t.Errorf("logged as complete: %s", line)
			}
		case strings.Contains(line, `msg="connection failed"`):
			failed++
		}
	}
	// A looped dial shows as one more connection to the address, accepted from the pod's own
	// address: more log lines than attempts.
	if complete > 0 || failed > n || failed < n/2 {
		t.Errorf("%d connections logged complete and %d failed, for %d attempts: want none complete, one failed line each at most", complete, failed, n)
	}
	// The pod's other traffic is unaffected.
	if err := tryEcho(client, netip.AddrPortFrom(outside.IP(), 8080).String(), "still fine"); err != nil {
		t.Errorf("passthrough to an open port afterwards: %v", err)
	}
}
