package redirect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SocketOptions are the socket options the proxy sets on its sockets.
// The zero value sets nothing.
type SocketOptions struct {
	// Mark is SO_MARK; 0 leaves the mark unset. The proxy uses 1337 for
	// everything it sends in shared mode so the pod's rules skip it.
	Mark uint32
	// Transparent sets IP_TRANSPARENT/IPV6_TRANSPARENT and
	// IP_FREEBIND/IPV6_FREEBIND: binding to (spoofing) a non-local source
	// address, and transparent listeners.
	Transparent bool
	// ReusePort sets SO_REUSEPORT (listeners, for upgrade handover).
	ReusePort bool
	// LocalAddr is bound before connecting (Dial only). The zero value lets
	// the kernel pick. With Transparent it may be a non-local address.
	LocalAddr netip.AddrPort
	// NoDelay sets TCP_NODELAY to this value on TCP sockets. Note that Go
	// enables TCP_NODELAY on every TCP connection after Control runs; Dial
	// re-applies NoDelay after connecting, accepted connections keep Go's
	// default (true).
	NoDelay bool
	// KeepAlive > 0 enables TCP keepalive with idle time = interval = this
	// (rounded down to seconds, at least 1 s). 0 leaves keepalive off on
	// sockets created by Listen and Dial.
	KeepAlive time.Duration
	// ConnectTimeout > 0 bounds how long Dial waits for a TCP connect to
	// complete, as net.Dialer.Timeout does; a dial that runs out fails with
	// an i/o timeout (os.ErrDeadlineExceeded). The earlier of it and the
	// context's deadline applies. It costs nothing when the connect
	// completes at once, unlike a context with a timeout, which arms a
	// timer per dial. 0 leaves only the context to bound the dial.
	ConnectTimeout time.Duration
}

// Control returns a function, with the signature of net.Dialer.Control and
// net.ListenConfig.Control, that applies o to a new socket before it is
// bound or connected. When used with a plain net.Dialer or
// net.ListenConfig, set their KeepAlive to -1 or Go overrides the
// keepalive settings after Control.
func Control(o SocketOptions) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var sockErr error
		err := c.Control(func(fd uintptr) { sockErr = applyOptions(int(fd), network, o) })
		if err != nil {
			return fmt.Errorf("socket options for %s %s: %w", network, address, err)
		}
		if sockErr != nil {
			return fmt.Errorf("socket options for %s %s: %w", network, address, sockErr)
		}
		return nil
	}
}

func applyOptions(fd int, network string, o SocketOptions) error {
	if err := applyAddrOptions(fd, 0, o); err != nil {
		return err
	}
	if !isTCP(network) {
		return nil
	}
	return applyTCPOptions(fd, o)
}

// applyAddrOptions sets the options that must be in place before the socket
// is bound or connected: mark, reuseport and transparent. family is the
// socket's (AF_INET or AF_INET6), 0 if unknown.
func applyAddrOptions(fd, family int, o SocketOptions) error {
	if o.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark)); err != nil {
			return fmt.Errorf("set SO_MARK %d: %w", o.Mark, err)
		}
	}
	if o.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fmt.Errorf("set SO_REUSEPORT: %w", err)
		}
	}
	if o.Transparent {
		domain := family
		if domain == 0 {
			var err error
			if domain, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
				return fmt.Errorf("get SO_DOMAIN: %w", err)
			}
		}
		// Both families set the same per-socket flags; a v6 socket also covers
		// IPv4-mapped addresses.
		level, transparent, freebind := unix.SOL_IP, unix.IP_TRANSPARENT, unix.IP_FREEBIND
		if domain == unix.AF_INET6 {
			level, transparent, freebind = unix.SOL_IPV6, unix.IPV6_TRANSPARENT, unix.IPV6_FREEBIND
		}
		if err := unix.SetsockoptInt(fd, level, transparent, 1); err != nil {
			return fmt.Errorf("set IP(V6)_TRANSPARENT: %w", err)
		}
		if err := unix.SetsockoptInt(fd, level, freebind, 1); err != nil {
			return fmt.Errorf("set IP(V6)_FREEBIND: %w", err)
		}
	}
	return nil
}

// applyTCPOptions sets TCP_NODELAY and, when o.KeepAlive > 0, keepalive on
// a new TCP socket.
func applyTCPOptions(fd int, o SocketOptions) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, boolInt(o.NoDelay)); err != nil {
		return fmt.Errorf("set TCP_NODELAY: %w", err)
	}
	if o.KeepAlive <= 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1); err != nil {
		return fmt.Errorf("set SO_KEEPALIVE: %w", err)
	}
	return setKeepAliveTimes(fd, o.KeepAlive)
}

// setKeepAliveTimes sets the keepalive idle time and interval to d (rounded down to seconds, at
// least 1 s).
func setKeepAliveTimes(fd int, d time.Duration) error {
	secs := max(int(d/time.Second), 1)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs); err != nil {
		return fmt.Errorf("set TCP_KEEPIDLE: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs); err != nil {
		return fmt.Errorf("set TCP_KEEPINTVL: %w", err)
	}
	return nil
}

// applyFileConnTCPOptions sets o's TCP options on a socket that
// net.FileConn has just wrapped. FileConn turns TCP_NODELAY on and enables
// keepalive with Go's defaults (15 s idle and interval, 9 probes), so only
// what differs from that is set.
func applyFileConnTCPOptions(fd int, o SocketOptions) error {
	if !o.NoDelay {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 0); err != nil {
			return fmt.Errorf("clear TCP_NODELAY: %w", err)
		}
	}
	if o.KeepAlive <= 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0); err != nil {
			return fmt.Errorf("clear SO_KEEPALIVE: %w", err)
		}
		return nil
	}
	return setKeepAliveTimes(fd, o.KeepAlive)
}

func isTCP(network string) bool {
	return network == "tcp" || network == "tcp4" || network == "tcp6"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Listen creates a listener inside n (n == nil: the calling thread's
// namespace) with o applied. The listener can then be used from any goroutine.
func (n *NetNS) Listen(ctx context.Context, network, addr string, o SocketOptions) (net.Listener, error) {
	lc := net.ListenConfig{Control: Control(o), KeepAlive: -1}
	var ln net.Listener
	err := n.run(func() error {
		var err error
		ln, err = lc.Listen(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, n, err)
	}
	return ln, nil
}

// Dial connects from inside n (n == nil: the calling thread's namespace)
// with o applied. When n is not nil the host part of a TCP or UDP addr must
// be an IP literal: name resolution would run on other threads, outside n.
//
// For TCP and UDP with a numeric port, only the socket is created inside n
// (on n's socket thread, see [NetNS.Close]); binding and connecting run on
// the caller's goroutine through the Go poller. Other networks switch the
// calling thread into n for the whole dial.
func (n *NetNS) Dial(ctx context.Context, network, addr string, o SocketOptions) (net.Conn, error) {
	if n != nil && (isTCP(network) || strings.HasPrefix(network, "udp")) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, n, err)
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return nil, fmt.Errorf("dial %s %s in %s: host must be an IP literal", network, addr, n)
		}
		if raddr, ok := threadDialable(network, ip, port, o); ok {
			c, err := n.dialThread(ctx, network, raddr, o)
			if err != nil {
				return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, n, err)
			}
			return c, nil
		}
	}
	return n.dialSetns(ctx, network, addr, o)
}

// DialAddrPort is Dial to an address already parsed: the same connection and errors, without
// formatting and parsing the address, and with a shallower stack.
func (n *NetNS) DialAddrPort(ctx context.Context, network string, raddr netip.AddrPort, o SocketOptions) (net.Conn, error) {
	if n != nil && threadDialableAddr(network, raddr.Addr(), o) {
		c, err := n.dialThread(ctx, network, raddr, o)
		if err != nil {
			return nil, fmt.Errorf("dial %s %s in %s: %w", network, raddr, n, err)
		}
		return c, nil
	}
	// Where Dial would not take the thread path either.
	return n.dialSetns(ctx, network, raddr.String(), o)
}

// dialSetns dials with the calling thread switched into n for the whole
// dial (connect included).
func (n *NetNS) dialSetns(ctx context.Context, network, addr string, o SocketOptions) (net.Conn, error) {
	d := net.Dialer{Control: Control(o), KeepAlive: -1, Timeout: o.ConnectTimeout}
	if o.LocalAddr.IsValid() {
		la := o.LocalAddr.Addr().Unmap()
		switch {
		case isTCP(network):
			d.LocalAddr = &net.TCPAddr{IP: la.AsSlice(), Port: int(o.LocalAddr.Port()), Zone: la.Zone()}
		case network == "udp" || network == "udp4" || network == "udp6":
			d.LocalAddr = &net.UDPAddr{IP: la.AsSlice(), Port: int(o.LocalAddr.Port()), Zone: la.Zone()}
		default:
			return nil, fmt.Errorf("dial %s %s: local address on this network: %w", network, addr, ErrNotSupported)
		}
	}
	var c net.Conn
	err := n.run(func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, n, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetNoDelay(o.NoDelay); err != nil {
			c.Close()
			return nil, fmt.Errorf("dial %s %s: set TCP_NODELAY: %w", network, addr, err)
		}
	}
	return c, nil
}

// run calls fn inside n, or directly when n is nil.
func (n *NetNS) run(fn func() error) error {
	if n == nil {
		return fn()
	}
	if n.f == nil {
		return errors.New("netns handle is not open")
	}
	return n.Do(fn)
}
