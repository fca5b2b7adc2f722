package hbone

import (
	"net"
	"syscall"
)

// socketSink is a Sink over a TCP socket for the tests: TryWrite writes what the socket takes without
// waiting, as the proxy's relay does.
type socketSink struct {
	*net.TCPConn
	rc syscall.RawConn
	p  []byte
	n  int
}

func newSocketSink(c *net.TCPConn) *socketSink {
	rc, err := c.SyscallConn()
	if err != nil {
		panic(err)
	}
	return &socketSink{TCPConn: c, rc: rc}
}

func (s *socketSink) TryWrite(p []byte) int {
	s.p, s.n = p, 0
	_ = s.rc.Write(func(fd uintptr) bool {
		for s.n < len(s.p) {
			k, err := syscall.Write(int(fd), s.p[s.n:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil || k <= 0 {
				break
			}
			s.n += k
		}
		return true
	})
	s.p = nil
	return s.n
}
