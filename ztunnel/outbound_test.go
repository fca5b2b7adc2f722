package ztunnel

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect/zds"
	"github.com/ztunnel-go/ztunnel/workload"
)

// The remembered baggage is the one of the workload asked about: a changed workload (a new
// pointer, as in a new snapshot) gets its own.
func TestPodBaggageMemo(t *testing.T) {
	p := newTestProxy(t, Config{ClusterID: "c0"})
	pod := testPod(p)
	w1 := &workload.Workload{Namespace: "ns1", CanonicalName: "app", CanonicalRevision: "v1"}
	w2 := *w1
	w2.CanonicalRevision = "v2"
	for i, w := range []*workload.Workload{w1, w1, &w2, w1} {
		if got, want := pod.baggage(w), baggage(w, "c0"); got != want {
			t.Errorf("call %d: baggage = %q, want %q", i, got, want)
		}
	}
	if got := pod.baggage(w1); got == pod.baggage(&w2) {
		t.Errorf("different workloads share baggage %q", got)
	}
}

// The pod's own workload is remembered per snapshot: a new snapshot is looked up again, and the
// identity string follows the workload.
func TestOwnWorkloadMemo(t *testing.T) {
	p := newTestProxy(t, Config{NodeName: "node1"})
	pod := testPod(p)
	pod.info = zds.WorkloadInfo{Name: "client-abc", Namespace: "ns1", ServiceAccount: "client"}
	ctx := context.Background()
	w1, err := pod.ownWorkload(ctx, netip.Addr{})
	if err != nil || w1 == nil || w1.Name != "client-abc" {
		t.Fatalf("ownWorkload = %v, %v; want client-abc", w1, err)
	}
	if again, _ := pod.ownWorkload(ctx, netip.Addr{}); again != w1 {
		t.Error("same snapshot: different workload")
	}
	if got, want := pod.identityString(w1), p.identityOf(w1).String(); got != want {
		t.Errorf("identityString(own) = %q, want %q", got, want)
	}
	server := p.store.Load().WorkloadByUID("c1//v1/Pod/ns2/server-xyz")
	if got, want := pod.identityString(server), p.identityOf(server).String(); got != want {
		t.Errorf("identityString(other) = %q, want %q", got, want)
	}

	// A new snapshot without the pod: looked up again, so not found.
	p.store.Replace(nil)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if w, err := pod.ownWorkload(ctx, netip.Addr{}); w != nil || err == nil {
		t.Errorf("new snapshot without the pod: ownWorkload = %v, %v; want an error", w, err)
	}
}

// Stopping a pod ends its live connections with the cause, and connections tracked afterwards
// at once, with the first cause (connection contexts are not children of the pod's).
func TestConnTrackerEndAll(t *testing.T) {
	var tr connTracker
	newConn := func() (*trackedConn, context.Context) {
		ctx, cancel := context.WithCancelCause(context.Background())
		return &trackedConn{cancel: cancel}, ctx
	}
	live, liveCtx := newConn()
	untrack := tr.track(live)
	gone, goneCtx := newConn()
	tr.track(gone)()

	tr.endAll(errDrainDeadline)
	if got := context.Cause(liveCtx); got != errDrainDeadline {
		t.Errorf("live connection: cause %v, want %v", got, errDrainDeadline)
	}
	if goneCtx.Err() != nil {
		t.Error("an untracked connection was cancelled")
	}
	tr.endAll(errPodClosed)
	late, lateCtx := newConn()
	defer tr.track(late)()
	if got := context.Cause(lateCtx); got != errDrainDeadline {
		t.Errorf("connection tracked after endAll: cause %v, want %v", got, errDrainDeadline)
	}
	untrack()
	if n := tr.count(); n != 1 {
		t.Errorf("%d tracked connections, want 1", n)
	}
}
