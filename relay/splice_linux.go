package relay

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Copies from one TCP socket to another go through splice(2): socket → pipe → socket, with no
// bytes in user space. Go's own (*net.TCPConn).ReadFrom does that too, but takes a pipe from a
// sync.Pool for the whole life of the copy, idle or not, and its pipes are only closed by the
// garbage collector: 5 000 idle relayed connections held 20 000 descriptors in pipes, and long
// after they ended most were still open. Here a copy takes a pipe only once the source is
// readable and gives it back as soon as it is empty; a few are kept for reuse (MaxIdlePipes), the
// rest are closed at once.

// maxSplice is the most one splice(2) call is asked to move (the pipe's capacity bounds it).
const maxSplice = 1 << 20

// errNoPipe reports that no pipe could be had (the descriptor limit, most likely): the copy falls
// back to reading into user space.
var errNoPipe = errors.New("relay: no pipe for splice")

// pipe is a pipe's two ends and how many bytes it holds.
type pipe struct {
	r, w int
	data int
}

// pipePool keeps empty pipes for reuse.
type pipePool struct {
	max  int
	open atomic.Int64 // pipes open, in use or free

	mu     sync.Mutex
	free   []*pipe // guarded by mu
	closed bool    // guarded by mu
}

func (pp *pipePool) get() (*pipe, error) {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p, nil
	}
	pp.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	pp.open.Add(1)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// put gives p back: kept if it is empty and there is room, else closed.
func (pp *pipePool) put(p *pipe) {
	if p.data == 0 {
		pp.mu.Lock()
		if !pp.closed && len(pp.free) < pp.max {
			pp.free = append(pp.free, p)
			pp.mu.Unlock()
			return
		}
		pp.mu.Unlock()
	}
	pp.destroy(p)
}

func (pp *pipePool) destroy(p *pipe) {
	unix.Close(p.r)
	unix.Close(p.w)
	pp.open.Add(-1)
}

// close closes the kept pipes; pipes given back later are closed at once.
func (pp *pipePool) close() {
	pp.mu.Lock()
	free := pp.free
	pp.free, pp.closed = nil, true
	pp.mu.Unlock()
	for _, p := range free {
		pp.destroy(p)
	}
}

// splice copies src to dst until src ends (nil), a read fails or its deadline passes, or a write
// fails (atDst); errNoPipe if no pipe could be had before anything was read. It returns the bytes
// written to dst.
func (r *Relay) splice(dst, src *net.TCPConn) (int64, error, bool) {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return 0, err, false
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return 0, err, true
	}
	s := &splicer{pool: &r.pipes}
	s.fill, s.drain = s.fillFD, s.drainFD
	var total int64
	for {
		s.n, s.err, s.perr = 0, nil, nil
		if err := srcRC.Read(s.fill); err != nil { // deadline passed, or the socket closed
			s.release()
			return total, err, false
		}
		switch {
		case s.perr != nil:
			return total, errNoPipe, false
		case s.err != nil:
			s.release()
			return total, os.NewSyscallError("splice", s.err), false
		case s.n == 0:
			s.release()
			return total, nil, false // end of stream
		}
		s.p.data = int(s.n)
		for s.p.data > 0 {
			s.n, s.err = 0, nil
			if err := dstRC.Write(s.drain); err != nil {
				s.release()
				return total, err, true
			}
			if s.err != nil {
				s.release()
				return total, os.NewSyscallError("splice", s.err), true
			}
			s.p.data -= int(s.n)
			total += s.n
		}
		s.release()
	}
}

// splicer is the state of one splice copy, with its callbacks bound once so that a round
// allocates nothing.
type splicer struct {
	pool        *pipePool
	p           *pipe // held only while bytes are in it (or a read of the source is being tried)
	n           int64
	err, perr   error
	fill, drain func(fd uintptr) bool
}

// fillFD moves what the source socket holds into a pipe, taking one for the attempt; if the socket
// has nothing, the pipe goes back and the poller waits with none held.
func (s *splicer) fillFD(fd uintptr) bool {
	if s.p == nil {
		s.p, s.perr = s.pool.get()
		if s.perr != nil {
			return true
		}
	}
	for {
		s.n, s.err = unix.Splice(int(fd), nil, s.p.w, nil, maxSplice, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if s.err != syscall.EINTR {
			break
		}
	}
	if s.err == syscall.EAGAIN {
		s.pool.put(s.p) // empty
		s.p, s.n, s.err = nil, 0, nil
		return false
	}
	return true
}

// drainFD moves what it can of the pipe's bytes to the destination socket; when the socket is
// full the poller waits for it to take more.
func (s *splicer) drainFD(fd uintptr) bool {
	for {
		s.n, s.err = unix.Splice(s.p.r, nil, int(fd), nil, s.p.data, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if s.err != syscall.EINTR {
			break
		}
	}
	if s.err == syscall.EAGAIN {
		s.n, s.err = 0, nil
		return false
	}
	return true
}

// release gives the pipe back (or closes it if bytes are left in it).
func (s *splicer) release() {
	if s.p != nil {
		s.pool.put(s.p)
		s.p = nil
	}
}
