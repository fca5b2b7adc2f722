package relay

import (
	"io"
	"net"
	"syscall"
)

// tunnel is the fast-path interface of a tunnel side, implemented by *hbone.Stream. The relay
// uses it through this interface only, so that it does not depend on the tunnel's package.
type tunnel interface {
	net.Conn
	// CloseWrite ends the tunnel's sending direction (END_STREAM).
	CloseWrite() error
	// Abort resets the tunnel (RST_STREAM CONNECT_ERROR): its far end resets its TCP connection.
	Abort() error
	// HeadroomBuffer is the buffer layout WriteHeadroom works best with: room bytes free in front
	// of the payload, size bytes in all.
	HeadroomBuffer() (room, size int)
	// WriteHeadroom sends b[room:], building its frame headers in b without copying the payload.
	WriteHeadroom(b []byte) (int, error)
	// WriteToAsync delivers the tunnel's bytes to w until the peer ends its stream (done gets nil)
	// or the tunnel fails, without a goroutine waiting while it is idle; done is called once.
	WriteToAsync(w sinkIface, done func(int64, error))
}

// sinkIface is the destination of a tunnel's WriteToAsync (hbone.Sink is the same type): Write
// blocks, TryWrite writes what the destination takes at once.
type sinkIface = interface {
	io.Writer
	TryWrite(p []byte) int
}

// sink is a TCP socket as the destination of a tunnel: the tunnel's read loop hands it small
// pieces with TryWrite (a non-blocking write, so no goroutine has to wake for them), and its drain
// goroutines use Write. The tunnel never calls the two concurrently.
type sink struct {
	c    *net.TCPConn
	rc   syscall.RawConn
	werr error // the first error of Write; read once the copy has ended

	// TryWrite's arguments and result, and its callback bound once, so it allocates nothing.
	p  []byte
	n  int
	fn func(fd uintptr) bool
}

func newSink(c *net.TCPConn) *sink {
	s := &sink{c: c}
	s.rc, _ = c.SyscallConn() // nil only for an unusable socket: TryWrite then takes nothing
	s.fn = s.writeFD
	return s
}

func (s *sink) Write(p []byte) (int, error) {
	n, err := s.c.Write(p)
	if err != nil && s.werr == nil {
		s.werr = err
	}
	return n, err
}

func (s *sink) TryWrite(p []byte) int {
	if s.rc == nil {
		return 0
	}
	s.p, s.n = p, 0
	_ = s.rc.Write(s.fn)
	n := s.n
	s.p = nil
	return n
}

// writeFD writes as much of s.p as the socket takes without waiting; errors (the socket is full,
// closed or failing) just end the write early, for Write to see.
func (s *sink) writeFD(fd uintptr) bool {
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
	return true // never wait for the socket to become writable
}
