package ztunnel

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ztunnel-go/ztunnel/hbone"
)

// idleAfter is the default for how long a TCP socket feeding an HBONE stream must stay silent before its copy
// parks in the idle poller and gives up its goroutine. Short enough that connections held open
// by pools and keep-alives cost no stack, long enough that a busy request/response connection
// never pays the hand-over (one epoll_ctl(2) to park, one goroutine start to wake).
const idleAfter = 2 * time.Second

// spliceAsync is splice without holding the caller's goroutine for the life of the connection:
// it returns once the connection has gone idle (or ended), and done is called exactly once, on
// whichever goroutine ends the last direction, after both connections are closed.
//
// With an HBONE stream on one side, the stream→TCP direction runs without a goroutine while idle
// (Stream.WriteToAsync) and the TCP→stream direction runs on the caller's goroutine until the
// socket has been silent for idleAfter; then it parks in idle and the goroutine is released.
// When the socket becomes readable again the copy resumes on a new goroutine. An idle tunnel
// thus holds no goroutine at all. With idle nil, or for TCP to TCP (splice(2) both ways), the
// copies block as splice's do and spliceAsync returns only when the connection has ended.
func spliceAsync(ctx context.Context, downstream, upstream net.Conn, idle *idlePoller, done func(spliceResult)) {
	a := &asyncSplice{ctx: ctx, down: downstream, up: upstream, idle: idle, done: done}
	a.pending.Store(2)
	a.stop = context.AfterFunc(ctx, a.abort)

	// With an HBONE stream on one side: outbound, the client's bytes go up the stream and the
	// stream's come back to the client; inbound, the stream's bytes go to the application and
	// the application's back up the stream.
	var st *hbone.Stream
	var tcp *net.TCPConn
	toTCP, fromTCP := &a.sent, &a.received // outbound counts
	if s, ok := upstream.(*hbone.Stream); ok && isTCP(downstream) {
		st, tcp = s, downstream.(*net.TCPConn)
	} else if s, ok := downstream.(*hbone.Stream); ok && isTCP(upstream) {
		st, tcp, toTCP, fromTCP = s, upstream.(*net.TCPConn), &a.received, &a.sent
	}
	if st != nil {
		st.WriteToAsync(tcp, func(n int64, err error) {
			toTCP.Store(n)
			a.dirDone(a.endTCPHalf(tcp, n, err))
		})
		a.resume(st, tcp, fromTCP, 0)
		return
	}
	go func() {
		n, err := copyHalf(downstream, upstream)
		a.sent.Store(n)
		a.dirDone(err)
	}()
	n, err := copyHalf(upstream, downstream)
	a.received.Store(n)
	a.dirDone(err)
}

// asyncSplice is the state of one spliceAsync.
type asyncSplice struct {
	ctx      context.Context
	down, up net.Conn
	idle     *idlePoller
	done     func(spliceResult)
	stop     func() bool // unregisters abort from ctx

	received, sent atomic.Int64 // final byte counts, stored before the direction's dirDone
	pending        atomic.Int32 // directions still running

	mu        sync.Mutex
	errs      []error       // the directions' failures; guarded by mu
	aborted   bool          // both connections are being closed; guarded by mu
	unpark    func() bool   // withdraws the parked copy, nil unless parked; guarded by mu
	parkedN   int64         // bytes the parked copy had moved; guarded by mu
	parkedCnt *atomic.Int64 // where the parked copy's count goes; guarded by mu
	closeOnce sync.Once
}

// resume copies src to dst (a stream) on the calling goroutine, counting into count from total
// bytes already moved, until src ends or fails; after the poller's idle time of silence it parks
// the copy and returns, and the copy resumes here on a new goroutine when src wakes it (see
// spliceAsync).
func (a *asyncSplice) resume(dst net.Conn, src *net.TCPConn, count *atomic.Int64, total int64) {
	armed := a.idle != nil
	for {
		if armed {
			if err := src.SetReadDeadline(time.Now().Add(a.idle.after)); err != nil {
				armed = false // closed: the copy below sees it
			}
		}
		n, err := copyHalf(dst, src)
		total += n
		if !armed || !errors.Is(err, os.ErrDeadlineExceeded) {
			count.Store(total)
			a.dirDone(err)
			return
		}
		if n > 0 {
			continue // still busy: watch another period
		}
		_ = src.SetReadDeadline(time.Time{})
		parked, perr := a.park(dst, src, count, total)
		if parked {
			return
		}
		if perr != nil {
			armed = false // no poller (shutting down): wait on this goroutine
		}
	}
}

// park hands the silent copy to the idle poller. It reports false if the splice is being
// aborted (then the copy, run once more, finds its connections closed) or parking failed (err).
func (a *asyncSplice) park(dst net.Conn, src *net.TCPConn, count *atomic.Int64, total int64) (bool, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.aborted {
		return false, nil
	}
	unpark, err := a.idle.park(rc, func() {
		a.mu.Lock()
		a.unpark = nil
		a.mu.Unlock()
		a.resume(dst, src, count, total)
	})
	if err != nil {
		return false, err
	}
	a.unpark, a.parkedN, a.parkedCnt = unpark, total, count
	return true, nil
}

// abort closes both connections, ending both directions (the first call only). A parked copy is
// ended here, as its socket will never wake it; that happens outside closeOnce, since ending the
// last direction calls abort again.
func (a *asyncSplice) abort() {
	var parkedEnded bool
	var n int64
	var count *atomic.Int64
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.aborted = true
		unpark := a.unpark
		n, count = a.parkedN, a.parkedCnt
		a.unpark = nil
		a.mu.Unlock()
		a.down.Close()
		a.up.Close()
		parkedEnded = unpark != nil && unpark()
	})
	if parkedEnded {
		count.Store(n)
		a.dirDone(net.ErrClosed)
	}
}

// endTCPHalf is endHalf for the stream→TCP direction, except that when the other direction has
// ended already the half-close is left out: both sockets are closed right after, which sends
// the same FIN (the socket has no unread data: its reading direction saw end of stream) and
// saves a shutdown(2) per connection.
func (a *asyncSplice) endTCPHalf(dst net.Conn, n int64, err error) error {
	if a.pending.Load() == 1 && (err == nil || benign(err)) {
		return nil
	}
	_, err = endHalf(dst, n, err)
	return err
}

// dirDone records the end of one direction; a failure aborts the splice. The last direction to
// end closes both connections and reports the result.
func (a *asyncSplice) dirDone(err error) {
	if err != nil && !benign(err) {
		a.mu.Lock()
		a.errs = append(a.errs, err)
		a.mu.Unlock()
		a.abort()
	}
	if a.pending.Add(-1) != 0 {
		return
	}
	a.stop()
	a.abort()
	res := spliceResult{Received: a.received.Load(), Sent: a.sent.Load()}
	if a.ctx.Err() != nil {
		res.Err = context.Cause(a.ctx)
	} else {
		a.mu.Lock()
		res.Err = errors.Join(a.errs...)
		a.mu.Unlock()
	}
	a.done(res)
}
