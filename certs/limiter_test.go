package certs

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"
)

func TestLimiterCancelWhileQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(1)
		if err := l.acquire(context.Background(), prioRenew, nil); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error)
		go func() { errc <- l.acquire(ctx, prioGet, nil) }()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("acquire = %v, want Canceled", err)
		}
		l.release()
		// The cancelled waiter did not keep the slot.
		if err := l.acquire(context.Background(), prioRenew, nil); err != nil {
			t.Fatal(err)
		}
		if l.busy != 1 || len(l.queue) != 0 {
			t.Errorf("busy %d, queue %d; want 1, 0", l.busy, len(l.queue))
		}
	})
}

// TestManagerPriority checks that with one slot a Get goes before earlier prefetches, and that a
// queued prefetch a Get is now waiting for is promoted.
func TestManagerPriority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 0)
		iss.release = make(chan struct{})
		m := NewManager(ManagerConfig{Issuer: iss, MaxInFlight: 1, Logger: testLogger(t)})
		ids := make([]Identity, 5)
		for i := range ids {
			ids[i] = Identity{"cluster.local", "ns", string(rune('a' + i))}
		}
		m.Prefetch(ids[0]) // gets the slot
		synctest.Wait()
		m.Prefetch(ids[1])
		synctest.Wait()
		m.Prefetch(ids[2])
		synctest.Wait()
		go m.Get(context.Background(), ids[3]) // a new identity on demand
		synctest.Wait()
		go m.Get(context.Background(), ids[2]) // raises the queued prefetch of ids[2]
		synctest.Wait()
		close(iss.release)
		synctest.Wait()

		var got []Identity
		for _, c := range iss.calls {
			got = append(got, c.id)
		}
		// ids[2] was raised to Get priority and keeps its earlier place in the queue.
		want := []Identity{ids[0], ids[2], ids[3], ids[1]}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("issue order (-want +got):\n%s", diff)
		}
	})
}

// TestManagerDropQueuedFetch: an identity held and released while its prefetch waits for a
// MaxInFlight slot is dropped at once, and the queued fetch never calls the issuer.
func TestManagerDropQueuedFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 0)
		iss.release = make(chan struct{})
		m := NewManager(ManagerConfig{Issuer: iss, MaxInFlight: 1, Logger: testLogger(t)})
		m.Prefetch(idA) // holds the slot
		synctest.Wait()
		release := m.Hold(idB)
		synctest.Wait() // idB's prefetch is queued
		release()
		if d := m.Dump(); len(d) != 1 || d[0].Identity != idA.String() {
			t.Errorf("Dump after releasing a queued identity = %+v, want only %v", d, idA)
		}
		close(iss.release)
		synctest.Wait()
		if c := iss.count(); c != 1 {
			t.Errorf("%d Issue calls, want 1 (the dropped fetch must not call the issuer)", c)
		}
		// A Get after the drop fetches it again.
		if _, err := m.Get(context.Background(), idB); err != nil {
			t.Errorf("Get after the drop: %v", err)
		}
		if c := iss.count(); c != 2 {
			t.Errorf("%d Issue calls, want 2", c)
		}
	})
}
