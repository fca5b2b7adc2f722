package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h.
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination an accepted TCP connection had before
// it was REDIRECTed (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST from
// conntrack). For a connection that was not NATed it is the local address.
// IPv4 destinations are returned unmapped, also for IPv4 clients of a
// dual-stack [::] listener. It returns an error wrapping ErrNotSupported
// when c is not a TCP socket or conntrack is not available.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original dst: %T has no socket: %w", c, ErrNotSupported)
	}
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original dst: %s is not TCP: %w", c.LocalAddr().Network(), ErrNotSupported)
	}
	// An IPv4 local address (also IPv4-mapped, on a dual-stack socket) means
	// the IPv4 conntrack has the connection.
	v4 := la.IP.To4() != nil
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original dst: %w", err)
	}
	var dst netip.AddrPort
	var opErr error
	if err := rc.Control(func(fd uintptr) { dst, opErr = originalDstFd(int(fd), v4) }); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original dst: %w", err)
	}
	if opErr != nil {
		return netip.AddrPort{}, fmt.Errorf("original dst of %s: %w", c.LocalAddr(), opErr)
	}
	return dst, nil
}

// originalDstFd asks the conntrack of the connection's family (v4: IPv4)
// first, then the other one.
func originalDstFd(fd int, v4 bool) (netip.AddrPort, error) {
	first, second := [2]int{unix.SOL_IPV6, ip6tSOOriginalDst}, [2]int{unix.SOL_IP, unix.SO_ORIGINAL_DST}
	if v4 {
		first, second = second, first
	}
	dst, err := getOrigDst(fd, first[0], first[1])
	if err == nil {
		return dst, nil
	}
	if dst2, err2 := getOrigDst(fd, second[0], second[1]); err2 == nil {
		return dst2, nil
	}
	return netip.AddrPort{}, err
}

// getOrigDst reads a sockaddr_in or sockaddr_in6 via getsockopt.
func getOrigDst(fd, level, opt int) (netip.AddrPort, error) {
	var buf [unix.SizeofSockaddrInet6]byte
	size := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		if errno == unix.ENOPROTOOPT {
			return netip.AddrPort{}, fmt.Errorf("getsockopt original dst: %w (%w)", ErrNotSupported, errno)
		}
		return netip.AddrPort{}, fmt.Errorf("getsockopt original dst: %w", errno)
	}
	return parseSockaddr(buf[:size])
}

// parseSockaddr decodes a raw sockaddr_in / sockaddr_in6 (port in network
// byte order, family in host byte order).
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 4 {
		return netip.AddrPort{}, fmt.Errorf("sockaddr of %d bytes", len(b))
	}
	family := *(*uint16)(unsafe.Pointer(&b[0]))
	port := binary.BigEndian.Uint16(b[2:4])
	switch family {
	case unix.AF_INET:
		if len(b) < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, fmt.Errorf("sockaddr_in of %d bytes", len(b))
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	case unix.AF_INET6:
		if len(b) < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, fmt.Errorf("sockaddr_in6 of %d bytes", len(b))
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port), nil
	default:
		return netip.AddrPort{}, errors.New("sockaddr of unknown family " + fmt.Sprint(family))
	}
}
