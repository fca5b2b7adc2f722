package redirect_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/redirecttest"
)

func TestNetNSFromFileValidates(t *testing.T) {
	// No root needed: our own namespace files are readable.
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Skipf("no /proc/self/ns/net: %v", err)
	}
	ns, err := redirect.NetNSFromFile(f)
	if err != nil {
		t.Fatalf("NetNSFromFile(own netns): %v", err)
	}
	defer ns.Close()
	cur, err := redirect.CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if !ns.Same(cur) || ns.Inode() != cur.Inode() || ns.Inode() == 0 {
		t.Errorf("own netns from fd (%d) differs from CurrentNetNS (%d)", ns.Inode(), cur.Inode())
	}
	if got := ns.String(); got[:3] != "fd:" {
		t.Errorf("String() of fd netns = %q, want fd:N", got)
	}

	for _, path := range []string{"/proc/self/ns/uts", "/proc/self/status"} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if ns, err := redirect.NetNSFromFile(f); err == nil {
			ns.Close()
			t.Errorf("NetNSFromFile(%s) accepted a non-netns file", path)
		}
		// Ownership was taken: f is closed.
		if _, err := f.Stat(); err == nil {
			t.Errorf("NetNSFromFile(%s) did not close the file on error", path)
		}
	}
	if _, err := redirect.NetNSFromFile(nil); err == nil {
		t.Errorf("NetNSFromFile(nil) = nil error")
	}
	if _, err := redirect.OpenNetNS("/nonexistent/netns"); err == nil {
		t.Errorf("OpenNetNS(missing) = nil error")
	}
}

func TestOriginalDstNotSupported(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := redirect.OriginalDst(a); !errors.Is(err, redirect.ErrNotSupported) {
		t.Errorf("OriginalDst(pipe) = %v, want ErrNotSupported", err)
	}
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := redirect.OriginalDst(u.(*net.UDPConn)); !errors.Is(err, redirect.ErrNotSupported) {
		t.Errorf("OriginalDst(udp) = %v, want ErrNotSupported", err)
	}
}

func TestNetNSDo(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	again, err := redirect.OpenNetNS(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if !again.Same(ns.NS) {
		t.Errorf("two handles to %s are not Same", ns.Path)
	}
	var st unix.Stat_t
	if err := unix.Stat(ns.Path, &st); err != nil {
		t.Fatal(err)
	}
	if ns.NS.Inode() != st.Ino {
		t.Errorf("Inode() = %d, stat says %d", ns.NS.Inode(), st.Ino)
	}
	host, err := redirect.CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if host.Same(ns.NS) {
		t.Fatalf("test netns is the host netns")
	}
	var inside *redirect.NetNS
	err = ns.NS.Do(func() error {
		var err error
		inside, err = redirect.CurrentNetNS()
		return err
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer inside.Close()
	if !inside.Same(ns.NS) {
		t.Errorf("CurrentNetNS inside Do is not the target netns")
	}
	after, err := redirect.CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Same(host) {
		t.Errorf("thread not restored to the host netns after Do")
	}
	wantErr := errors.New("boom")
	if err := ns.NS.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("Do did not return fn's error: %v", err)
	}
}

func TestListenDialInNetNS(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	ns.IP(t, "addr", "add", "10.77.0.1/32", "dev", "lo")
	ctx := context.Background()

	// 10.77.0.1 exists only inside ns.
	var host *redirect.NetNS
	if ln, err := host.Listen(ctx, "tcp", "10.77.0.1:0", redirect.SocketOptions{}); err == nil {
		ln.Close()
		t.Fatalf("10.77.0.1 is bindable in the host netns; test address clash")
	}
	ln, err := ns.NS.Listen(ctx, "tcp", "10.77.0.1:0", redirect.SocketOptions{ReusePort: true, KeepAlive: 30 * time.Second})
	if err != nil {
		t.Fatalf("Listen in netns: %v", err)
	}
	defer ln.Close()
	if v := sockopt(t, ln.(syscall.Conn), unix.SOL_SOCKET, unix.SO_REUSEPORT); v != 1 {
		t.Errorf("SO_REUSEPORT = %d, want 1", v)
	}
	if v := sockopt(t, ln.(syscall.Conn), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); v != 30 {
		t.Errorf("TCP_KEEPIDLE = %d, want 30", v)
	}

	// Accept from another goroutine: the listener is usable outside Do.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := ns.NS.Dial(ctx, "tcp", ln.Addr().String(), redirect.SocketOptions{Mark: 1337, NoDelay: true})
	if err != nil {
		t.Fatalf("Dial in netns: %v", err)
	}
	defer c.Close()
	if v := sockopt(t, c.(syscall.Conn), unix.SOL_SOCKET, unix.SO_MARK); v != 1337 {
		t.Errorf("SO_MARK = %d, want 1337", v)
	}
	if v := sockopt(t, c.(syscall.Conn), unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
		t.Errorf("TCP_NODELAY = %d, want 1", v)
	}
	if v := sockopt(t, c.(syscall.Conn), unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != 0 {
		t.Errorf("SO_KEEPALIVE = %d, want 0 (KeepAlive unset)", v)
	}
	select {
	case s, ok := <-accepted:
		if !ok {
			t.Fatal("accept failed")
		}
		s.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	if _, err := ns.NS.Dial(ctx, "tcp", "localhost:80", redirect.SocketOptions{}); err == nil {
		t.Errorf("Dial in netns with a host name succeeded; want an IP-literal error")
	}
}

func sockopt(t *testing.T, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, opt, gerr)
	}
	return v
}

func TestTransparentDial(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	pod, peer := redirecttest.NewNetNS(t), redirecttest.NewNetNS(t)
	redirecttest.Veth(t, pod, peer, netip.MustParsePrefix("10.66.0.1/24"), netip.MustParsePrefix("10.66.0.2/24"))
	// Replies to the spoofed 10.66.0.99 come back to pod and are delivered
	// locally (as the in-pod fwmark rule does for real traffic).
	peer.IP(t, "route", "add", "10.66.0.99/32", "via", "10.66.0.1")
	pod.IP(t, "rule", "add", "to", "10.66.0.99/32", "lookup", "100")
	pod.IP(t, "route", "add", "local", "default", "dev", "lo", "table", "100")

	ctx := context.Background()
	ln, err := peer.NS.Listen(ctx, "tcp", "10.66.0.2:80", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	spoof := netip.MustParseAddrPort("10.66.0.99:0")

	if c, err := pod.NS.Dial(ctx, "tcp", "10.66.0.2:80", redirect.SocketOptions{LocalAddr: spoof}); err == nil {
		c.Close()
		t.Fatalf("binding a non-local source without Transparent succeeded")
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := pod.NS.Dial(dctx, "tcp", "10.66.0.2:80", redirect.SocketOptions{LocalAddr: spoof, Transparent: true})
	if err != nil {
		t.Fatalf("transparent dial: %v", err)
	}
	defer c.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer s.Close()
	if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != spoof.Addr() {
		t.Errorf("peer sees source %v, want %v", got, spoof.Addr())
	}
}

// TestOriginalDstNAT reads the pre-NAT destination of connections redirected
// by iptables, for an IPv4 listener and for IPv4 and IPv6 clients of a
// dual-stack listener.
func TestOriginalDstNAT(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	for _, tool := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("needs " + tool)
		}
	}
	ns := redirecttest.NewNetNS(t)
	ctx := context.Background()
	ln4, err := ns.NS.Listen(ctx, "tcp4", "127.0.0.1:0", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	ln6, err := ns.NS.Listen(ctx, "tcp", "[::]:0", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	port := func(ln net.Listener) string { return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) }
	ns.Exec(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", "9", "-j", "REDIRECT", "--to-ports", port(ln4))
	ns.Exec(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.2", "--dport", "10", "-j", "REDIRECT", "--to-ports", port(ln6))
	ns.Exec(t, "ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "::1", "--dport", "11", "-j", "REDIRECT", "--to-ports", port(ln6))
	for _, tc := range []struct {
		ln   net.Listener
		dial string
	}{
		{ln4, "127.0.0.1:9"},
		{ln6, "127.0.0.2:10"},
		{ln6, "[::1]:11"},
	} {
		c, err := ns.NS.Dial(ctx, "tcp", tc.dial, redirect.SocketOptions{})
		if err != nil {
			t.Fatalf("dial %s: %v", tc.dial, err)
		}
		s, err := tc.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		got, err := redirect.OriginalDst(s)
		if err != nil {
			t.Errorf("OriginalDst of a connection to %s: %v", tc.dial, err)
		} else if want := netip.MustParseAddrPort(tc.dial); got != want {
			t.Errorf("OriginalDst = %s, want %s", got, want)
		}
		s.Close()
		c.Close()
	}
}
