package ztunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// closeWriter is implemented by *net.TCPConn, *tls.Conn and *hbone.Stream: the connections
// that can signal end-of-stream in one direction while still reading the other.
type closeWriter interface{ CloseWrite() error }

// copyBufPool holds the buffers of copies that cannot use splice(2) (those involving an HBONE
// stream). A buffer is only held while bytes are moving.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

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
func splice(ctx context.Context, downstream, upstream net.Conn) spliceResult {
	var res spliceResult
	var wg sync.WaitGroup
	abort := sync.OnceFunc(func() {
		downstream.Close()
		upstream.Close()
	})
	stop := context.AfterFunc(ctx, abort)
	defer stop()

	errs := make([]error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.Sent, errs[1] = copyHalf(downstream, upstream)
		if errs[1] != nil {
			abort()
		}
	}()
	res.Received, errs[0] = copyHalf(upstream, downstream)
	if errs[0] != nil {
		abort()
	}
	wg.Wait()
	abort()
	if ctx.Err() != nil {
		res.Err = context.Cause(ctx)
	} else {
		res.Err = errors.Join(errs[0], errs[1])
	}
	return res
}

// copyHalf copies src to dst until src ends, then half-closes dst.
func copyHalf(dst, src net.Conn) (int64, error) {
	var n int64
	var err error
	if _, ok := dst.(*net.TCPConn); ok {
		// TCP to TCP: (*net.TCPConn).ReadFrom uses splice(2), so no bytes enter user space.
		n, err = io.Copy(dst, src)
	} else {
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

// onlyWriter hides a writer's ReadFrom so io.CopyBuffer really uses the pooled buffer
// (otherwise a *tls.Conn or stream would fall back to allocating its own).
type onlyWriter struct{ io.Writer }

// benign reports errors that only mean the other side went away.
func benign(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
