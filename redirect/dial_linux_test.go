package redirect_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/redirecttest"
)

// acceptAll accepts and closes connections on ln until it is closed.
func acceptAll(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// acceptingLoopback listens on 127.0.0.1 in ns with acceptAll behind it, until the test ends.
func acceptingLoopback(t *testing.T, ns *redirect.NetNS) net.Listener {
	t.Helper()
	ln, err := ns.Listen(context.Background(), "tcp", "127.0.0.1:0", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	acceptAll(ln)
	return ln
}

func TestDialIPv6AndFamilies(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	ctx := context.Background()
	ln, err := ns.NS.Listen(ctx, "tcp6", "[::1]:0", redirect.SocketOptions{})
	if err != nil {
		t.Skipf("no IPv6 loopback in the test netns: %v", err)
	}
	defer ln.Close()
	acceptAll(ln)
	addr := ln.Addr().String()
	for _, network := range []string{"tcp", "tcp6"} {
		c, err := ns.NS.Dial(ctx, network, addr, redirect.SocketOptions{Mark: 7})
		if err != nil {
			t.Fatalf("Dial(%s, %s): %v", network, addr, err)
		}
		if got := c.RemoteAddr().String(); got != addr {
			t.Errorf("Dial(%s) RemoteAddr = %s, want %s", network, got, addr)
		}
		if v := sockopt(t, c.(syscall.Conn), unix.SOL_SOCKET, unix.SO_MARK); v != 7 {
			t.Errorf("Dial(%s) SO_MARK = %d, want 7", network, v)
		}
		c.Close()
	}
	if c, err := ns.NS.Dial(ctx, "tcp4", addr, redirect.SocketOptions{}); err == nil {
		c.Close()
		t.Errorf("Dial(tcp4, %s) succeeded", addr)
	}
	if c, err := ns.NS.Dial(ctx, "tcp6", "127.0.0.1:80", redirect.SocketOptions{}); err == nil {
		c.Close()
		t.Errorf("Dial(tcp6, 127.0.0.1:80) succeeded")
	}
}

func TestDialUDPInNetNS(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	ns.IP(t, "addr", "add", "10.77.0.1/32", "dev", "lo")
	var pc net.PacketConn
	if err := ns.NS.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", "10.77.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := ns.NS.Dial(context.Background(), "udp", pc.LocalAddr().String(), redirect.SocketOptions{})
	if err != nil {
		t.Fatalf("Dial udp: %v", err)
	}
	defer c.Close()
	if _, ok := c.(*net.UDPConn); !ok {
		t.Fatalf("Dial udp returned %T", c)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	nr, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read datagram: %v", err)
	}
	if string(buf[:nr]) != "ping" || from.String() != c.LocalAddr().String() {
		t.Errorf("got %q from %s, want ping from %s", buf[:nr], from, c.LocalAddr())
	}
}

func TestDialOptionsAfterConnect(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	ctx := context.Background()
	ln := acceptingLoopback(t, ns.NS)
	type opt struct {
		name       string
		level, opt int
		want       int
	}
	for _, tc := range []struct {
		o    redirect.SocketOptions
		want []opt
	}{
		{redirect.SocketOptions{KeepAlive: 30 * time.Second}, []opt{
			{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 0},
			{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 30},
			{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 30},
		}},
		{redirect.SocketOptions{NoDelay: true, Mark: 1337}, []opt{
			{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
			{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0},
			{"SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, 1337},
		}},
	} {
		c, err := ns.NS.Dial(ctx, "tcp", ln.Addr().String(), tc.o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, o := range tc.want {
			if v := sockopt(t, c.(syscall.Conn), o.level, o.opt); v != o.want {
				t.Errorf("%+v: %s = %d, want %d", tc.o, o.name, v, o.want)
			}
		}
		if fl, err := unix.FcntlInt(uintptr(fdOf(t, c)), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("dialed fd flags %#x (%v), want FD_CLOEXEC", fl, err)
		}
		if fl, err := unix.FcntlInt(uintptr(fdOf(t, c)), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("dialed fd status flags %#x (%v), want O_NONBLOCK", fl, err)
		}
		if got, want := c.RemoteAddr().String(), ln.Addr().String(); got != want {
			t.Errorf("RemoteAddr = %s, want %s", got, want)
		}
		if la, ok := c.LocalAddr().(*net.TCPAddr); !ok || la.Port == 0 || !la.IP.IsLoopback() {
			t.Errorf("LocalAddr = %v, want a loopback address with a port", c.LocalAddr())
		}
	}
}

func fdOf(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func TestDialErrorsMatchSetnsPath(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	ctx := context.Background()
	addr := "127.0.0.1:1" // nothing listens: refused
	_, errThread := ns.NS.Dial(ctx, "tcp", addr, redirect.SocketOptions{})
	_, errSetns := redirect.DialSetns(ns.NS, ctx, "tcp", addr, redirect.SocketOptions{})
	if errThread == nil || errSetns == nil {
		t.Fatalf("dial to a closed port: thread %v, setns %v; want errors", errThread, errSetns)
	}
	if errThread.Error() != errSetns.Error() {
		t.Errorf("error text differs:\n thread: %v\n setns:  %v", errThread, errSetns)
	}
	if !errors.Is(errThread, syscall.ECONNREFUSED) {
		t.Errorf("error %v is not ECONNREFUSED", errThread)
	}
	var op *net.OpError
	if !errors.As(errThread, &op) || op.Op != "dial" {
		t.Errorf("error %v does not wrap a dial *net.OpError", errThread)
	}
}

func TestDialContextEnds(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	// Nobody answers ARP for 10.99.0.2, so the SYN is never sent.
	peer := redirecttest.NewNetNS(t)
	redirecttest.Veth(t, ns, peer, netip.MustParsePrefix("10.99.0.1/24"), netip.MustParsePrefix("10.99.0.3/24"))
	const addr = "10.99.0.2:80"

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := ns.NS.Dial(ctx, "tcp", addr, redirect.SocketOptions{})
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Dial past deadline = %v, want a timeout wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %v with a 100ms deadline", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	if _, err := ns.NS.Dial(ctx, "tcp", addr, redirect.SocketOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with cancelled ctx = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %v after cancel at 50ms", d)
	}
	if _, err := ns.NS.Dial(ctx, "tcp", addr, redirect.SocketOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with a done ctx = %v, want context.Canceled", err)
	}

	// ConnectTimeout without a context deadline, and shorter than the context's.
	for _, ctxTimeout := range []time.Duration{0, time.Hour} {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if ctxTimeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, ctxTimeout)
		}
		start = time.Now()
		_, err := ns.NS.Dial(ctx, "tcp", addr, redirect.SocketOptions{ConnectTimeout: 100 * time.Millisecond})
		cancel()
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("Dial past ConnectTimeout (context timeout %v) = %v, want an i/o timeout", ctxTimeout, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Dial took %v with a 100ms ConnectTimeout", d)
		}
	}
}

// threadsIn counts this process's threads inside the namespace with inode ino.
func threadsIn(t *testing.T, ino uint64) int {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range tasks {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Ino == ino {
			n++
		}
	}
	return n
}

func TestDialSocketThreadLifetime(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	h, err := redirect.OpenNetNS(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ln, err := h.Listen(ctx, "tcp", "127.0.0.1:0", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acceptAll(ln)
	if n := threadsIn(t, h.Inode()); n != 0 {
		t.Fatalf("%d threads in the netns before any Dial", n)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := h.Dial(ctx, "tcp", ln.Addr().String(), redirect.SocketOptions{})
			if err != nil {
				errs <- err
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Dial: %v", err)
	}
	if n := threadsIn(t, h.Inode()); n != 1 {
		t.Errorf("%d threads in the netns after Dial, want 1 (the socket thread)", n)
	}

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for threadsIn(t, ns.NS.Inode()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("socket thread still in the netns after Close")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c, err := h.Dial(ctx, "tcp", ln.Addr().String(), redirect.SocketOptions{}); err == nil {
		c.Close()
		t.Errorf("Dial after Close succeeded")
	}
}

func TestDialUnixUsesNetNS(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	ctx := context.Background()
	// Abstract unix sockets are per network namespace.
	name := "@zt-dial-test-" + filepath.Base(ns.Path)
	ln, err := ns.NS.Listen(ctx, "unix", name, redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acceptAll(ln)
	c, err := ns.NS.Dial(ctx, "unix", name, redirect.SocketOptions{})
	if err != nil {
		t.Fatalf("Dial unix in netns: %v", err)
	}
	c.Close()
	var host *redirect.NetNS
	if c, err := host.Dial(ctx, "unix", name, redirect.SocketOptions{}); err == nil {
		c.Close()
		t.Errorf("abstract socket %s reachable from the host netns", name)
	}
}

// BenchmarkNetNSDial compares a TCP dial-and-close to a listener inside a
// test namespace: "thread" is Dial (socket thread + poller connect),
// "setns" the former path (setns around the whole dial).
func BenchmarkNetNSDial(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creating network namespaces")
	}
	ns := redirecttest.NewNetNS(b)
	ln, err := ns.NS.Listen(context.Background(), "tcp", "127.0.0.1:0", redirect.SocketOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	acceptAll(ln)
	addr := ln.Addr().String()
	// As the proxy dials: with a connect timeout.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	o := redirect.SocketOptions{Mark: 1337, NoDelay: true, KeepAlive: 180 * time.Second}
	for _, bc := range []struct {
		name string
		dial func(context.Context, string, string, redirect.SocketOptions) (net.Conn, error)
	}{
		{"thread", ns.NS.Dial},
		{"setns", func(ctx context.Context, network, addr string, o redirect.SocketOptions) (net.Conn, error) {
			return redirect.DialSetns(ns.NS, ctx, network, addr, o)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var ru0, ru1 unix.Rusage
			unix.Getrusage(unix.RUSAGE_SELF, &ru0)
			defer func() {
				unix.Getrusage(unix.RUSAGE_SELF, &ru1)
				cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, err := bc.dial(ctx, "tcp", addr, o)
					if err != nil {
						b.Error(err)
						return
					}
					// RST instead of FIN: no client TIME_WAIT, whose
					// ephemeral-port search would dominate the numbers.
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			})
		})
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestDialSpareSocketsClosed(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	ctx := context.Background()
	ln := acceptingLoopback(t, ns.NS)
	before := openFDs(t)
	h, err := redirect.OpenNetNS(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	// More dials than the thread keeps spares: some take a spare, some ask the thread.
	for range 20 {
		c, err := h.Dial(ctx, "tcp", ln.Addr().String(), redirect.SocketOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	u, err := h.Dial(ctx, "udp", "127.0.0.1:53", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err) // a UDP "dial" sends nothing; it leaves spares of another kind
	}
	u.Close()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	// The accepted side closes asynchronously; the spares are closed by Close.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := openFDs(t)
		if n <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d fds open after Close, %d before the first Dial: spare sockets leaked", n, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DialAddrPort connects as Dial does, and fails with the same error text.
func TestDialAddrPort(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "creating network namespaces")
	ns := redirecttest.NewNetNS(t)
	ctx := context.Background()
	ln := acceptingLoopback(t, ns.NS)
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, network := range []string{"tcp", "tcp4"} {
		c, err := ns.NS.DialAddrPort(ctx, network, ap, redirect.SocketOptions{NoDelay: true})
		if err != nil {
			t.Fatalf("DialAddrPort %s %s: %v", network, ap, err)
		}
		if got := c.RemoteAddr().String(); got != ap.String() {
			t.Errorf("RemoteAddr = %s, want %s", got, ap)
		}
		c.Close()
	}
	refused := netip.MustParseAddrPort("127.0.0.1:1")
	_, errAP := ns.NS.DialAddrPort(ctx, "tcp", refused, redirect.SocketOptions{})
	_, errStr := ns.NS.Dial(ctx, "tcp", refused.String(), redirect.SocketOptions{})
	if errAP == nil || errStr == nil || errAP.Error() != errStr.Error() {
		t.Errorf("refused: DialAddrPort error %v, Dial error %v; want the same", errAP, errStr)
	}
	// The namespace-less path (nil NetNS) dials as Dial does.
	var host *redirect.NetNS
	if _, err := host.DialAddrPort(ctx, "tcp", refused, redirect.SocketOptions{}); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("host DialAddrPort to a closed port = %v, want ECONNREFUSED", err)
	}
}
