package inpod

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
		{"ipv6_refuse_dns", Config{IPv6: IPv6Refuse, CaptureDNS: true}},
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
			want6 := "! -d ::1/128 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001"
			if tc.cfg.IPv6 == IPv6Refuse {
				want6 = "-A ISTIO_OUTPUT -p tcp -j REJECT --reject-with tcp-reset"
			}
			if !strings.Contains(first, want6) {
				t.Errorf("after Apply, no ip6tables rule %q:\n%s", want6, first)
			}
			// The rules are written as iptables-save prints them.
			for line := range strings.Lines(rs.IPv4Restore + rs.IPv6Restore) {
				if strings.HasPrefix(line, "-A ") && !strings.Contains(first, line) {
					t.Errorf("iptables-save does not print rule %q as written", strings.TrimSpace(line))
				}
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

// dialAccepted dials dst from ns with o and waits for ln to accept the connection, failing the test
// with notThere if it does not; it returns both ends, closed when the test ends.
func dialAccepted(t *testing.T, ctx context.Context, ns *redirect.NetNS, dst string, o redirect.SocketOptions, ln net.Listener, notThere string) (net.Conn, net.Conn) {
	t.Helper()
	c, err := ns.Dial(ctx, "tcp", dst, o)
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	got, err := accept(t, ln, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", notThere, err)
	}
	t.Cleanup(func() { got.Close() })
	return c, got
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
		_, got := dialAccepted(t, ctx, pod.NS, "10.66.0.2:80", redirect.SocketOptions{}, outbound, "no connection on 15001")
		dst, err := redirect.OriginalDst(got)
		if err != nil {
			t.Fatalf("OriginalDst: %v", err)
		}
		if want := netip.MustParseAddrPort("10.66.0.2:80"); dst != want {
			t.Errorf("OriginalDst = %v, want %v", dst, want)
		}
	})
	t.Run("marked not redirected", func(t *testing.T) {
		dialAccepted(t, ctx, pod.NS, "10.66.0.2:80", redirect.SocketOptions{Mark: 1337}, server, "marked connection did not reach the peer")
		if c2, err := accept(t, outbound, 100*time.Millisecond); err == nil {
			c2.Close()
			t.Errorf("marked connection was also redirected to 15001")
		}
	})
	t.Run("inbound redirected", func(t *testing.T) {
		_, got := dialAccepted(t, ctx, peer.NS, "10.66.0.1:8080", redirect.SocketOptions{}, inbound, "no connection on 15006")
		dst, err := redirect.OriginalDst(got)
		if err != nil {
			t.Fatalf("OriginalDst: %v", err)
		}
		if want := netip.MustParseAddrPort("10.66.0.1:8080"); dst != want {
			t.Errorf("OriginalDst = %v, want %v", dst, want)
		}
	})
	t.Run("hbone port not redirected", func(t *testing.T) {
		dialAccepted(t, ctx, peer.NS, "10.66.0.1:15008", redirect.SocketOptions{}, hbone, "no connection on 15008")
	})
}

func TestRedirectionIPv6(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "ip6tables and veth in network namespaces")
	pod, peer := redirecttest.NewNetNS(t), redirecttest.NewNetNS(t)
	redirecttest.Veth(t, pod, peer, netip.MustParsePrefix("fd66::1/64"), netip.MustParsePrefix("fd66::2/64"))
	if err := Apply(pod.NS, Rules(Config{})); err != nil {
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
			_, got := dialAccepted(t, ctx, tc.from, tc.dst, redirect.SocketOptions{}, tc.ln, "not redirected")
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

// linkLocal returns the IPv6 link-local address of dev in ns once duplicate
// address detection is done with it.
func linkLocal(t *testing.T, ns *redirecttest.NetNS, dev string) netip.Addr {
	t.Helper()
	h, err := netlinkHandle(ns.NS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		link, err := h.LinkByName(dev)
		if err != nil {
			t.Fatalf("%s: %v", dev, err)
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			t.Fatalf("addresses of %s: %v", dev, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if ok && ip.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return ip
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usable link-local address on %s: %v", dev, addrs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedirectionIPv6LinkLocal checks with real traffic what the default
// rules do with fe80:: addresses: inbound connections are redirected to
// 15006 (with the link-local original destination); the app's outbound ones
// cannot be redirected (the socket is bound to the interface) and are reset;
// the proxy's marked ones go out.
func TestRedirectionIPv6LinkLocal(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "ip6tables and veth in network namespaces")
	pod, peer := redirecttest.NewNetNS(t), redirecttest.NewNetNS(t)
	redirecttest.Veth(t, pod, peer, netip.MustParsePrefix("10.66.0.1/24"), netip.MustParsePrefix("10.66.0.2/24"))
	if err := Apply(pod.NS, Rules(Config{})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	outbound := listen(t, pod.NS, "[::]:15001")
	inbound := listen(t, pod.NS, "[::]:15006")
	app := listen(t, pod.NS, "[::]:8080")
	peerSrv := listen(t, peer.NS, "[::]:80")
	podLL, peerLL := linkLocal(t, pod, "vtest0"), linkLocal(t, peer, "vtest1")
	ctx := context.Background()

	t.Run("inbound redirected", func(t *testing.T) {
		dst := "[" + podLL.String() + "%vtest1]:8080"
		c, err := peer.NS.Dial(ctx, "tcp", dst, redirect.SocketOptions{})
		if err != nil {
			t.Fatalf("dial %s: %v", dst, err)
		}
		defer c.Close()
		got, err := accept(t, inbound, 5*time.Second)
		if err != nil {
			t.Fatalf("%s not redirected: %v", dst, err)
		}
		defer got.Close()
		orig, err := redirect.OriginalDst(got)
		if err != nil {
			t.Fatalf("OriginalDst: %v", err)
		}
		if orig := netip.AddrPortFrom(orig.Addr().WithZone(""), orig.Port()); orig != netip.AddrPortFrom(podLL, 8080) {
			t.Errorf("OriginalDst = %v, want %v", orig, netip.AddrPortFrom(podLL, 8080))
		}
		if c2, err := accept(t, app, 100*time.Millisecond); err == nil {
			c2.Close()
			t.Errorf("%s also reached the app directly", dst)
		}
	})
	dst := "[" + peerLL.String() + "%vtest0]:80"
	t.Run("outbound reset", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, err := pod.NS.Dial(dctx, "tcp", dst, redirect.SocketOptions{})
		if err == nil {
			c.Close()
			t.Fatalf("dial %s succeeded, want it reset", dst)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s: %v, want connection refused (a reset)", dst, err)
		}
		for _, ln := range []net.Listener{peerSrv, outbound} {
			if c2, err := accept(t, ln, 100*time.Millisecond); err == nil {
				c2.Close()
				t.Errorf("%s reached %s", dst, ln.Addr())
			}
		}
	})
	t.Run("proxy's marked connection", func(t *testing.T) {
		c, got := dialAccepted(t, ctx, pod.NS, dst, redirect.SocketOptions{Mark: 1337}, peerSrv, "marked connection did not reach the peer")
		roundTrip(t, c, got)
	})
	t.Run("app to its own link-local address", func(t *testing.T) {
		dialAccepted(t, ctx, pod.NS, "["+podLL.String()+"%vtest0]:8080", redirect.SocketOptions{}, app, "not accepted by the app")
	})
}

// TestRefuseIPv6 checks with real traffic that IPv6Refuse resets IPv6 TCP
// to and from the pod, global and link-local alike, except the proxy's
// marked connections and loopback, while IPv4 is still captured.
func TestRefuseIPv6(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "ip6tables and veth in network namespaces")
	pod, peer := redirecttest.NewNetNS(t), redirecttest.NewNetNS(t)
	redirecttest.Veth(t, pod, peer, netip.MustParsePrefix("fd66::1/64"), netip.MustParsePrefix("fd66::2/64"))
	pod.IP(t, "addr", "add", "10.66.0.1/24", "dev", "vtest0")
	peer.IP(t, "addr", "add", "10.66.0.2/24", "dev", "vtest1")
	if err := Apply(pod.NS, Rules(Config{IPv6: IPv6Refuse})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	app := listen(t, pod.NS, "[::]:8080")
	inbound := listen(t, pod.NS, "[::]:15006")
	peerSrv := listen(t, peer.NS, "[::]:80")
	podLL, peerLL := linkLocal(t, pod, "vtest0"), linkLocal(t, peer, "vtest1")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		from *redirect.NetNS
		dst  string
		ln   net.Listener
	}{
		{"inbound link-local", peer.NS, "[" + podLL.String() + "%vtest1]:8080", app},
		{"inbound global", peer.NS, "[fd66::1]:8080", app},
		{"inbound to the proxy port", peer.NS, "[fd66::1]:15006", inbound},
		{"outbound link-local", pod.NS, "[" + peerLL.String() + "%vtest0]:80", peerSrv},
		{"outbound global", pod.NS, "[fd66::2]:80", peerSrv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			c, err := tc.from.Dial(dctx, "tcp", tc.dst, redirect.SocketOptions{})
			if err == nil {
				c.Close()
				t.Fatalf("dial %s succeeded, want it refused", tc.dst)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial %s: %v, want connection refused (a reset)", tc.dst, err)
			}
			if c2, err := accept(t, tc.ln, 100*time.Millisecond); err == nil {
				c2.Close()
				t.Errorf("%s reached its listener", tc.dst)
			}
		})
	}
	t.Run("proxy's marked connection", func(t *testing.T) {
		c, got := dialAccepted(t, ctx, pod.NS, "["+peerLL.String()+"%vtest0]:80", redirect.SocketOptions{Mark: 1337}, peerSrv, "marked connection did not reach the peer")
		roundTrip(t, c, got) // the replies (unmarked) get through too
	})
	t.Run("loopback", func(t *testing.T) {
		dialAccepted(t, ctx, pod.NS, "[::1]:8080", redirect.SocketOptions{}, app, "loopback connection not accepted")
	})
	t.Run("IPv4 still captured", func(t *testing.T) {
		dialAccepted(t, ctx, peer.NS, "10.66.0.1:8080", redirect.SocketOptions{}, inbound, "IPv4 not redirected to 15006")
	})
}

// roundTrip sends a byte each way between the two ends of a connection.
func roundTrip(t *testing.T, a, b net.Conn) {
	t.Helper()
	for _, p := range [][2]net.Conn{{a, b}, {b, a}} {
		p[1].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := p[0].Write([]byte{'x'}); err != nil {
			t.Fatalf("write: %v", err)
		}
		if _, err := io.ReadFull(p[1], make([]byte, 1)); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
}

// TestApplySwitchesIPv6Mode: applying one mode over the other leaves
// exactly the rules of the new mode.
func TestApplySwitchesIPv6Mode(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "iptables in a network namespace")
	for _, tc := range []struct{ from, to IPv6Mode }{{IPv6Refuse, IPv6Capture}, {IPv6Capture, IPv6Refuse}} {
		t.Run(tc.from.String()+"_to_"+tc.to.String(), func(t *testing.T) {
			fresh := redirecttest.NewNetNS(t)
			if err := Apply(fresh.NS, Rules(Config{IPv6: tc.to})); err != nil {
				t.Fatal(err)
			}
			ns := redirecttest.NewNetNS(t)
			if err := Apply(ns.NS, Rules(Config{IPv6: tc.from})); err != nil {
				t.Fatal(err)
			}
			if err := Apply(ns.NS, Rules(Config{IPv6: tc.to})); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(rulesOnly(state(t, fresh)), rulesOnly(state(t, ns))); diff != "" {
				t.Errorf("rules after switching differ from a fresh Apply (-fresh +switched):\n%s", diff)
			}
		})
	}
}

// withPath runs the rest of the test with PATH holding only the named
// programs (links to the real ones).
func withPath(t *testing.T, progs ...string) {
	t.Helper()
	dir := t.TempDir()
	for _, p := range progs {
		real, err := exec.LookPath(p)
		if err != nil {
			t.Skipf("no %s: %v", p, err)
		}
		if err := os.Symlink(real, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
}

// TestApplyWithoutIPv6 covers namespaces whose IPv6 cannot be ruled: with
// IPv6 disabled and no ip6tables, Apply installs IPv4 and skips IPv6; with
// IPv6 enabled and no ip6tables, it fails and says why; with IPv6 disabled
// but ip6tables present, the IPv6 rules go in anyway.
func TestApplyWithoutIPv6(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "iptables in a network namespace")
	disable := func(ns *redirecttest.NetNS) {
		for _, k := range []string{"all", "default", "lo"} {
			ns.Exec(t, "sysctl", "-q", "-w", "net.ipv6.conf."+k+".disable_ipv6=1")
		}
	}
	ip6save, err := exec.LookPath("ip6tables-save")
	if err != nil {
		t.Skipf("no ip6tables-save: %v", err)
	}
	disabled, enabled, disabledWithTools := redirecttest.NewNetNS(t), redirecttest.NewNetNS(t), redirecttest.NewNetNS(t)
	disable(disabled)
	disable(disabledWithTools)

	if err := Apply(disabledWithTools.NS, Rules(Config{})); err != nil {
		t.Fatalf("Apply with IPv6 disabled: %v", err)
	}
	if save := disabledWithTools.Exec(t, ip6save); !strings.Contains(save, "REDIRECT --to-ports 15001") {
		t.Errorf("IPv6 disabled by sysctl only: no ip6tables rules:\n%s", save)
	}

	withPath(t, "iptables", "iptables-save", "iptables-restore", "ip")
	if err := Apply(disabled.NS, Rules(Config{})); err != nil {
		t.Fatalf("Apply without IPv6 and ip6tables: %v", err)
	}
	if save := disabled.Exec(t, "iptables-save"); !strings.Contains(save, "REDIRECT --to-ports 15001") {
		t.Errorf("no IPv4 rules:\n%s", save)
	}
	if err := Remove(disabled.NS); err != nil {
		t.Errorf("Remove without IPv6 and ip6tables: %v", err)
	}

	err = Apply(enabled.NS, Rules(Config{}))
	if err == nil || !strings.Contains(err.Error(), "ip6tables") || !strings.Contains(err.Error(), "has IPv6") {
		t.Errorf("Apply with IPv6 but no ip6tables = %v, want an error naming ip6tables", err)
	}
	if err := Remove(enabled.NS); err != nil {
		t.Errorf("Remove with IPv6 but no ip6tables: %v", err)
	}
}
