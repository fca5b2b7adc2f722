package e2e

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// controlPlaneCluster is a two-node cluster whose proxies get workloads, policies and
// certificates from the testbed's fake istiod (delta xDS and the Istio CA over gRPC).
func controlPlaneCluster(t *testing.T) *testbed.Cluster {
	t.Helper()
	return newCluster(t, testbed.Config{Nodes: []testbed.NodeSpec{{Name: "node1"}, {Name: "node2"}}, ControlPlane: true})
}

// tryEcho connects from p to addr and expects msg echoed back; any failure, including a
// refused or reset connection, is returned.
func tryEcho(p *testbed.Pod, addr, msg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return roundTrip(c, msg)
}

// roundTrip writes msg on c and expects it echoed back.
func roundTrip(c net.Conn, msg string) error {
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return err
}

// TestAuthorizationPolicy: with an ALLOW policy for one client identity, that client gets
// through and another is refused, over HBONE and in plaintext; a connection opened before the
// policy existed is closed when the policy arrives; a DENY policy wins over the ALLOW.
func TestAuthorizationPolicy(t *testing.T) {
	c := controlPlaneCluster(t)
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", ServiceAccount: "server", Enrolled: true})
	sleep := addPod(t, c, testbed.PodSpec{Name: "sleep", Node: "node1", ServiceAccount: "sleep", Enrolled: true})
	other := addPod(t, c, testbed.PodSpec{Name: "other", Node: "node1", ServiceAccount: "other", Enrolled: true})
	outsider := addPod(t, c, testbed.PodSpec{Name: "outsider", Node: "node1"})
	serve(t, server, 8080, echo)
	addr := netip.AddrPortFrom(server.IP(), 8080).String()

	// Before any policy everyone gets through; this connection stays open.
	early := dial(t, other, addr)
	if err := roundTrip(early, "before"); err != nil {
		t.Fatalf("no policy yet: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.SetPolicy(ctx, testbed.PolicySpec{Name: "allow-sleep", Namespace: "default", Action: "Allow",
		Rules: [][]testbed.Match{{{Principals: []string{"cluster.local/ns/default/sa/sleep"}}}}}); err != nil {
		t.Fatal(err)
	}

	// The open connection of the client the policy does not allow is closed.
	early.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := early.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("connection opened before the policy: read %d bytes, %v; want it closed", n, err)
	}
	waitLog(t, c, "node2", "connection closed due to policy change", "allow policies exist, but none allowed")

	if err := tryEcho(sleep, addr, "allowed"); err != nil {
		t.Errorf("allowed identity: %v", err)
	}
	if err := tryEcho(other, addr, "denied"); err == nil {
		t.Error("identity not in the ALLOW policy got through")
	}
	waitLog(t, c, "node2", "connection failed", "src.identity=spiffe://cluster.local/ns/default/sa/other",
		"connection closed due to policy rejection: allow policies exist, but none allowed")
	if err := tryEcho(outsider, addr, "plaintext"); err == nil {
		t.Error("plaintext client got through an identity-only ALLOW policy")
	}

	// DENY beats ALLOW.
	if err := c.SetPolicy(ctx, testbed.PolicySpec{Name: "deny-sleep-8080", Namespace: "default", Action: "Deny",
		Rules: [][]testbed.Match{{{Principals: []string{"cluster.local/ns/default/sa/sleep"}, DestinationPorts: []uint16{8080}}}}}); err != nil {
		t.Fatal(err)
	}
	if err := tryEcho(sleep, addr, "now denied"); err == nil {
		t.Error("identity matched by a DENY policy got through")
	}
	waitLog(t, c, "node2", "explicitly denied by: default/deny-sleep-8080")

	// Removing both policies opens the door again.
	if err := c.DeletePolicy(ctx, "default", "deny-sleep-8080"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeletePolicy(ctx, "default", "allow-sleep"); err != nil {
		t.Fatal(err)
	}
	if err := tryEcho(other, addr, "open again"); err != nil {
		t.Errorf("after deleting the policies: %v", err)
	}
}
