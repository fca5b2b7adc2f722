package hbone

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadline is a settable point in time exposed as a channel that is closed once it passes, for use in
// select statements (the same idea as net.Pipe's deadlines).
type deadline struct {
	mu    sync.Mutex // guards timer and ch
	timer *time.Timer
	ch    chan struct{} // closed when the deadline has passed
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

// lazyDeadline is a deadline created on first use: most streams never set one, and an unset deadline
// costs no allocation. Its nil value means "no deadline": wait returns a nil channel (never ready) and
// expired reports false.
type lazyDeadline struct {
	p atomic.Pointer[deadline]
}

// get returns the deadline, or nil if none was ever set.
func (l *lazyDeadline) get() *deadline { return l.p.Load() }

// set arms the deadline for t (see deadline.set). It reports whether the deadline object was created
// by this call: goroutines already waiting hold a nil channel for it then, and must be woken to see it.
func (l *lazyDeadline) set(t time.Time) (created bool) {
	d := l.p.Load()
	if d == nil {
		if t.IsZero() {
			return false // disarming a deadline that was never armed
		}
		if l.p.CompareAndSwap(nil, newDeadline()) {
			created = true
		}
		d = l.p.Load()
	}
	d.set(t)
	return created
}

// set arms the deadline for t; the zero time disarms it. A time in the past expires it at once.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired (or is firing): wait for its close before replacing the channel
	}
	d.timer = nil
	if isClosedChan(d.ch) {
		d.ch = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.ch)
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(dur, func() { close(ch) })
}

// wait returns a channel that is closed when the deadline passes; nil (never ready) for a nil d.
func (d *deadline) wait() <-chan struct{} {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// expired reports whether the deadline has passed; false for a nil d.
func (d *deadline) expired() bool { return d != nil && isClosedChan(d.wait()) }

func isClosedChan(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// notify does a non-blocking send on a 1-buffered wake-up channel.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
