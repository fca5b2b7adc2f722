package ztunnel

import (
	"context"
	"sort"
	"sync"

	"github.com/ztunnel-go/ztunnel/authz"
	"github.com/ztunnel-go/ztunnel/workload"
)

// trackedConn is one live connection of a pod. The handler that owns it sets its fields
// through the tracker (set, setPolicy), so that dumps and policy re-evaluation, which run on
// other goroutines, read a consistent view.
type trackedConn struct {
	cancel context.CancelCauseFunc // ends the connection (policy change, forced drain)

	// Guarded by connTracker.mu.
	view   ConnView
	policy *authz.Conn // set once an inbound connection was authorized; nil otherwise
	dstUID string      // the local workload whose policies apply
}

// ConnView describes a live connection as the admin dump shows it (workloadState).
type ConnView struct {
	Direction   string // "inbound" | "outbound"
	Src         string // client address
	OriginalDst string // where the client was going ("" if unknown yet)
	ActualDst   string // where the proxy connected ("" until it did)
	Protocol    string // "TCP" | "HBONE" | "DOUBLEHBONE"
}

// connTracker holds a pod's live connections. It also ends them when the pod stops (endAll):
// a connection's context is not a child of the pod's, which would register every connection in
// the pod context's children under its lock.
type connTracker struct {
	mu    sync.Mutex // guards conns, ended and the guarded fields of every trackedConn
	conns map[*trackedConn]struct{}
	ended error // set by endAll: connections tracked later are cancelled with it at once
}

// track registers a connection; the returned function unregisters it. After endAll, tc is
// cancelled at once.
func (t *connTracker) track(tc *trackedConn) (untrack func()) {
	t.mu.Lock()
	if t.conns == nil {
		t.conns = map[*trackedConn]struct{}{}
	}
	t.conns[tc] = struct{}{}
	ended := t.ended
	t.mu.Unlock()
	if ended != nil {
		tc.cancel(ended)
	}
	return func() {
		t.mu.Lock()
		delete(t.conns, tc)
		t.mu.Unlock()
	}
}

// set publishes what is known about a connection.
func (t *connTracker) set(tc *trackedConn, v ConnView) {
	t.mu.Lock()
	tc.view = v
	t.mu.Unlock()
}

// setPolicy makes an authorized inbound connection subject to later policy changes.
func (t *connTracker) setPolicy(tc *trackedConn, c authz.Conn, dstUID string) {
	t.mu.Lock()
	tc.policy, tc.dstUID = &c, dstUID
	t.mu.Unlock()
}

// views returns the live connections, sorted for stable output.
func (t *connTracker) views() []ConnView {
	t.mu.Lock()
	out := make([]ConnView, 0, len(t.conns))
	for tc := range t.conns {
		out = append(out, tc.view)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Direction != out[j].Direction {
			return out[i].Direction < out[j].Direction
		}
		return out[i].Src < out[j].Src
	})
	return out
}

// reauthorize re-evaluates every authorized connection against snap and closes those now
// denied. It returns how many it closed.
func (t *connTracker) reauthorize(snap *workload.Snapshot) int {
	type check struct {
		tc     *trackedConn
		conn   authz.Conn
		dstUID string
	}
	t.mu.Lock()
	checks := make([]check, 0, len(t.conns))
	for tc := range t.conns {
		if tc.policy != nil {
			checks = append(checks, check{tc, *tc.policy, tc.dstUID})
		}
	}
	t.mu.Unlock()
	closed := 0
	for _, c := range checks {
		reason := ""
		if dst := snap.WorkloadByUID(c.dstUID); dst == nil {
			reason = "destination workload " + c.dstUID + " is gone"
		} else if d := authz.Evaluate(snap.PoliciesFor(dst), c.conn); !d.Allow {
			reason = d.Reason
		}
		if reason != "" {
			c.tc.cancel(&policyError{reason: reason, late: true})
			closed++
		}
	}
	return closed
}

// endAll cancels every live connection with cause, and every connection tracked later with the
// first cause endAll was given (as a context keeps its first cancellation cause).
func (t *connTracker) endAll(cause error) {
	t.mu.Lock()
	if t.ended == nil {
		t.ended = cause
	}
	cancels := make([]context.CancelCauseFunc, 0, len(t.conns))
	for tc := range t.conns {
		cancels = append(cancels, tc.cancel)
	}
	t.mu.Unlock()
	for _, cancel := range cancels {
		cancel(cause)
	}
}

// count is the number of live connections.
func (t *connTracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}
