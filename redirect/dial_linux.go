package redirect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// threadDialable reports whether Dial can take the socket-thread path for
// ip and port on network, and returns the remote address. The other cases
// (service-name ports, interface-name zones, which must be resolved inside
// the namespace) take the setns path.
func threadDialable(network string, ip netip.Addr, port string, o SocketOptions) (netip.AddrPort, bool) {
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || !threadDialableAddr(network, ip, o) {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, uint16(p)), true
}

// threadDialableAddr is threadDialable for a numeric port.
func threadDialableAddr(network string, ip netip.Addr, o SocketOptions) bool {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return false
	}
	return numericZone(ip) && (!o.LocalAddr.IsValid() || numericZone(o.LocalAddr.Addr()))
}

func numericZone(a netip.Addr) bool {
	if a.Zone() == "" {
		return true
	}
	_, err := strconv.ParseUint(a.Zone(), 10, 32)
	return err == nil
}

// dialThread dials raddr with a socket made by n's socket thread; bind and
// connect run on the calling goroutine. Errors are *net.OpError, as from
// net.Dialer.
func (n *NetNS) dialThread(ctx context.Context, network string, raddr netip.AddrPort, o SocketOptions) (net.Conn, error) {
	tcp := isTCP(network)
	opErr := func(err error) error {
		e := &net.OpError{Op: "dial", Net: network, Err: err}
		if tcp {
			e.Addr = net.TCPAddrFromAddrPort(raddr)
			if o.LocalAddr.IsValid() {
				e.Source = net.TCPAddrFromAddrPort(o.LocalAddr)
			}
		} else {
			e.Addr = net.UDPAddrFromAddrPort(raddr)
			if o.LocalAddr.IsValid() {
				e.Source = net.UDPAddrFromAddrPort(o.LocalAddr)
			}
		}
		return e
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	family, rsa, lsa, err := sockaddrs(network, raddr, o.LocalAddr)
	if err != nil {
		return nil, opErr(err)
	}
	sotype := unix.SOCK_DGRAM
	if tcp {
		sotype = unix.SOCK_STREAM
	}
	for attempt := 0; ; attempt++ {
		c, err := n.dialOnce(ctx, network, family, sotype, rsa, lsa, o)
		if err != nil {
			return nil, opErr(err)
		}
		// As net.Dialer does: without a fixed local port, a connect to a
		// closed local port in the ephemeral range can connect to itself.
		if tcp && lsa == nil && attempt < 2 && selfConnected(c) {
			c.Close()
			continue
		}
		return c, nil
	}
}

// dialOnce creates, sets up and connects one socket.
//
// A connect inside the node usually completes during connect(2) itself (the
// handshake runs in the kernel before the call returns), so a second
// connect(2) settles most dials without the poller: no deadline timer, no
// context watcher, no temporary poller registration. Only a connect still
// in progress waits on the poller (waitConnect).
func (n *NetNS) dialOnce(ctx context.Context, network string, family, sotype int, rsa, lsa unix.Sockaddr, o SocketOptions) (net.Conn, error) {
	fd, err := n.socket(family, sotype)
	if err != nil {
		return nil, err
	}
	if err := setupSocket(fd, network, family, sotype, lsa, o); err != nil {
		unix.Close(fd)
		return nil, err
	}
	connected, err := connectStart(fd, rsa)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if !connected {
		return waitAndAdopt(ctx, fd, sotype, o)
	}
	return adopt(fd, sotype, o)
}

// connectStart starts a non-blocking connect of fd to rsa and reports
// whether it has completed. On Linux a repeated connect(2) reports the
// state of one in progress: 0 or EISCONN once connected, EALREADY while the
// handshake runs, and the failure (ECONNREFUSED...) once it failed.
func connectStart(fd int, rsa unix.Sockaddr) (connected bool, err error) {
	for range 2 {
		switch err := unix.Connect(fd, rsa); err {
		case nil, unix.EISCONN:
			return true, nil
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
		default:
			return false, os.NewSyscallError("connect", err)
		}
	}
	return false, nil
}

// adopt turns the connected socket fd into a net.Conn, which owns the
// socket from then on (fd is closed in every case). The socket is made
// blocking for the moment it is wrapped in an os.File, so that os.NewFile
// does not register it with the poller only for Close to unregister it:
// net.FileConn registers its duplicate and makes it non-blocking again.
func adopt(fd, sotype int, o SocketOptions) (net.Conn, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(fd), "netns-socket")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("socket to conn: %w", err)
	}
	if err := finishTCP(c, sotype, o); err != nil {
		return nil, err
	}
	return c, nil
}

// waitAndAdopt waits for the connect in progress on fd, then adopts it.
// fd is closed in every case but success.
func waitAndAdopt(ctx context.Context, fd, sotype int, o SocketOptions) (net.Conn, error) {
	// f owns fd from here; net.FileConn dups it, so f is always closed.
	f := os.NewFile(uintptr(fd), "netns-socket")
	defer f.Close()
	if err := waitConnect(ctx, f, o.ConnectTimeout); err != nil {
		return nil, err
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("socket to conn: %w", err)
	}
	if err := finishTCP(c, sotype, o); err != nil {
		return nil, err
	}
	return c, nil
}

// finishTCP applies o's TCP options to a TCP conn made by net.FileConn, and
// closes c if that fails.
func finishTCP(c net.Conn, sotype int, o SocketOptions) error {
	if sotype != unix.SOCK_STREAM {
		return nil
	}
	if err := controlConn(c, func(fd int) error { return applyFileConnTCPOptions(fd, o) }); err != nil {
		c.Close()
		return err
	}
	return nil
}

// setupSocket applies what net.Dialer would (IPV6_V6ONLY, SO_BROADCAST),
// then o, then binds lsa when not nil.
func setupSocket(fd int, network string, family, sotype int, lsa unix.Sockaddr, o SocketOptions) error {
	if family == unix.AF_INET6 {
		v6only := network[len(network)-1] == '6'
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolInt(v6only)); err != nil {
			return os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	if sotype == unix.SOCK_DGRAM {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_BROADCAST", err)
		}
	}
	if err := applyAddrOptions(fd, family, o); err != nil {
		return fmt.Errorf("socket options: %w", err)
	}
	if lsa != nil {
		if err := unix.Bind(fd, lsa); err != nil {
			return os.NewSyscallError("bind", err)
		}
	}
	return nil
}

// aLongTimeAgo is a deadline in the past, to wake a blocked wait at once.
var aLongTimeAgo = time.Unix(1, 0)

// waitConnect waits for the non-blocking connect on f to finish, for
// timeout (if > 0) to pass (then it returns os.ErrDeadlineExceeded), or for
// ctx to end (then it returns ctx's error).
func waitConnect(ctx context.Context, f *os.File, timeout time.Duration) error {
	deadline, hasDeadline := ctx.Deadline()
	byTimeout := false
	if timeout > 0 {
		if d := time.Now().Add(timeout); !hasDeadline || d.Before(deadline) {
			deadline, hasDeadline, byTimeout = d, true, true
		}
	}
	if hasDeadline {
		if err := f.SetWriteDeadline(deadline); err != nil {
			return fmt.Errorf("set connect deadline: %w", err)
		}
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(aLongTimeAgo) })
		defer stop()
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("connect wait: %w", err)
	}
	var connErr error
	// RawWrite forgets readiness seen before it starts (the poller is
	// edge-triggered), so the first call must look at the socket, not assume
	// the connect is still in progress.
	err = rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			connErr = os.NewSyscallError("getsockopt", err)
			return true
		}
		switch e := syscall.Errno(v); e {
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		case 0, unix.EISCONN:
			// The poller can wake spuriously: connected only with a peer.
			_, err := unix.Getpeername(int(fd))
			return err == nil
		default:
			connErr = os.NewSyscallError("connect", e)
			return true
		}
	})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if byTimeout {
				return os.ErrDeadlineExceeded
			}
			return context.DeadlineExceeded // the context's deadline
		}
		return fmt.Errorf("connect wait: %w", err)
	}
	return connErr
}

// sockaddrs picks the socket family for network and the addresses, as
// net.Dialer does: IPv4 when both are IPv4 (or IPv4-mapped), else IPv6 with
// IPv4 addresses mapped; tcp4/udp4 and tcp6/udp6 insist on their family.
func sockaddrs(network string, raddr, laddr netip.AddrPort) (family int, rsa, lsa unix.Sockaddr, err error) {
	r, l := raddr.Addr(), laddr.Addr()
	v4 := r.Unmap().Is4() && (!laddr.IsValid() || l.Unmap().Is4())
	switch network[len(network)-1] {
	case '4':
		if !v4 {
			return 0, nil, nil, &net.AddrError{Err: "no suitable address for " + network, Addr: raddr.String()}
		}
	case '6':
		if r.Unmap().Is4() || (laddr.IsValid() && l.Unmap().Is4()) {
			return 0, nil, nil, &net.AddrError{Err: "no suitable address for " + network, Addr: raddr.String()}
		}
		v4 = false
	}
	if v4 {
		rsa = &unix.SockaddrInet4{Port: int(raddr.Port()), Addr: r.Unmap().As4()}
		if laddr.IsValid() {
			lsa = &unix.SockaddrInet4{Port: int(laddr.Port()), Addr: l.Unmap().As4()}
		}
		return unix.AF_INET, rsa, lsa, nil
	}
	rsa = inet6(raddr)
	if laddr.IsValid() {
		lsa = inet6(laddr)
	}
	return unix.AF_INET6, rsa, lsa, nil
}

// inet6 converts ap (zone, if any, numeric: see threadDialable).
func inet6(ap netip.AddrPort) *unix.SockaddrInet6 {
	sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if z := ap.Addr().Zone(); z != "" {
		id, _ := strconv.ParseUint(z, 10, 32)
		sa.ZoneId = uint32(id)
	}
	return sa
}

// selfConnected reports whether c is a TCP connection to itself.
func selfConnected(c net.Conn) bool {
	l, lok := c.LocalAddr().(*net.TCPAddr)
	r, rok := c.RemoteAddr().(*net.TCPAddr)
	return lok && rok && l.Port == r.Port && l.IP.Equal(r.IP)
}

// controlConn runs fn on c's file descriptor.
func controlConn(c net.Conn, fn func(fd int) error) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return fmt.Errorf("%T has no file descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	return fnErr
}
