package ztunnel

import (
	"context"
	"net/netip"
	"sync"

	"github.com/ztunnel-go/ztunnel/authz"
	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/workload"
)

// policyError is the error of a connection that a policy denies. Its text is the reference's
// access-log text.
type policyError struct {
	reason string
	late   bool // an open connection that a policy change denied
}

func (e *policyError) Error() string {
	if e.late {
		return "connection closed due to policy change: " + e.reason
	}
	return "connection closed due to policy rejection: " + e.reason
}

// authorize evaluates the L4 policies of dst (the local pod's workload) for an inbound
// connection (ztunnel-behavior.md §8). It returns nil when the connection may proceed.
func authorize(snap *workload.Snapshot, dst *workload.Workload, c authz.Conn) error {
	d := authz.Evaluate(snap.PoliciesFor(dst), c)
	if d.Allow {
		return nil
	}
	return &policyError{reason: d.Reason}
}

// authzConn builds the authorization view of an inbound connection.
func authzConn(src, dst netip.AddrPort, peer *certs.Identity) authz.Conn {
	c := authz.Conn{Src: src, Dst: dst}
	if peer != nil {
		c.SrcIdentity = &authz.Identity{TrustDomain: peer.TrustDomain, Namespace: peer.Namespace, ServiceAccount: peer.ServiceAccount}
	}
	return c
}

// inboundConn is an authorized inbound connection that stays subject to policy: when the
// policies change, it is evaluated again and closed if now denied.
type inboundConn struct {
	conn   authz.Conn
	dstUID string
	cancel context.CancelCauseFunc
}

// connTracker holds a pod's live inbound connections.
type connTracker struct {
	mu    sync.Mutex // guards conns
	conns map[*inboundConn]struct{}
}

// track registers a connection; the returned function unregisters it.
func (t *connTracker) track(ic *inboundConn) (untrack func()) {
	t.mu.Lock()
	if t.conns == nil {
		t.conns = map[*inboundConn]struct{}{}
	}
	t.conns[ic] = struct{}{}
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.conns, ic)
		t.mu.Unlock()
	}
}

// reauthorize re-evaluates every tracked connection against snap and closes those now
// denied. It returns how many it closed.
func (t *connTracker) reauthorize(snap *workload.Snapshot) int {
	t.mu.Lock()
	conns := make([]*inboundConn, 0, len(t.conns))
	for ic := range t.conns {
		conns = append(conns, ic)
	}
	t.mu.Unlock()
	closed := 0
	for _, ic := range conns {
		dst := snap.WorkloadByUID(ic.dstUID)
		reason := ""
		if dst == nil {
			reason = "destination workload " + ic.dstUID + " is gone"
		} else if d := authz.Evaluate(snap.PoliciesFor(dst), ic.conn); !d.Allow {
			reason = d.Reason
		}
		if reason != "" {
			ic.cancel(&policyError{reason: reason, late: true})
			closed++
		}
	}
	return closed
}

// watchPolicies re-authorizes the pod's inbound connections after every config change, until
// the pod is closed.
func (pod *podProxy) watchPolicies() {
	defer pod.wg.Done()
	for {
		changed := pod.p.store.Changed()
		select {
		case <-changed:
		case <-pod.ctx.Done():
			return
		}
		if n := pod.inboundConns.reauthorize(pod.p.store.Load()); n > 0 {
			pod.log.Info("closed connections denied by updated policies", "count", n)
		}
	}
}
