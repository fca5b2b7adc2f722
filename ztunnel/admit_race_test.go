package ztunnel

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
	"github.com/ztunnel-go/ztunnel/workload"
)

// A policy push that lands while an inbound connection is being admitted is never missed
// (issue 10, item 2): the push is forced into the window between the connection's registration
// for re-checks and the snapshot load (before the fix: between the snapshot load and the
// registration, where the re-check skipped the connection and the authorization used the old
// snapshot, so a denied client got through for good). The policy watcher's re-check is run inside
// the hook, as if it had been fast.
func TestAdmitRacesPolicyPush(t *testing.T) {
	p := newTestProxy(t, Config{})
	pod := testPod(p)
	pod.info = zds.WorkloadInfo{Namespace: "ns2", Name: "server-xyz", ServiceAccount: "server"}

	deny := &workload.Policy{
		Name: "deny-client", Namespace: "ns2", Scope: workload.PolicyScopeNamespace, Action: workload.PolicyActionDeny,
		Rules: [][][]workload.Match{{{{Principals: []workload.StringMatch{
			{Kind: workload.StringMatchExact, Value: "cluster.local/ns/ns1/sa/client"}}}}}},
	}
	old := p.store.Load()
	pushed, err := workload.NewSnapshot(old.Workloads(), old.Services(), []*workload.Policy{deny})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	tc := &trackedConn{cancel: cancel}
	defer pod.conns.track(tc)()
	testHookAdmitRegistered = func() {
		p.store.Replace(pushed)
		pod.conns.reauthorize(pushed) // the policy watcher, running in the window
	}
	defer func() { testHookAdmitRegistered = nil }()

	ci := &connInfo{Direction: "inbound", Src: netip.MustParseAddrPort("10.0.1.1:40000"), Dst: netip.MustParseAddrPort("10.0.2.1:8080")}
	peer := &certs.Identity{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "client"}
	err = pod.admit(context.Background(), ci, tc, peer)
	var pe *policyError
	if !errors.As(err, &pe) && !errors.As(context.Cause(ctx), &pe) {
		t.Fatalf("admit = %v and the connection is not closed (cause %v): the DENY pushed meanwhile was missed", err, context.Cause(ctx))
	}
}
