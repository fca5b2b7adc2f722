package ztunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/ztunnel-go/ztunnel/hbone"
)

// closeWriter is implemented by *net.TCPConn, *tls.Conn and *hbone.Stream: the connections
// that can signal end-of-stream in one direction while still reading the other.
type closeWriter interface{ CloseWrite() error }

// copyBufPool holds the buffers of copies that cannot use splice(2) (those involving an HBONE
// stream). A buffer is only held while bytes are moving.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// streamBufPool holds the buffers of copies from a TCP socket into an HBONE stream: room for a
// DATA frame header, then a whole number of the stream's largest DATA frames, so every read goes
// out as full TLS records, and large, so a bulk transfer takes few read(2)s.
var streamBufPool = sync.Pool{New: func() any {
	b := make([]byte, hbone.FrameHeaderRoom+4*hbone.MaxDataWrite)
	return &b
}}

// spliceResult reports what moved through a proxied connection.
type spliceResult struct {
	// Received counts bytes from the downstream (the side that opened the connection) to the
	// upstream, Sent the other way: Istio's convention for istio_tcp_*_bytes_total.
	Received, Sent int64
	Err            error
}

// splice copies bytes both ways between downstream and upstream until both directions have
// ended, then closes both. End of stream in one direction is passed on as a half-close, so the
// other direction keeps flowing. A failure in either direction, or ctx ending, closes both
// connections at once. Connection resets and closes after the peer finished are not errors.
// It is spliceAsync (which the handlers use) waited for, without parking idle copies.
func splice(ctx context.Context, downstream, upstream net.Conn) spliceResult {
	done := make(chan spliceResult, 1)
	spliceAsync(ctx, downstream, upstream, nil, func(r spliceResult) { done <- r })
	return <-done
}

func isTCP(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}

// copyHalf copies src to dst until src ends, then half-closes dst. No path holds a buffer
// while it waits for data, so an idle connection costs goroutines, not copy buffers:
//   - TCP to TCP: (*net.TCPConn).ReadFrom uses splice(2), no bytes enter user space;
//   - HBONE stream to anything: the stream hands its received chunks over (io.WriterTo);
//   - TCP to HBONE stream: a pooled buffer is taken only once the socket is readable.
func copyHalf(dst, src net.Conn) (int64, error) {
	var n int64
	var err error
	_, dstTCP := dst.(*net.TCPConn)
	wt, srcWriterTo := src.(io.WriterTo)
	tcpSrc, srcTCP := src.(*net.TCPConn)
	switch {
	case dstTCP:
		n, err = io.Copy(dst, src)
	case srcWriterTo && !srcTCP:
		n, err = wt.WriteTo(dst)
	case srcTCP:
		if st, ok := dst.(*hbone.Stream); ok {
			n, err = copyToStream(st, tcpSrc)
		} else {
			n, err = copyWhenReadable(dst, tcpSrc)
		}
	default:
		bp := copyBufPool.Get().(*[]byte)
		n, err = io.CopyBuffer(onlyWriter{dst}, src, *bp)
		copyBufPool.Put(bp)
	}
	return endHalf(dst, n, err)
}

// endHalf finishes a copy into dst that moved n bytes and ended with err: a benign end is
// passed on as a half-close of dst. It returns the copy's outcome.
func endHalf(dst net.Conn, n int64, err error) (int64, error) {
	if err != nil && !benign(err) {
		return n, err
	}
	if cw, ok := dst.(closeWriter); ok {
		if cerr := cw.CloseWrite(); cerr != nil && !benign(cerr) {
			return n, cerr
		}
	}
	return n, nil
}

// copyWhenReadable copies a TCP connection to dst, taking a pooled buffer only when the
// socket has data: the poller waits on the descriptor with no buffer held.
func copyWhenReadable(dst io.Writer, src *net.TCPConn) (int64, error) {
	return copyReady(src, &copyBufPool, 0, dst.Write)
}

// copyToStream is copyWhenReadable into an HBONE stream without a copy in user space: each read
// lands behind room for a DATA frame header, and the stream sends the frames from that buffer
// (hbone.Stream.WriteHeadroom).
func copyToStream(dst *hbone.Stream, src *net.TCPConn) (int64, error) {
	return copyReady(src, &streamBufPool, hbone.FrameHeaderRoom, dst.WriteHeadroom)
}

// copyReady copies src until its end (nil) or an error: each read lands at offset room of a
// buffer from pool, and write gets the buffer up to the end of the bytes read (room included)
// and returns how many of those bytes it wrote.
func copyReady(src *net.TCPConn, pool *sync.Pool, room int, write func([]byte) (int, error)) (int64, error) {
	r, err := newReadyReader(src, pool, room)
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		bp, n, err := r.read()
		if bp == nil {
			return total, err // nil at EOF
		}
		w, werr := write((*bp)[:room+n])
		pool.Put(bp)
		total += int64(w)
		if werr != nil {
			return total, werr
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

func newReadyReader(src *net.TCPConn, pool *sync.Pool, room int) (*readyReader, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &readyReader{rc: rc, pool: pool, room: room}
	r.fn = r.readFD
	return r, nil
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
	r.bp = b
	return true
}

// onlyWriter hides a writer's ReadFrom so io.CopyBuffer really uses the pooled buffer
// (otherwise a *tls.Conn or stream would fall back to allocating its own).
type onlyWriter struct{ io.Writer }

// benign reports errors that only mean the other side went away.
func benign(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
