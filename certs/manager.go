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
}

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
	return c
}

var (
	// errStopped is returned for fetches after Run has returned.
	errStopped = errors.New("certificate manager stopped")
	// errForgotten ends a queued fetch whose identity was forgotten before it could start.
	errForgotten = errors.New("identity no longer needed")
)

// Manager caches one certificate per identity and keeps it fresh.
//
// A certificate is fetched on the first Get or Prefetch of its identity; concurrent requests for the
// same identity share one Issue call. Each certificate is renewed at half its lifetime
// (NotBefore + (NotAfter-NotBefore)/2); a failed fetch is retried with exponential backoff (500ms, x2,
// ±20% jitter, at most 150s) while the previous certificate, if unexpired, keeps being served.
// Renewals and retries are driven by Run; Get works without Run (it fetches on demand), but nothing is
// renewed ahead of time then. After Run returns, in-flight Issue calls are cancelled and no new ones
// start.
//
// # Concurrency
//
// All methods are safe for concurrent use. mu guards entries, running, stopped and every field of every
// entry (including entries already removed by Forget). Issue is never called with mu held. Each fetch
// runs in its own goroutine and waits for a limiter slot; a fetch someone is waiting for in Get goes
// first. Lock order: mu, then the limiter's mutex. Run waits for all fetches before returning.
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

// Get returns a valid certificate for id. A cached unexpired certificate is returned at once.
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

// Prefetch starts fetching id in the background if it is not cached or being fetched already.
// Invalid identities are ignored.
func (m *Manager) Prefetch(id Identity) {
	if err := id.validate(); err != nil {
		m.cfg.Logger.Warn("ignoring prefetch of invalid identity", "identity", id.String(), "error", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[id] == nil {
		e := &entry{id: id}
		m.entries[id] = e
		m.startFetchLocked(e, prioPrefetch)
	}
}

// Forget drops id's certificate and stops renewing it. A fetch already calling the issuer still
// completes and its result goes to the Get calls waiting for it, but is not cached; a fetch still
// waiting for a MaxInFlight slot ends without calling the issuer.
func (m *Manager) Forget(id Identity) {
	m.mu.Lock()
	delete(m.entries, id)
	m.mu.Unlock()
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

// startDue starts the fetches that are due and returns the earliest remaining due time, if any.
func (m *Manager) startDue() (next time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	for _, e := range m.entries {
		if e.done == nil && !e.due.IsZero() && !now.Before(e.due) {
			m.startFetchLocked(e, prioRenew)
		}
		if !e.due.IsZero() && (!ok || e.due.Before(next)) {
			next, ok = e.due, true
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
