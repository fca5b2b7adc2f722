package relay

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// pump copies a TCP source to the destination on the calling goroutine, counting from total bytes
// already moved, until the source ends or either side fails. After the idle poller's time of
// silence it parks the copy and returns; the copy resumes in pump on a new goroutine when the
// socket wakes it.
func (d *direction) pump(total int64) {
	src := d.src.tcp
	idle := d.p.r.idle
	armed := idle != nil
	for {
		if armed {
			if err := src.SetReadDeadline(time.Now().Add(idle.after)); err != nil {
				armed = false // closed: the copy below sees it
			}
		}
		n, err, atDst := d.copyFromTCP()
		total += n
		if !armed || atDst || !errors.Is(err, os.ErrDeadlineExceeded) {
			if atDst {
				d.ended(total, err, true, "write")
			} else {
				d.endOfSource(total, err)
			}
			return
		}
		if n > 0 {
			continue // still busy: watch another period
		}
		_ = src.SetReadDeadline(time.Time{})
		parked, perr := d.park(total)
		if parked {
			return
		}
		if perr != nil {
			armed = false // no poller (shutting down): wait on this goroutine
		}
	}
}

// park hands the silent copy to the idle poller. It reports false if the relay is being aborted
// (then the copy, run once more, finds its connections closed) or parking failed (err).
func (d *direction) park(total int64) (bool, error) {
	rc, err := d.src.tcp.SyscallConn()
	if err != nil {
		return false, err
	}
	p := d.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aborted {
		return false, nil
	}
	unpark, err := p.r.idle.park(rc, func() {
		p.mu.Lock()
		d.unpark = nil
		p.mu.Unlock()
		d.pump(total)
	})
	if err != nil {
		return false, err
	}
	d.unpark, d.parkedN = unpark, total
	return true, nil
}

// copyFromTCP copies the TCP source to the destination until the source ends (nil), a read fails
// (or its deadline passes), or a write fails (atDst). It returns the bytes written.
func (d *direction) copyFromTCP() (n int64, err error, atDst bool) {
	src := d.src.tcp
	switch {
	case d.dst.tcp != nil:
		n, err, atDst = d.p.r.splice(d.dst.tcp, src)
		if err != errNoPipe {
			return n, err, atDst
		}
		// No pipe to be had (descriptor limit): copy through user space instead.
		m, err, atDst := copyReady(src, &plainBufs, 0, d.dst.tcp.Write)
		return n + m, err, atDst
	case d.dst.tun != nil:
		room, size := d.dst.tun.HeadroomBuffer()
		return copyReady(src, headroomBufs(room, size), room, d.dst.tun.WriteHeadroom)
	default:
		return copyReady(src, &plainBufs, 0, d.dst.c.Write)
	}
}

// copyPlain is the copy of the other cases (a tunnel into a tunnel, a tunnel into something other
// than a TCP socket, connections of other kinds): a read and write loop through a pooled buffer,
// on its own goroutine.
func (d *direction) copyPlain() {
	bp := plainBufs.Get().(*[]byte)
	defer plainBufs.Put(bp)
	var total int64
	for {
		nr, rerr := d.src.c.Read(*bp)
		if nr > 0 {
			nw, werr := d.dst.c.Write((*bp)[:nr])
			total += int64(nw)
			if werr != nil {
				d.ended(total, werr, true, "write")
				return
			}
		}
		if rerr == io.EOF {
			d.endOfSource(total, nil)
			return
		}
		if rerr != nil {
			d.endOfSource(total, rerr)
			return
		}
	}
}

// plainBufs holds the buffers of copies without a fast path. A buffer is only held while bytes
// are moving.
var plainBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// headroomPools holds, per buffer layout (room, size), the buffers of copies from a TCP socket into
// a tunnel. There is one layout in practice.
var headroomPools sync.Map // [2]int → *sync.Pool

func headroomBufs(room, size int) *sync.Pool {
	key := [2]int{room, size}
	if p, ok := headroomPools.Load(key); ok {
		return p.(*sync.Pool)
	}
	p, _ := headroomPools.LoadOrStore(key, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return p.(*sync.Pool)
}

// copyReady copies src until its end (nil) or an error: each read lands at offset room of a
// buffer from pool, taken only once the socket is readable, and write gets the buffer up to the
// end of the bytes read (room included) and returns how many of those bytes it wrote.
func copyReady(src interface {
	SyscallConn() (syscall.RawConn, error)
}, pool *sync.Pool, room int, write func([]byte) (int, error)) (int64, error, bool) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err, false
	}
	r := &readyReader{rc: rc, pool: pool, room: room}
	r.fn = r.readFD
	var total int64
	for {
		bp, n, err := r.read()
		if bp == nil {
			return total, err, false // nil at EOF
		}
		w, werr := write((*bp)[:room+n])
		pool.Put(bp)
		total += int64(w)
		if werr != nil {
			return total, werr, true
		}
	}
}

// readyReader reads a socket only once it is readable, into a buffer taken from pool at that
// moment, at offset room: while the poller waits, no buffer is held. One readyReader serves all
// reads of a copy, so a read allocates nothing (a closure passed to RawConn.Read would escape
// with its captured results on every call).
type readyReader struct {
	rc   syscall.RawConn
	pool *sync.Pool
	room int
	fn   func(fd uintptr) bool // r.readFD, bound once

	// Results of the last readFD.
	bp  *[]byte
	n   int
	err error
}

// read returns the buffer and n > 0 bytes read into it; or a nil buffer and the error, nil at
// EOF.
func (r *readyReader) read() (*[]byte, int, error) {
	r.bp, r.n, r.err = nil, 0, nil
	err := r.rc.Read(r.fn)
	bp, n := r.bp, r.n
	r.bp = nil
	if err == nil {
		err = r.err
	}
	if err != nil || n <= 0 {
		if bp != nil {
			r.pool.Put(bp)
		}
		return nil, 0, err
	}
	return bp, n, nil
}

func (r *readyReader) readFD(fd uintptr) bool {
	b := r.pool.Get().(*[]byte)
	for {
		r.n, r.err = syscall.Read(int(fd), (*b)[r.room:])
		if r.err != syscall.EINTR {
			break
		}
	}
	if r.err == syscall.EAGAIN {
		r.pool.Put(b)
		return false // not readable yet: wait without a buffer
	}
	if r.err != nil {
		r.err = os.NewSyscallError("read", r.err)
	}
	r.bp = b
	return true
}
