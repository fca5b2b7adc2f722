package workload

import (
	"sync"
	"testing"
	"time"
)

func mustTrafficIndex(t testing.TB, host string) *TrafficIndex {
	t.Helper()
	ti, err := NewTrafficIndex([]*DestinationPolicy{{Name: "r", Namespace: "ns", Host: host}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ti
}

func fired(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(time.Second):
		return false
	}
}

// The traffic policy a source sets outlives workload pushes; a snapshot carrying its own
// replaces it; ReplaceAll sets exactly what it is given.
func TestStoreTraffic(t *testing.T) {
	st := NewStore()
	a := mustSnapshot(t, []*Workload{pod("ns", "a", "10.0.0.1")}, nil, nil)
	b := mustSnapshot(t, []*Workload{pod("ns", "b", "10.0.0.2")}, nil, nil)
	ti1, ti2 := mustTrafficIndex(t, "one.example.com"), mustTrafficIndex(t, "two.example.com")

	st.Replace(a)
	ch := st.Changed()
	st.SetTraffic(ti1)
	if !fired(ch) {
		t.Fatal("SetTraffic did not fire Changed")
	}
	if s := st.Load(); s.Traffic() != ti1 || s.WorkloadByUID(a.Workloads()[0].UID) == nil {
		t.Fatalf("after SetTraffic: traffic %p, workloads %v; want %p and a's", s.Traffic(), uids(s.Workloads()), ti1)
	}
	if a.Traffic() != nil {
		t.Error("SetTraffic modified the snapshot it republished")
	}

	st.Replace(b) // a workload push
	if s := st.Load(); s.Traffic() != ti1 || len(s.Workloads()) != 1 || s.Workloads()[0].Name != "b" {
		t.Errorf("after a workload push: traffic %p, workloads %v; want %p kept and b", s.Traffic(), uids(s.Workloads()), ti1)
	}
	st.Replace(nil)
	if s := st.Load(); s.Traffic() != ti1 || len(s.Workloads()) != 0 {
		t.Errorf("after Replace(nil): traffic %p, %d workloads; want %p kept and none", s.Traffic(), len(s.Workloads()), ti1)
	}
	st.Replace(a.WithTraffic(ti2))
	if s := st.Load(); s.Traffic() != ti2 {
		t.Errorf("a snapshot carrying traffic policy: store has %p, want %p", s.Traffic(), ti2)
	}
	st.Replace(b)
	if s := st.Load(); s.Traffic() != ti2 {
		t.Errorf("the traffic of a replaced snapshot is not kept: %p, want %p", s.Traffic(), ti2)
	}
	st.ReplaceAll(a)
	if s := st.Load(); s != a {
		t.Errorf("ReplaceAll(a) published %p with traffic %p, want a exactly", s, s.Traffic())
	}
	st.SetTraffic(ti1)
	st.SetTraffic(nil)
	if s := st.Load(); s.Traffic() != nil || len(s.Workloads()) != 1 {
		t.Errorf("SetTraffic(nil): traffic %p, %d workloads; want none and a's", s.Traffic(), len(s.Workloads()))
	}
	var zero Store
	zero.SetTraffic(ti1)
	if s := zero.Load(); s.Traffic() != ti1 || len(s.Workloads()) != 0 {
		t.Error("zero Store: SetTraffic did not publish an empty snapshot with the traffic policy")
	}
}

// Run with -race: a workload source and a traffic source write at once; neither loses the
// other's last update.
func TestStoreConcurrentWorkloadAndTrafficSources(t *testing.T) {
	st := NewStore()
	snaps := []*Snapshot{
		mustSnapshot(t, []*Workload{pod("ns", "a", "10.0.0.1")}, nil, nil),
		mustSnapshot(t, []*Workload{pod("ns", "b", "10.0.0.2")}, nil, nil),
	}
	tis := []*TrafficIndex{mustTrafficIndex(t, "one.example.com"), mustTrafficIndex(t, "two.example.com")}
	const n = 2000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			st.Replace(snaps[i%2])
		}
	})
	wg.Go(func() {
		for i := range n {
			st.SetTraffic(tis[i%2])
		}
	})
	wg.Go(func() {
		for range n {
			_ = st.Load().Traffic()
		}
	})
	wg.Wait()
	s := st.Load()
	if s.Traffic() != tis[(n-1)%2] {
		t.Errorf("final traffic policy %p, want the last one set (%p)", s.Traffic(), tis[(n-1)%2])
	}
	if len(s.Workloads()) != 1 || s.Workloads()[0] != snaps[(n-1)%2].Workloads()[0] {
		t.Errorf("final workloads %v, want the last push's", uids(s.Workloads()))
	}
}
