package relay

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Relay. Zero values mean the defaults given per field.
type Config struct {
	// IdleAfter is how long a TCP source must stay silent before its copy parks and gives up its
	// goroutine. Short enough that connections held open by pools and keep-alives cost no stack,
	// long enough that a busy request/response connection never pays the hand-over (one
	// epoll_ctl(2) to park, one goroutine start to wake). Zero means 2 s; negative never parks.
	IdleAfter time.Duration
	// OnParks, if set, is called (on a parking goroutine, without locks held) after every 256
	// parks: their goroutines' stacks are free heap memory now, which the caller may want to give
	// back to the OS.
	OnParks func()
	// MaxIdlePipes is how many pipes are kept for reuse by TCP-to-TCP splices; pipes released
	// beyond it are closed at once. Zero means 32.
	MaxIdlePipes int
}

// defaultIdleAfter is Config.IdleAfter's default.
const defaultIdleAfter = 2 * time.Second

// Relay relays connection pairs (Run). It is safe for concurrent use; one Relay serves a whole
// proxy, sharing its idle poller and pipe pool among all connections.
type Relay struct {
	idle  *idlePoller // parks silent TCP sources; nil: never park
	pipes pipePool
}

// New returns a Relay. It fails only if parking was asked for (IdleAfter >= 0) and the kernel
// refused the epoll instance it needs; a Relay with IdleAfter < 0 cannot fail.
func New(cfg Config) (*Relay, error) {
	r := &Relay{}
	r.pipes.max = cfg.MaxIdlePipes
	if r.pipes.max <= 0 {
		r.pipes.max = 32
	}
	if cfg.IdleAfter >= 0 {
		idle, err := newIdlePoller(cfg.IdleAfter)
		if err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		idle.onParks = cfg.OnParks
		r.idle = idle
	}
	return r, nil
}

// Close stops parking: parked copies are woken and find their sockets as they are. It closes the
// pipes kept for reuse. Connections still running go on without parking.
func (r *Relay) Close() {
	if r.idle != nil {
		r.idle.close()
	}
	r.pipes.close()
}

// Stats is what a Relay holds right now, for tests and leak checks.
type Stats struct {
	Parked int // copies parked in the idle poller
	Pipes  int // pipes open: in use by splices, or kept for reuse
}

// Stats returns what r holds right now.
func (r *Relay) Stats() Stats {
	var s Stats
	if r.idle != nil {
		s.Parked = r.idle.numParked()
	}
	s.Pipes = int(r.pipes.open.Load())
	return s
}

// Run relays down (the side that opened the connection) and up until both directions have ended or
// ctx is done, then closes both (see the package documentation for how a connection ends). It
// returns at once: the copies run on goroutines of their own, none while a TCP source is parked.
// done is called exactly once, on whichever goroutine ends the last direction, after both
// connections are closed. Run takes ownership of down and up.
func (r *Relay) Run(ctx context.Context, down, up net.Conn, done func(Result)) {
	p := &pair{r: r, ctx: ctx, done: done}
	p.sides[0].init(down, "downstream")
	p.sides[1].init(up, "upstream")
	p.dirs[0] = direction{p: p, src: &p.sides[0], dst: &p.sides[1], count: &p.received}
	p.dirs[1] = direction{p: p, src: &p.sides[1], dst: &p.sides[0], count: &p.sent}
	p.pending.Store(2)
	p.stop = context.AfterFunc(ctx, func() { p.abort(true) })
	p.dirs[0].start()
	p.dirs[1].start()
}

// pair is the state of one Run.
type pair struct {
	r    *Relay
	ctx  context.Context
	done func(Result)
	stop func() bool // unregisters the context's abort

	sides          [2]side      // downstream, upstream
	dirs           [2]direction // downstream→upstream, upstream→downstream
	received, sent atomic.Int64 // final byte counts, stored before the direction ends
	pending        atomic.Int32 // directions still running
	closeOnce      sync.Once    // both connections are closed once: reset (abort) or not (finish)

	mu         sync.Mutex
	err        error // the failure that aborted the relay; guarded by mu
	aborted    bool  // both connections are being reset; guarded by mu
	ctxAborted bool  // the context ended the relay; guarded by mu
}

// side is one end of a relayed connection.
type side struct {
	c    net.Conn
	name string
	tcp  *net.TCPConn // c, if it is one
	tun  tunnel       // c, if it is one
	end  End          // guarded by pair.mu
}

func (s *side) init(c net.Conn, name string) {
	s.c, s.name = c, name
	s.tcp, _ = c.(*net.TCPConn)
	s.tun, _ = c.(tunnel)
}

// reset closes the side abortively: a TCP socket with RST, a tunnel with RST_STREAM.
func (s *side) reset() {
	switch {
	case s.tcp != nil:
		ResetClose(s.tcp)
	case s.tun != nil:
		_ = s.tun.Abort()
	default:
		_ = s.c.Close()
	}
}

// ResetClose closes c with a TCP reset (SO_LINGER 0), so its peer sees a failed connection rather
// than an orderly end; connections other than TCP are just closed.
func ResetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// abort resets both connections, ending both directions (the first call only). Parked copies are
// ended here, as their sockets will never wake them; that happens outside closeOnce, since ending
// the last direction may call abort again.
func (p *pair) abort(byCtx bool) {
	var withdrawn []*direction
	p.closeOnce.Do(func() {
		var unparks [2]func() bool
		p.mu.Lock()
		p.aborted = true
		p.ctxAborted = byCtx
		for i := range p.dirs {
			unparks[i], p.dirs[i].unpark = p.dirs[i].unpark, nil
		}
		p.mu.Unlock()
		p.sides[0].reset()
		p.sides[1].reset()
		for i, unpark := range unparks {
			if unpark != nil && unpark() {
				withdrawn = append(withdrawn, &p.dirs[i])
			}
		}
	})
	for _, d := range withdrawn {
		d.ended(d.parkedN, net.ErrClosed, false, "read")
	}
}

// finish runs when the last direction has ended: it closes both connections (unless abort did),
// and reports the result.
func (p *pair) finish() {
	p.stop()
	p.closeOnce.Do(func() {
		_ = p.sides[0].c.Close()
		_ = p.sides[1].c.Close()
	})
	p.mu.Lock()
	res := Result{Received: p.received.Load(), Sent: p.sent.Load(), Down: p.sides[0].end, Up: p.sides[1].end, Err: p.err}
	if res.Err == nil && p.ctxAborted {
		res.Err = context.Cause(p.ctx)
	}
	p.mu.Unlock()
	p.done(res)
}

// direction is one of the two copies of a pair.
type direction struct {
	p        *pair
	src, dst *side
	count    *atomic.Int64

	// While the copy is parked (guarded by pair.mu): the poller's withdraw function, and the bytes
	// moved so far.
	unpark  func() bool
	parkedN int64
}

// start runs the direction's copy: a TCP source on a goroutine that parks when the socket is
// silent, a tunnel into a TCP socket without any goroutine while idle, anything else on a plain
// goroutine.
func (d *direction) start() {
	switch {
	case d.src.tcp != nil:
		go d.pump(0)
	case d.src.tun != nil && d.dst.tcp != nil:
		sk := newSink(d.dst.tcp)
		d.src.tun.WriteToAsync(sk, func(n int64, err error) {
			if sk.werr != nil && err != nil {
				d.ended(n, err, true, "write")
				return
			}
			d.endOfSource(n, err)
		})
	default:
		go d.copyPlain()
	}
}

// endOfSource ends the direction after its source ended with err (nil at end of stream): a clean
// end is passed on as a half-close.
func (d *direction) endOfSource(total int64, err error) {
	if err != nil {
		d.ended(total, err, false, "read")
		return
	}
	if herr := d.halfClose(); herr != nil {
		d.ended(total, herr, true, "half-close")
		return
	}
	d.ended(total, nil, false, "")
}

// halfClose passes the end of the source's stream on to the destination. For a TCP destination
// whose other direction has ended already it is left out: both sockets are closed right after,
// which sends the same FIN (the socket has no unread data: its reading direction saw end of
// stream), and saves a shutdown(2) per connection.
func (d *direction) halfClose() error {
	if d.dst.tcp != nil && d.p.pending.Load() == 1 {
		return nil
	}
	if cw, ok := d.dst.c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ended records the end of the direction after total bytes: err is nil when the source reached end
// of stream and it was passed on, else the failure, of the destination if atDst (op says what was
// being done). A failure aborts the relay; failures after an abort are its own doing and not
// recorded. The last direction to end finishes the relay.
func (d *direction) ended(total int64, err error, atDst bool, op string) {
	d.count.Store(total)
	p := d.p
	p.mu.Lock()
	switch {
	case err == nil:
		if d.src.end == Closed {
			d.src.end = FIN
		}
	case !p.aborted:
		s := d.src
		if atDst {
			s = d.dst
		}
		s.end = classify(err)
		if p.err == nil {
			p.err = &Error{Side: s.name, End: s.end, Op: op, Err: err}
		}
	}
	p.mu.Unlock()
	if err != nil {
		p.abort(false)
	}
	if p.pending.Add(-1) == 0 {
		p.finish()
	}
}
