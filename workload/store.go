package workload

import (
	"sync"
	"sync/atomic"
)

// emptySnapshot is what a Store holds before its first Replace.
var emptySnapshot = func() *Snapshot {
	s, err := NewSnapshot(nil, nil, nil)
	if err != nil {
		panic("workload: empty snapshot: " + err.Error()) // cannot happen: nothing to validate
	}
	return s
}()

// EmptySnapshot returns a snapshot with no workloads, services or policies.
func EmptySnapshot() *Snapshot { return emptySnapshot }

// Store holds the current Snapshot. Readers call Load, which never blocks. Writers (Replace,
// ReplaceAll, SetTraffic) may be called from any goroutine; each reads the current snapshot and
// publishes the next in one step, so that two sources, one of workloads (an XDSClient) and one
// of traffic policy (a TrafficSource), can feed one store. The zero value is ready to use and
// holds an empty snapshot.
//
// The traffic policy (Snapshot.Traffic) outlives workload pushes: Replace keeps it unless the
// snapshot given carries its own, SetTraffic changes only it, and ReplaceAll sets both.
//
// To react to changes without missing one, take Changed before Load:
//
//	for {
//		ch := st.Changed()
//		use(st.Load())
//		<-ch
//	}
type Store struct {
	snap atomic.Pointer[Snapshot]

	// mu guards changed and serializes writers: each loads snap and stores the next while
	// holding it.
	mu      sync.Mutex
	changed chan struct{} // closed by the next publication; nil until first asked for
}

// NewStore returns a Store holding an empty snapshot.
func NewStore() *Store { return &Store{} }

// Load returns the current snapshot; never nil.
func (st *Store) Load() *Snapshot {
	if s := st.snap.Load(); s != nil {
		return s
	}
	return emptySnapshot
}

// Replace makes s the current snapshot (nil means empty) and closes the channel returned by
// earlier Changed calls. If s carries no traffic policy, the current one is kept: a workload
// push does not drop the DestinationRules and VirtualServices a TrafficSource set. A snapshot
// that carries traffic policy replaces it.
func (st *Store) Replace(s *Snapshot) {
	if s == nil {
		s = emptySnapshot
	}
	st.publish(func(cur *Snapshot) *Snapshot {
		if s.Traffic() == nil && cur.Traffic() != nil {
			return s.WithTraffic(cur.Traffic())
		}
		return s
	})
}

// ReplaceAll makes s the current snapshot exactly, traffic policy included (none if
// s.Traffic() is nil): for a source that holds both, such as a local config file, whose
// workloads and traffic policy change together.
func (st *Store) ReplaceAll(s *Snapshot) {
	if s == nil {
		s = emptySnapshot
	}
	st.publish(func(*Snapshot) *Snapshot { return s })
}

// SetTraffic publishes the current snapshot with traffic policy ti (nil: none); later
// Replace calls keep it. It implements TrafficSink.
func (st *Store) SetTraffic(ti *TrafficIndex) {
	st.publish(func(cur *Snapshot) *Snapshot { return cur.WithTraffic(ti) })
}

var _ TrafficSink = (*Store)(nil)

// publish stores next(current) and wakes the Changed channel.
func (st *Store) publish(next func(cur *Snapshot) *Snapshot) {
	st.mu.Lock()
	st.snap.Store(next(st.Load()))
	ch := st.changed
	st.changed = nil
	st.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// Changed returns a channel that is closed when the snapshot is next replaced. After it
// fires, call Changed again for the following replacement.
func (st *Store) Changed() <-chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.changed == nil {
		st.changed = make(chan struct{})
	}
	return st.changed
}
