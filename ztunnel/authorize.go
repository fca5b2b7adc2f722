package ztunnel

import (
	"net/netip"

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

// watchPolicies re-authorizes the pod's inbound connections after every config change, until
// the pod is closed.
func (pod *podProxy) watchPolicies() {
	defer pod.bg.Done()
	for {
		changed := pod.p.store.Changed()
		select {
		case <-changed:
		case <-pod.ctx.Done():
			return
		}
		if n := pod.conns.reauthorize(pod.p.store.Load()); n > 0 {
			pod.log.Info("closed connections denied by updated policies", "count", n)
		}
	}
}
