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

// streamBufPool holds the buffers of copies from a TCP socket into an HBONE stream: a whole
// number of the stream's largest DATA frames, so every read goes out as full TLS records, and
// large, so a bulk transfer takes few read(2)s.
var streamBufPool = sync.Pool{New: func() any { b := make([]byte, 4*hbone.MaxDataWrite); return &b }}

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
//
// The downstream→upstream copy runs on the caller's goroutine, the other on one goroutine of
// its own; the state they share lives in one allocation.
func splice(ctx context.Context, downstream, upstream net.Conn) spliceResult {
	s := &spliceState{down: downstream, up: upstream}
	stop := context.AfterFunc(ctx, s.abort)
	defer stop()

	s.wg.Add(1)
	go s.copyUpstream()
	var res spliceResult
	var errDown error
	res.Received, errDown = copyHalf(upstream, downstream)
	if errDown != nil {
		s.abort()
	}
	s.wg.Wait()
	s.abort()
	res.Sent = s.sent
	if ctx.Err() != nil {
		res.Err = context.Cause(ctx)
	} else {
		res.Err = errors.Join(errDown, s.errUp)
	}
	return res
}

// spliceState is what the two copies of a splice share.
type spliceState struct {
	down, up net.Conn
	once     sync.Once // closes both connections once
	wg       sync.WaitGroup

	// Written by copyUpstream, read after wg.Wait.
	sent  int64
	errUp error
}

// copyUpstream copies upstream to downstream (the bytes "sent" to the client).
func (s *spliceState) copyUpstream() {
	defer s.wg.Done()
	s.sent, s.errUp = copyHalf(s.down, s.up)
	if s.errUp != nil {
		s.abort()
	}
}

// abort closes both connections (the first call only).
func (s *spliceState) abort() { s.once.Do(s.closeBoth) }

func (s *spliceState) closeBoth() {
	s.down.Close()
	s.up.Close()
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
		pool := &copyBufPool
		if _, ok := dst.(*hbone.Stream); ok {
			pool = &streamBufPool
		}
		n, err = copyWhenReadable(dst, tcpSrc, pool)
	default:
		bp := copyBufPool.Get().(*[]byte)
		n, err = io.CopyBuffer(onlyWriter{dst}, src, *bp)
		copyBufPool.Put(bp)
	}
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
// socket has data: the poller waits on the descriptor with no buffer held. Buffers come from
// pool.
func copyWhenReadable(dst io.Writer, src *net.TCPConn, pool *sync.Pool) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		var bp *[]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			b := pool.Get().(*[]byte)
			for {
				n, rerr = syscall.Read(int(fd), *b)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				pool.Put(b)
				return false // not readable yet: wait without a buffer
			}
			bp = b
			return true
		})
		if err == nil {
			err = rerr
		}
		if err != nil || n <= 0 {
			if bp != nil {
				pool.Put(bp)
			}
			if err == nil {
				return total, nil // EOF
			}
			return total, err
		}
		w, werr := dst.Write((*bp)[:n])
		pool.Put(bp)
		total += int64(w)
		if werr != nil {
			return total, werr
		}
	}
}

// onlyWriter hides a writer's ReadFrom so io.CopyBuffer really uses the pooled buffer
// (otherwise a *tls.Conn or stream would fall back to allocating its own).
type onlyWriter struct{ io.Writer }

// benign reports errors that only mean the other side went away.
func benign(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
