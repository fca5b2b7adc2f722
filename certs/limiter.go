package certs

import (
	"context"
	"slices"
	"sync"
)

// Fetch priorities, most urgent first (ztunnel: RealTime, Warmup, Background).
const (
	prioGet      = iota // a caller is waiting
	prioPrefetch        // warming the cache ahead of use
	prioRenew           // scheduled renewal or retry
)

// limiter bounds concurrent Issue calls. When a slot frees up it goes to the most urgent waiter,
// first come first served within a priority.
//
// mu guards busy and queue, and the prio of every queued waiter.
type limiter struct {
	max int

	mu    sync.Mutex
	busy  int       // slots held
	queue []*waiter // waiting, in arrival order
}

// waiter is one acquire call waiting for a slot; ready is closed when the slot is handed over.
type waiter struct {
	prio  int
	ready chan struct{}
}

func newLimiter(max int) *limiter { return &limiter{max: max} }

// acquire waits for a slot. onQueued, if not nil, is called with the waiter when acquire has to wait
// (so its priority can be raised). It returns ctx's error if ctx ends first; no slot is held then.
func (l *limiter) acquire(ctx context.Context, prio int, onQueued func(*waiter)) error {
	l.mu.Lock()
	if l.busy < l.max {
		l.busy++
		l.mu.Unlock()
		return nil
	}
	w := &waiter{prio: prio, ready: make(chan struct{})}
	l.queue = append(l.queue, w)
	l.mu.Unlock()
	if onQueued != nil {
		onQueued(w)
	}
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		i := slices.Index(l.queue, w)
		if i >= 0 {
			l.queue = slices.Delete(l.queue, i, i+1)
		}
		l.mu.Unlock()
		if i < 0 { // the slot was handed over meanwhile: give it back
			l.release()
		}
		return ctx.Err()
	}
}

// release frees a slot, handing it to the most urgent waiter if there is one.
func (l *limiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		l.busy--
		return
	}
	best := 0
	for i, w := range l.queue {
		if w.prio < l.queue[best].prio {
			best = i
		}
	}
	w := l.queue[best]
	l.queue = slices.Delete(l.queue, best, best+1)
	close(w.ready)
}

// raise makes w at least as urgent as prio. It is a no-op once w got its slot.
func (l *limiter) raise(w *waiter, prio int) {
	l.mu.Lock()
	w.prio = min(w.prio, prio)
	l.mu.Unlock()
}
