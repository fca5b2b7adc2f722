package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestLinkLocalNoBypass: with an ALLOW policy for one identity, neither an off-mesh pod on the
// server's node nor an enrolled pod of another identity reaches the server's application over the
// server's IPv6 link-local (fe80::) address, which every pod has on eth0: the in-pod rules
// capture IPv6 as well, so policy sees that traffic too. The allowed identity still gets through
// over the pod address, and the proxy keeps serving.
func TestLinkLocalNoBypass(t *testing.T) {
	c := twoNodes(t)
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node1", ServiceAccount: "server", Enrolled: true})
	sleep := addPod(t, c, testbed.PodSpec{Name: "sleep", Node: "node2", ServiceAccount: "sleep", Enrolled: true})
	other := addPod(t, c, testbed.PodSpec{Name: "other", Node: "node1", ServiceAccount: "other", Enrolled: true})
	outsider := addPod(t, c, testbed.PodSpec{Name: "outsider", Node: "node1"})
	plain := addPod(t, c, testbed.PodSpec{Name: "plain", Node: "node1"}) // off-mesh control

	app := serveDualStack(t, server, 8080)
	serveDualStack(t, plain, 8080)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.SetPolicy(ctx, testbed.PolicySpec{Name: "allow-sleep", Namespace: "default", Action: "Allow",
		Rules: [][]testbed.Match{{{Principals: []string{"cluster.local/ns/default/sa/sleep"}}}}}); err != nil {
		t.Fatal(err)
	}

	// Control: link-local addresses work between two off-mesh pods of the node, so a failure
	// below is the proxy's doing, not the network's.
	plainLL := linkLocalAddr(t, plain)
	if err := tryEcho(outsider, zoned(plainLL, 8080), "control"); err != nil {
		t.Fatalf("off-mesh to off-mesh over link-local %s: %v", plainLL, err)
	}

	serverLL := linkLocalAddr(t, server)
	addr := zoned(serverLL, 8080)
	before := app.accepted.Load()
	for _, p := range []*testbed.Pod{outsider, other} {
		if err := tryEcho(p, addr, "bypass"); err == nil {
			t.Errorf("%s reached the server's app over its link-local address %s", p.Name(), addr)
		}
	}
	if n := app.accepted.Load() - before; n != 0 {
		t.Errorf("the server's app accepted %d connections over link-local; want none", n)
	}
	// The off-mesh client's attempt reached the server's proxy, which refused it.
	line := waitLog(t, c, "node1", "connection failed", serverLL.String())
	t.Logf("server's proxy: %s", line)

	if err := tryEcho(sleep, netip.AddrPortFrom(server.IP(), 8080).String(), "allowed"); err != nil {
		t.Errorf("allowed identity over the pod address: %v", err)
	}
	if err := tryEcho(other, netip.AddrPortFrom(server.IP(), 8080).String(), "denied"); err == nil {
		t.Error("identity not in the ALLOW policy got through over the pod address")
	}
	// The proxy keeps serving: a new enrolled pod on the node is served too.
	late := addPod(t, c, testbed.PodSpec{Name: "late", Node: "node1", ServiceAccount: "sleep", Enrolled: true})
	if err := tryEcho(late, netip.AddrPortFrom(server.IP(), 8080).String(), "still serving"); err != nil {
		t.Errorf("after the link-local attempts: %v", err)
	}
}

// zoned formats a link-local address with the zone "eth0" (the interface name is resolved inside
// the dialing pod) and a port.
func zoned(a netip.Addr, port uint16) string {
	return fmt.Sprintf("[%s%%eth0]:%d", a.WithZone(""), port)
}

// dualStackServer counts the connections an echo server in a pod accepted.
type dualStackServer struct{ accepted atomic.Int32 }

// serveDualStack runs a TCP echo server on [::]:port inside p (unmarked, like an application),
// reachable over IPv4 and IPv6, until the test ends.
func serveDualStack(t *testing.T, p *testbed.Pod, port uint16) *dualStackServer {
	t.Helper()
	ln, err := p.NetNS().Listen(context.Background(), "tcp", fmt.Sprintf("[::]:%d", port), redirect.SocketOptions{})
	if err != nil {
		t.Fatalf("listen in pod %s: %v", p.Name(), err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &dualStackServer{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			go func() {
				defer c.Close()
				echo(c)
			}()
		}
	}()
	return s
}

// linkLocalAddr returns the IPv6 link-local address of eth0 in p once duplicate address detection
// has finished with it.
func linkLocalAddr(t *testing.T, p *testbed.Pod) netip.Addr {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("the kernel has no IPv6")
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(p.NetNS().Fd()))
	if err != nil {
		t.Fatalf("netlink in pod %s: %v", p.Name(), err)
	}
	defer h.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		link, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatalf("pod %s: eth0: %v", p.Name(), err)
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			t.Fatalf("pod %s: addresses of eth0: %v", p.Name(), err)
		}
		var seen []string
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			seen = append(seen, fmt.Sprintf("%s flags %#x", a.IPNet, a.Flags))
			if ok && ip.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return ip
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: no usable link-local address on eth0 (have %s)", p.Name(), strings.Join(seen, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
