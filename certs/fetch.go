package certs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

const (
	backoffInitial = 500 * time.Millisecond
	backoffMax     = 150 * time.Second
	backoffJitter  = 0.2
	// minRefresh keeps a certificate with a very short remaining lifetime from causing a tight loop.
	minRefresh = 500 * time.Millisecond
)

// startFetchLocked starts a fetch for e with priority prio in a new goroutine. Requires m.mu held and
// e.done == nil. After Run has returned it records errStopped instead.
func (m *Manager) startFetchLocked(e *entry, prio int) {
	if m.stopped {
		e.err = errStopped
		e.due = time.Time{}
		return
	}
	done := make(chan struct{})
	e.done = done
	e.due = time.Time{}
	m.wg.Add(1)
	go m.fetch(e, done, prio)
}

// fetch runs one Issue call for e and records the outcome and the next due time.
func (m *Manager) fetch(e *entry, done chan struct{}, prio int) {
	defer m.wg.Done()
	cert, err := m.issue(e, prio)

	m.mu.Lock()
	now := m.cfg.Now()
	if err == nil {
		err = checkIssued(cert, e.id, now)
	}
	current := m.entries[e.id] == e // false once dropped
	log := m.cfg.Logger.With("identity", e.id.String())
	if err == nil {
		e.cert, e.err, e.failures = cert, nil, 0
		if current {
			e.due = refreshTime(cert, now)
			log.Info("certificate issued", "expires", cert.NotAfter, "refresh_at", e.due)
		}
	} else {
		e.err = err
		e.failures++
		if current && !m.stopped {
			e.due = now.Add(backoff(e.failures))
			if usable(e.cert, now) && e.cert.NotAfter.Before(e.due) {
				e.due = e.cert.NotAfter
			}
			log.Warn("certificate fetch failed", "error", err, "attempt", e.failures,
				"retry_at", e.due, "serving_old", usable(e.cert, now))
		}
	}
	e.done = nil
	e.waiter = nil
	close(done)
	m.mu.Unlock()
	m.poke()
}

// issue calls the issuer for e within the in-flight bound and the issue timeout.
func (m *Manager) issue(e *entry, prio int) (*WorkloadCert, error) {
	if m.cfg.Issuer == nil {
		return nil, errors.New("no certificate issuer configured")
	}
	err := m.lim.acquire(m.baseCtx, prio, func(w *waiter) {
		m.mu.Lock()
		e.waiter = w
		m.mu.Unlock()
	})
	if err != nil {
		return nil, errStopped
	}
	defer m.lim.release()
	m.mu.Lock()
	e.waiter = nil
	forgotten := m.entries[e.id] != e
	m.mu.Unlock()
	if forgotten { // dropped while we waited for a slot
		return nil, errForgotten
	}
	ctx, cancel := context.WithTimeout(m.baseCtx, m.cfg.IssueTimeout)
	defer cancel()
	cert, err := m.cfg.Issuer.Issue(ctx, e.id)
	if err != nil && m.baseCtx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", errStopped, err)
	}
	return cert, err
}

// checkIssued rejects results an issuer must not return.
func checkIssued(c *WorkloadCert, id Identity, now time.Time) error {
	switch {
	case c == nil:
		return errors.New("issuer returned no certificate")
	case c.Identity != id:
		return fmt.Errorf("issuer returned a certificate for %s, want %s", c.Identity, id)
	case len(c.TLS.Certificate) == 0 || c.TLS.PrivateKey == nil:
		return errors.New("issuer returned a certificate without chain or private key")
	case !now.Before(c.NotAfter):
		return fmt.Errorf("issuer returned a certificate that expired at %s", c.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// refreshTime is the half-life of c, NotBefore + lifetime/2. If that has already passed (a short TTL
// with a backdated NotBefore), it is half of the remaining lifetime from now instead; never sooner
// than minRefresh from now.
func refreshTime(c *WorkloadCert, now time.Time) time.Time {
	at := c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
	if !at.After(now) {
		at = now.Add(c.NotAfter.Sub(now) / 2)
	}
	if at.Sub(now) < minRefresh {
		at = now.Add(minRefresh)
	}
	return at
}

// backoff returns the delay before retry number n (n >= 1): 500ms * 2^(n-1), ±20% jitter, at most 150s.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 20 {
		d = min(backoffInitial<<(n-1), backoffMax)
	}
	d = time.Duration(float64(d) * (1 - backoffJitter + 2*backoffJitter*rand.Float64()))
	return min(d, backoffMax)
}
