package workload

import (
	"sync"
	"testing"
	"time"
)

func TestStoreChanged(t *testing.T) {
	st := NewStore()
	if s := st.Load(); s == nil || len(s.Workloads()) != 0 {
		t.Fatalf("new store holds %v, want an empty snapshot", s)
	}
	ch := st.Changed()
	select {
	case <-ch:
		t.Fatal("Changed fired before any Replace")
	default:
	}
	snap := mustSnapshot(t, []*Workload{pod("ns", "a")}, nil, nil)
	st.Replace(snap)
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("Changed did not fire on Replace")
	}
	if st.Load() != snap {
		t.Error("Load did not return the replaced snapshot")
	}
	next := st.Changed()
	select {
	case <-next:
		t.Fatal("the next Changed channel is already closed")
	default:
	}
	st.Replace(nil)
	<-next
	if s := st.Load(); s == nil || len(s.Workloads()) != 0 {
		t.Errorf("after Replace(nil) Load = %v, want an empty snapshot", s)
	}
	var zero Store
	if zero.Load() == nil {
		t.Error("zero Store: Load returned nil")
	}
	zc := zero.Changed()
	zero.Replace(snap)
	<-zc
}

// Run with -race: readers Load while a writer Replaces.
func TestStoreConcurrentLoadReplace(t *testing.T) {
	st := NewStore()
	snaps := []*Snapshot{
		mustSnapshot(t, []*Workload{pod("ns", "a", "10.0.0.1")}, nil, nil),
		mustSnapshot(t, []*Workload{pod("ns", "b", "10.0.0.2")}, nil, nil),
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				ch := st.Changed()
				s := st.Load()
				for _, w := range s.Workloads() {
					if s.WorkloadByUID(w.UID) != w {
						t.Errorf("inconsistent snapshot: %s", w.UID)
						return
					}
				}
				select {
				case <-stop:
					return
				case <-ch:
				}
			}
		})
	}
	for i := range 2000 {
		st.Replace(snaps[i%2])
	}
	close(stop)
	wg.Wait()
}
