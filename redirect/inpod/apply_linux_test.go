package inpod

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/redirecttest"
)

// state returns the namespace's iptables, ip6tables, ip rule and
// route state without comments (timestamps) for comparisons.
func state(t *testing.T, ns *redirecttest.NetNS) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{
		{"iptables-save"}, {"ip6tables-save"},
		{"ip", "-4", "rule"}, {"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
	} {
		out := ns.Exec(t, cmd[0], cmd[1:]...)
		for line := range strings.Lines(out) {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(line)
			}
		}
	}
	return b.String()
}

func TestApplyIdempotentAndRemove(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "iptables in a network namespace")
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"default", Config{}},
		{"ipv6_dns", Config{IPv6: true, CaptureDNS: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := redirecttest.NewNetNS(t)
			empty := state(t, ns)
			rs := Rules(tc.cfg)
			if err := Apply(ns.NS, rs); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			first := state(t, ns)
			for _, want := range []string{
				"-A PREROUTING -j ISTIO_PRERT", "-A OUTPUT -j ISTIO_OUTPUT",
				"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001",
				"fwmark 0x111/0xfff lookup 100", "local default dev lo",
			} {
				if !strings.Contains(first, want) {
					t.Errorf("after Apply, state lacks %q:\n%s", want, first)
				}
			}
			if tc.cfg.IPv6 && !strings.Contains(first, "! -d ::1/128 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001") {
				t.Errorf("after Apply, no ip6tables redirect:\n%s", first)
			}
			if err := Apply(ns.NS, rs); err != nil {
				t.Fatalf("second Apply: %v", err)
			}
			if diff := cmp.Diff(first, state(t, ns)); diff != "" {
				t.Errorf("second Apply changed the state (-first +second):\n%s", diff)
			}
			if err := Remove(ns.NS); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			after := state(t, ns)
			if strings.Contains(after, "ISTIO_") || strings.Contains(after, "0x111") || strings.Contains(after, "local default") {
				t.Errorf("after Remove, state still has our rules:\n%s", after)
			}
			// nf_tables keeps the (now empty) tables that Apply created; compare rules only.
			if diff := cmp.Diff(rulesOnly(empty), rulesOnly(after)); diff != "" {
				t.Errorf("Remove did not restore the original rules (-before +after):\n%s", diff)
			}
			if err := Remove(ns.NS); err != nil {
				t.Errorf("Remove when nothing is installed: %v", err)
			}
		})
	}
}

func rulesOnly(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(line, "*") && !strings.HasPrefix(line, ":") && line != "COMMIT\n" {
			b.WriteString(line)
		}
	}
	return b.String()
}

// accept waits up to d for one connection on ln.
func accept(t *testing.T, ln net.Listener, d time.Duration) (net.Conn, error) {
	t.Helper()
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	return ln.Accept()
}

func listen(t *testing.T, ns *redirect.NetNS, addr string) net.Listener {
	t.Helper()
	ln, err := ns.Listen(context.Background(), "tcp", addr, redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestRedirection checks the rules with real traffic between a "pod"
// namespace (rules applied) and a "peer" namespace over a veth pair.
func TestRedirection(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "iptables and veth in network namespaces")
	pod, peer := redirecttest.NewNetNS(t), redirecttest.NewNetNS(t)
	redirecttest.Veth(t, pod, peer, netip.MustParsePrefix("10.66.0.1/24"), netip.MustParsePrefix("10.66.0.2/24"))
	if err := Apply(pod.NS, Rules(Config{})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	outbound := listen(t, pod.NS, "0.0.0.0:15001")
	inbound := listen(t, pod.NS, "[::]:15006") // dual-stack: exercises the IPv4-mapped path
	hbone := listen(t, pod.NS, "10.66.0.1:15008")
	server := listen(t, peer.NS, "10.66.0.2:80")
	ctx := context.Background()

	t.Run("outbound redirected", func(t *testing.T) {
		c, err := pod.NS.Dial(ctx, "tcp", "10.66.0.2:80", redirect.SocketOptions{})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		got, err := accept(t, outbound, 5*time.Second)
		if err != nil {
			t.Fatalf("no connection on 15001: %v", err)
		}
		defer got.Close()
		dst, err := redirect.OriginalDst(got)
		if err != nil {
			t.Fatalf("OriginalDst: %v", err)
		}
		if want := netip.MustParseAddrPort("10.66.0.2:80"); dst != want {
			t.Errorf("OriginalDst = %v, want %v", dst, want)
		}
	})
	t.Run("marked not redirected", func(t *testing.T) {
		c, err := pod.NS.Dial(ctx, "tcp", "10.66.0.2:80", redirect.SocketOptions{Mark: 1337})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		got, err := accept(t, server, 5*time.Second)
		if err != nil {
			t.Fatalf("marked connection did not reach the peer: %v", err)
		}
		got.Close()
		if c2, err := accept(t, outbound, 100*time.Millisecond); err == nil {
			c2.Close()
			t.Errorf("marked connection was also redirected to 15001")
		}
	})
	t.Run("inbound redirected", func(t *testing.T) {
		c, err := peer.NS.Dial(ctx, "tcp", "10.66.0.1:8080", redirect.SocketOptions{})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		got, err := accept(t, inbound, 5*time.Second)
		if err != nil {
			t.Fatalf("no connection on 15006: %v", err)
		}
		defer got.Close()
		dst, err := redirect.OriginalDst(got)
		if err != nil {
			t.Fatalf("OriginalDst: %v", err)
		}
		if want := netip.MustParseAddrPort("10.66.0.1:8080"); dst != want {
			t.Errorf("OriginalDst = %v, want %v", dst, want)
		}
	})
	t.Run("hbone port not redirected", func(t *testing.T) {
		c, err := peer.NS.Dial(ctx, "tcp", "10.66.0.1:15008", redirect.SocketOptions{})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		got, err := accept(t, hbone, 5*time.Second)
		if err != nil {
			t.Fatalf("no connection on 15008: %v", err)
		}
		got.Close()
	})
}

func TestRedirectionIPv6(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "ip6tables and veth in network namespaces")
	pod, peer := redirecttest.NewNetNS(t), redirecttest.NewNetNS(t)
	redirecttest.Veth(t, pod, peer, netip.MustParsePrefix("fd66::1/64"), netip.MustParsePrefix("fd66::2/64"))
	if err := Apply(pod.NS, Rules(Config{IPv6: true})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	outbound := listen(t, pod.NS, "[::]:15001")
	inbound := listen(t, pod.NS, "[::]:15006")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		from *redirect.NetNS
		dst  string
		ln   net.Listener
	}{
		{"outbound", pod.NS, "[fd66::2]:80", outbound},
		{"inbound", peer.NS, "[fd66::1]:8080", inbound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.from.Dial(ctx, "tcp", tc.dst, redirect.SocketOptions{})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			got, err := accept(t, tc.ln, 5*time.Second)
			if err != nil {
				t.Fatalf("not redirected: %v", err)
			}
			defer got.Close()
			dst, err := redirect.OriginalDst(got)
			if err != nil {
				t.Fatalf("OriginalDst: %v", err)
			}
			if want := netip.MustParseAddrPort(tc.dst); dst != want {
				t.Errorf("OriginalDst = %v, want %v", dst, want)
			}
		})
	}
}
