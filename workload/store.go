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

// Store holds the current Snapshot. Readers call Load, which never blocks; one writer at a
// time calls Replace. The zero value is ready to use and holds an empty snapshot.
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

	mu      sync.Mutex    // guards changed
	changed chan struct{} // closed by the next Replace; nil until first asked for
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
// earlier Changed calls.
func (st *Store) Replace(s *Snapshot) {
	if s == nil {
		s = emptySnapshot
	}
	st.mu.Lock()
	st.snap.Store(s)
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
