package hbone

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Defaults of HandshakeLimiter's zero fields.
const (
	DefaultMaxHandshakes          = 1024
	DefaultMaxHandshakesPerSource = 64
)

// Reasons a HandshakeLimiter refuses a connection, as passed to Server.OnRefused.
const (
	// RefusedHandshakes: HandshakeLimiter.MaxTotal connections were already in their handshake.
	RefusedHandshakes = "handshakes_total"
	// RefusedHandshakesPerSource: HandshakeLimiter.MaxPerSource connections from the same source IP
	// address were already in their handshake.
	RefusedHandshakesPerSource = "handshakes_per_source"
)

// HandshakeLimiter caps the connections a Server has accepted but not yet authenticated: those in
// their TLS handshake or still to send the HTTP/2 client preface. It caps them in total and per
// source IP address. A connection over a cap is reset (RST) at once, without being read, so a flood
// of silent connections holds a bounded number of file descriptors and goroutines. Established
// connections are not counted: however many handshakes are refused, they keep working, and the
// descriptors the cap leaves free stay available to them.
//
// One limiter may be shared by many Servers (a proxy makes one and sets it on the server of every
// pod) so that its caps hold across them; a Server without one makes its own with the default caps.
//
// The zero value is ready to use. Its exported fields must not change after first use.
//
// # Concurrency
//
// A HandshakeLimiter is safe for concurrent use.
type HandshakeLimiter struct {
	// MaxTotal is the most connections in their handshake at once. Zero means DefaultMaxHandshakes
	// (1024); a negative value means no cap.
	MaxTotal int
	// MaxPerSource is the most connections in their handshake at once from one source IP address.
	// Zero means DefaultMaxHandshakesPerSource (64); a negative value means no cap. Connections
	// without an IP source address (not TCP) count only towards MaxTotal.
	MaxPerSource int

	mu       sync.Mutex // guards total and bySource
	total    int
	bySource map[netip.Addr]int // only sources with connections in their handshake

	refusedTotal, refusedPerSource atomic.Uint64
}

// HandshakeStats is a snapshot of a HandshakeLimiter's state and counters.
type HandshakeStats struct {
	InHandshake      int    // connections in their handshake now
	RefusedTotal     uint64 // connections refused because MaxTotal was reached, since the limiter was made
	RefusedPerSource uint64 // connections refused because MaxPerSource was reached
}

// Stats returns the limiter's current state and counters.
func (l *HandshakeLimiter) Stats() HandshakeStats {
	l.mu.Lock()
	n := l.total
	l.mu.Unlock()
	return HandshakeStats{InHandshake: n, RefusedTotal: l.refusedTotal.Load(), RefusedPerSource: l.refusedPerSource.Load()}
}

func capOf(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// acquire takes a handshake slot for a connection from src (invalid if it has no IP address). It
// returns "" if the connection may proceed (release must follow), else the reason it is refused.
func (l *HandshakeLimiter) acquire(src netip.Addr) string {
	maxTotal := capOf(l.MaxTotal, DefaultMaxHandshakes)
	maxSource := capOf(l.MaxPerSource, DefaultMaxHandshakesPerSource)
	l.mu.Lock()
	defer l.mu.Unlock()
	if maxTotal >= 0 && l.total >= maxTotal {
		l.refusedTotal.Add(1)
		return RefusedHandshakes
	}
	if src.IsValid() && maxSource >= 0 {
		if l.bySource[src] >= maxSource {
			l.refusedPerSource.Add(1)
			return RefusedHandshakesPerSource
		}
		if l.bySource == nil {
			l.bySource = make(map[netip.Addr]int)
		}
		l.bySource[src]++
	}
	l.total++
	return ""
}

// release gives back a slot taken by acquire(src).
func (l *HandshakeLimiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if !src.IsValid() || capOf(l.MaxPerSource, DefaultMaxHandshakesPerSource) < 0 {
		return
	}
	if n := l.bySource[src] - 1; n > 0 {
		l.bySource[src] = n
	} else {
		delete(l.bySource, src)
	}
}

// sourceIP returns the IP address a connection comes from, or the zero Addr if it has none.
func sourceIP(c net.Conn) netip.Addr {
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}
		}
		return ap.Addr().Unmap()
	}
}

// resetConn closes c with a TCP reset (SO_LINGER 0) rather than a FIN, so that the socket is freed at
// once on both ends. It finds the TCP socket through wrappers that have a NetConn method; a
// connection that is not TCP is just closed.
func resetConn(c net.Conn) {
	for nc := c; nc != nil; {
		if l, ok := nc.(interface{ SetLinger(sec int) error }); ok {
			_ = l.SetLinger(0)
			break
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	_ = c.Close()
}
