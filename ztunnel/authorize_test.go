package ztunnel

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/workload"
)

func TestAuthorizeAndReauthorize(t *testing.T) {
	dst := lbWorkload("server", "", workload.Locality{}, "10.0.0.2")
	allowClient := &workload.Policy{
		Name: "allow-client", Namespace: "default", Scope: workload.PolicyScopeNamespace, Action: workload.PolicyActionAllow,
		Rules: [][][]workload.Match{{{{Principals: []workload.StringMatch{
			{Kind: workload.StringMatchExact, Value: "cluster.local/ns/default/sa/client"}}}}}},
	}
	snapWith := func(policies ...*workload.Policy) *workload.Snapshot {
		snap, err := workload.NewSnapshot([]*workload.Workload{dst}, nil, policies)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	src := netip.MustParseAddrPort("10.0.0.1:40000")
	to := netip.MustParseAddrPort("10.0.0.2:8080")
	client := &certs.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "client"}
	other := &certs.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "other"}

	snap := snapWith(allowClient)
	w := snap.WorkloadByUID(dst.UID)
	if err := authorize(snap, w, authzConn(src, to, client)); err != nil {
		t.Errorf("allowed client denied: %v", err)
	}
	err := authorize(snap, w, authzConn(src, to, other))
	var pe *policyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "connection closed due to policy rejection") {
		t.Errorf("other client: %v, want a policy rejection", err)
	}
	if err := authorize(snap, w, authzConn(src, to, nil)); err == nil {
		t.Error("plaintext client allowed by a principal-only ALLOW policy")
	}

	// A connection allowed with no policies is closed when a DENY policy for it arrives.
	var tr connTracker
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	tc := &trackedConn{cancel: cancel}
	untrack := tr.track(tc)
	tr.setPolicy(tc, authzConn(src, to, other), dst.UID)
	if n := tr.reauthorize(snapWith()); n != 0 || ctx.Err() != nil {
		t.Fatalf("no policies: closed %d connections", n)
	}
	if n := tr.reauthorize(snapWith(allowClient)); n != 1 {
		t.Fatalf("after the ALLOW-only-client policy: closed %d connections, want 1", n)
	}
	if cause := context.Cause(ctx); !errors.As(cause, &pe) || !pe.late {
		t.Errorf("cause = %v, want a late policy error", cause)
	}
	untrack()
	if n := tr.reauthorize(snapWith(allowClient)); n != 0 {
		t.Errorf("untracked connection re-evaluated: closed %d", n)
	}
	// Connections not yet authorized (or outbound) are not subject to re-evaluation.
	tr.track(&trackedConn{cancel: func(error) { t.Error("unauthorized connection cancelled") }})
	if n := tr.reauthorize(snapWith(allowClient)); n != 0 {
		t.Errorf("connection without a policy view re-evaluated: closed %d", n)
	}
}
