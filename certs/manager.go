package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	// Issuer obtains certificates. Required: with a nil Issuer every fetch fails.
	Issuer Issuer
	// MaxInFlight bounds concurrent Issue calls across all identities. Zero means 8.
	MaxInFlight int
	// IssueTimeout bounds one Issue call. Zero means 1 minute.
	IssueTimeout time.Duration
	// Logger receives issuance and renewal events. Nil means slog.Default().
	Logger *slog.Logger
	// Now returns the current time; it decides validity and schedules. Nil means time.Now.
	Now func() time.Time
	// UnusedTTL is how long an identity nobody holds (see Manager.Hold) stays after its last Get or
	// Prefetch: then it is dropped, neither renewed nor kept in memory, and a later Get fetches it
	// again. Zero means DefaultUnusedTTL.
	UnusedTTL time.Duration
}

// DefaultUnusedTTL is the default ManagerConfig.UnusedTTL. An hour outlives the HBONE pool's idle
// timeout (5 minutes) many times over, so a pod that talks now and then keeps its certificate, and it
// is well under the 12 hours after which a default (24h) certificate would be renewed.
const DefaultUnusedTTL = time.Hour

func (c ManagerConfig) withDefaults() ManagerConfig {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 8
	}
	if c.IssueTimeout <= 0 {
		c.IssueTimeout = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.UnusedTTL <= 0 {
		c.UnusedTTL = DefaultUnusedTTL
	}
	return c
}

var (
	// errStopped is returned for fetches after Run has returned.
	errStopped = errors.New("certificate manager stopped")
	// errForgotten ends a queued fetch whose identity was dropped before it could start.
	errForgotten = errors.New("identity no longer needed")
)

// Manager caches one certificate per identity and keeps it fresh.
//
// A certificate is fetched on the first Get, Prefetch or Hold of its identity; concurrent requests for
// the same identity share one Issue call. Each certificate is renewed at half its lifetime
// (NotBefore + (NotAfter-NotBefore)/2); a failed fetch is retried with exponential backoff (500ms, x2,
// ±20% jitter, at most 150s) while the previous certificate, if unexpired, keeps being served.
//
// Only identities in use are kept. An identity is held while at least one Hold of it is unreleased;
// an identity nobody holds is dropped UnusedTTL after its last Get or Prefetch (at once if that has
// passed when its last hold is released): it is no longer renewed, it leaves Dump, and a later Get
// fetches it again. A fetch still waiting for a MaxInFlight slot then ends without calling the
// issuer; one already calling it completes first, and the identity is dropped when it ends if it is
// still unused then.
//
// Renewals, retries and drops are driven by Run; Get works without Run (it fetches on demand), but
// nothing is renewed ahead of time then, and unused identities are only hidden from Dump, not freed.
// After Run returns, in-flight Issue calls are cancelled and no new ones start.
//
// # Concurrency
//
// All methods are safe for concurrent use. mu guards entries, running, stopped and every field of every
// entry (including entries already dropped). Issue is never called with mu held. Each fetch runs in its
// own goroutine and waits for a limiter slot; a fetch someone is waiting for in Get goes first. Lock
// order: mu, then the limiter's mutex. Run waits for all fetches before returning.
type Manager struct {
	cfg  ManagerConfig
	lim  *limiter      // bounds Issue calls in flight; Get before Prefetch before renewals
	wake chan struct{} // capacity 1: the schedule changed, Run should look again
	wg   sync.WaitGroup

	// baseCtx is the lifetime of the manager's Issue calls (not a request context): shared fetches
	// must not die with the caller that started them. cancel is called when Run returns.
	baseCtx context.Context
	cancel  context.CancelFunc

	mu      sync.Mutex
	entries map[Identity]*entry
	running bool // Run has been called
	stopped bool // Run has returned
}

// entry is the state of one identity. All fields are guarded by Manager.mu.
type entry struct {
	id       Identity
	cert     *WorkloadCert // last good certificate, possibly expired; nil before the first success
	err      error         // error of the last attempt; nil after a success
	done     chan struct{} // non-nil while a fetch is in progress; closed when it ends
	due      time.Time     // when Run starts the next fetch (renewal or retry); zero: nothing scheduled
	failures int           // consecutive failures, for backoff
	waiter   *waiter       // the fetch's place in the limiter queue while it waits; nil otherwise
	lastUse  time.Time     // last Get or Prefetch; zero if only ever held
	holds    int           // unreleased Holds; while > 0 the identity is never dropped
}

// NewManager returns a Manager. Call Run to enable renewals.
func NewManager(cfg ManagerConfig) *Manager {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		cfg:     cfg,
		lim:     newLimiter(cfg.MaxInFlight),
		wake:    make(chan struct{}, 1),
		baseCtx: ctx,
		cancel:  cancel,
		entries: make(map[Identity]*entry),
	}
}

// Get returns a valid certificate for id and counts as a use of id (see UnusedTTL). A cached unexpired
// certificate is returned at once.
// Otherwise Get waits for the identity's fetch (starting one if none is running) until it ends or ctx
// is done. While a failed identity is waiting for its backoff retry, Get returns the last error at once
// instead of calling the issuer again.
func (m *Manager) Get(ctx context.Context, id Identity) (*WorkloadCert, error) {
	if err := id.validate(); err != nil {
		return nil, fmt.Errorf("get certificate for %s: invalid identity: %w", id, err)
	}
	m.mu.Lock()
	now := m.cfg.Now()
	e := m.entries[id]
	if e == nil {
		e = &entry{id: id}
		m.entries[id] = e
		m.startFetchLocked(e, prioGet)
	}
	e.lastUse = now
	if cert := e.cert; usable(cert, now) {
		m.mu.Unlock()
		return cert, nil
	}
	if e.done == nil {
		if e.err != nil && e.due.After(now) {
			err := e.err
			retry := e.due.Sub(now)
			m.mu.Unlock()
			return nil, fmt.Errorf("get certificate for %s (next attempt in %s): %w", id, retry.Round(time.Millisecond), err)
		}
		m.startFetchLocked(e, prioGet)
	}
	if e.waiter != nil { // a queued prefetch or renewal: someone is waiting for it now
		m.lim.raise(e.waiter, prioGet)
	}
	done := e.done
	if done == nil { // stopped
		err := e.err
		m.mu.Unlock()
		return nil, fmt.Errorf("get certificate for %s: %w", id, err)
	}
	m.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("get certificate for %s: %w", id, context.Cause(ctx))
	}
	m.mu.Lock()
	cert, err := e.cert, e.err
	m.mu.Unlock()
	if usable(cert, m.cfg.Now()) {
		return cert, nil
	}
	if err == nil {
		err = errors.New("certificate expired")
	}
	return nil, fmt.Errorf("get certificate for %s: %w", id, err)
}

// Prefetch starts fetching id in the background if it is not cached or being fetched already. It
// counts as a use of id, as Get does. Invalid identities are logged and ignored.
func (m *Manager) Prefetch(id Identity) {
	if err := id.validate(); err != nil {
		m.cfg.Logger.Warn("ignoring prefetch of invalid identity", "identity", id.String(), "error", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trackLocked(id).lastUse = m.cfg.Now()
}

// Hold keeps id's certificate fetched and renewed, used or not, until release is called: for
// identities that must be ready before their first connection (the pods this proxy serves, the
// workloads on its node). It starts a fetch, as Prefetch does, if id is not tracked yet. Holds are
// counted: id stays held until every Hold of it has been released. Holding is not a use: once the
// last hold is released, id is dropped UnusedTTL after its last Get or Prefetch, at once if that has
// passed or there was none. release may be called more than once; only the first call counts.
// An invalid identity is logged and not held; its release does nothing.
func (m *Manager) Hold(id Identity) (release func()) {
	if err := id.validate(); err != nil {
		m.cfg.Logger.Warn("ignoring hold of invalid identity", "identity", id.String(), "error", err)
		return func() {}
	}
	m.mu.Lock()
	e := m.trackLocked(id)
	e.holds++
	m.mu.Unlock()
	// e stays in entries while it is held: only unheld entries are dropped.
	return sync.OnceFunc(func() { m.release(e) })
}

// release ends one Hold of e, dropping e if that was the last hold and e is unused.
func (m *Manager) release(e *entry) {
	m.mu.Lock()
	e.holds--
	if m.staleLocked(e, m.cfg.Now()) {
		m.dropLocked(e)
	}
	m.mu.Unlock()
	m.poke() // e's expiry is now part of the schedule
}

// trackLocked returns id's entry, creating it and starting its fetch (prefetch priority) if id is not
// tracked yet. Requires m.mu held.
func (m *Manager) trackLocked(id Identity) *entry {
	e := m.entries[id]
	if e == nil {
		e = &entry{id: id}
		m.entries[id] = e
		m.startFetchLocked(e, prioPrefetch)
	}
	return e
}

// staleLocked reports whether e is to be dropped at now: nobody holds it, it was not used for
// UnusedTTL, and it has no fetch calling the issuer (a Get may be waiting for that one; a fetch still
// queued for a slot has no such Get, since a Get counts as a use). Requires m.mu held.
func (m *Manager) staleLocked(e *entry, now time.Time) bool {
	return e.holds == 0 && m.droppable(e) && !now.Before(m.unusedUntil(e))
}

// droppable reports whether e has no fetch calling the issuer. Requires m.mu held.
func (m *Manager) droppable(e *entry) bool { return e.done == nil || e.waiter != nil }

// unusedUntil is when e becomes stale if it is neither used nor held until then.
func (m *Manager) unusedUntil(e *entry) time.Time {
	if e.lastUse.IsZero() {
		return time.Time{} // only ever held: stale as soon as released
	}
	return e.lastUse.Add(m.cfg.UnusedTTL)
}

// dropLocked forgets e: it is no longer renewed and its certificate is released. Requires m.mu held.
func (m *Manager) dropLocked(e *entry) {
	if m.entries[e.id] != e {
		return
	}
	delete(m.entries, e.id)
	log := m.cfg.Logger.With("identity", e.id.String())
	if e.lastUse.IsZero() {
		log.Debug("certificate dropped: no longer held, never used")
	} else {
		log.Debug("certificate dropped: no longer held, unused", "last_use", e.lastUse, "unused_ttl", m.cfg.UnusedTTL)
	}
}

// Run starts renewals and retries as they fall due, until ctx is done. It then cancels in-flight
// Issue calls, waits for them, and returns nil. Run may be called only once.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("certificate manager: Run called more than once")
	}
	m.running = true
	m.mu.Unlock()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if next, ok := m.startDue(); ok {
			timer.Reset(max(next.Sub(m.cfg.Now()), 0))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			m.mu.Lock()
			m.stopped = true
			m.mu.Unlock()
			m.cancel()
			m.wg.Wait()
			return nil
		case <-timer.C:
		case <-m.wake:
		}
	}
}

// startDue drops the stale entries, starts the fetches that are due and returns the earliest time
// something is due again (a fetch, or an entry becoming stale), if any.
func (m *Manager) startDue() (next time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	soonest := func(t time.Time) {
		if !ok || t.Before(next) {
			next, ok = t, true
		}
	}
	for _, e := range m.entries {
		if m.staleLocked(e, now) {
			m.dropLocked(e) // deleting during range is fine
			continue
		}
		if e.done == nil && !e.due.IsZero() && !now.Before(e.due) {
			m.startFetchLocked(e, prioRenew)
		}
		if !e.due.IsZero() {
			soonest(e.due)
		}
		if e.holds == 0 && m.droppable(e) { // a fetch calling the issuer pokes Run when it ends
			soonest(m.unusedUntil(e))
		}
	}
	return next, ok
}

// poke tells Run that the schedule changed.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// usable reports whether c can be served at now.
func usable(c *WorkloadCert, now time.Time) bool {
	return c != nil && now.Before(c.NotAfter)
}
