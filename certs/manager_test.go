package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeIssuer counts calls and can block or fail them; successful calls are served by a real LocalCA.
type fakeIssuer struct {
	ca *LocalCA

	mu          sync.Mutex // guards all fields below
	calls       []issueCall
	inFlight    int
	maxInFlight int
	release     chan struct{}           // if non-nil, Issue waits until it is closed (or ctx is done)
	fail        func(n int) error       // called with the 1-based call number; a non-nil error fails the call
	rewrite     func(Identity) Identity // if set, the certificate is issued for rewrite(id)
}

type issueCall struct {
	id Identity
	at time.Time
}

var _ Issuer = (*fakeIssuer)(nil)

func newFakeIssuer(t testing.TB, ttl time.Duration) *fakeIssuer {
	return &fakeIssuer{ca: newTestCA(t, LocalCAConfig{WorkloadTTL: ttl})}
}

func (f *fakeIssuer) Issue(ctx context.Context, id Identity) (*WorkloadCert, error) {
	f.mu.Lock()
	f.calls = append(f.calls, issueCall{id, time.Now()})
	n := len(f.calls)
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	release, fail, rewrite := f.release, f.fail, f.rewrite
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		if err := fail(n); err != nil {
			return nil, err
		}
	}
	if rewrite != nil {
		id = rewrite(id)
	}
	return f.ca.Issue(ctx, id)
}

func (f *fakeIssuer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeIssuer) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ts []time.Time
	for _, c := range f.calls {
		ts = append(ts, c.at)
	}
	return ts
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startRun runs m.Run until the test ends and checks it returns nil.
func startRun(t *testing.T, m *Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	})
}

var (
	idA = Identity{"cluster.local", "ns1", "a"}
	idB = Identity{"cluster.local", "ns1", "b"}
)

func TestManagerSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, time.Hour)
		iss.release = make(chan struct{})
		m := NewManager(ManagerConfig{Issuer: iss, Logger: testLogger(t)})

		const n = 50
		got := make([]*WorkloadCert, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { got[i], errs[i] = m.Get(context.Background(), idA) })
		}
		synctest.Wait() // every Get is blocked on the one fetch
		if c := iss.count(); c != 1 {
			t.Fatalf("%d Issue calls while %d Gets wait, want 1", c, n)
		}
		if d := m.Dump(); len(d) != 1 || d[0].State != "Initializing" {
			t.Errorf("Dump while fetching = %+v, want one Initializing entry", d)
		}
		close(iss.release)
		wg.Wait()
		for i := range n {
			if errs[i] != nil || got[i] != got[0] {
				t.Fatalf("Get %d = %p, %v; want the shared certificate %p", i, got[i], errs[i], got[0])
			}
		}
		if got[0].Identity != idA {
			t.Errorf("certificate identity %v, want %v", got[0].Identity, idA)
		}
		again, err := m.Get(context.Background(), idA)
		if err != nil || again != got[0] {
			t.Errorf("cached Get = %p, %v; want %p", again, err, got[0])
		}
		if c := iss.count(); c != 1 {
			t.Errorf("%d Issue calls, want 1", c)
		}
	})
}

func TestManagerRenewsAtHalfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 10*time.Hour)
		m := NewManager(ManagerConfig{Issuer: iss, Logger: testLogger(t)})
		startRun(t, m)

		first, err := m.Get(context.Background(), idA)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Hold(idA)() // renewed however long the test sleeps between uses
		half := first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) / 2)
		time.Sleep(time.Until(half) - time.Second)
		synctest.Wait()
		if c := iss.count(); c != 1 {
			t.Fatalf("%d Issue calls one second before half-life, want 1", c)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if c := iss.count(); c != 2 {
			t.Fatalf("%d Issue calls one second after half-life, want 2", c)
		}
		if at := iss.callTimes()[1]; !at.Equal(half) {
			t.Errorf("renewal at %v, want half-life %v", at, half)
		}
		second, err := m.Get(context.Background(), idA)
		if err != nil || second == first {
			t.Fatalf("Get after renewal = %p, %v; want a new certificate", second, err)
		}
		// And the next renewal follows the new certificate.
		time.Sleep(time.Until(second.NotBefore.Add(second.NotAfter.Sub(second.NotBefore)/2)) + time.Second)
		synctest.Wait()
		if c := iss.count(); c != 3 {
			t.Errorf("%d Issue calls after the second half-life, want 3", c)
		}
	})
}

// TestManagerRenewsShortTTL uses real time: a 2s certificate (backdated a minute by the CA) must be
// replaced well before it expires.
func TestManagerRenewsShortTTL(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{WorkloadTTL: 2 * time.Second})
	m := NewManager(ManagerConfig{Issuer: ca, Logger: testLogger(t)})
	startRun(t, m)
	start := time.Now()
	first, err := m.Get(context.Background(), idA)
	if err != nil {
		t.Fatal(err)
	}
	for {
		c, err := m.Get(context.Background(), idA)
		if err != nil {
			t.Fatal(err)
		}
		if c != first {
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Errorf("renewed after %v, want within 1.5s", d)
			}
			if !c.NotAfter.After(first.NotAfter) {
				t.Errorf("renewed certificate expires %v, not after the old %v", c.NotAfter, first.NotAfter)
			}
			return
		}
		if time.Since(start) > 3*time.Second {
			t.Fatal("certificate not renewed within 3s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestManagerFailureKeepsCertAndBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 10*time.Hour)
		iss.fail = func(n int) error {
			if n >= 2 && n <= 4 {
				return fmt.Errorf("ca unreachable (call %d)", n)
			}
			return nil
		}
		m := NewManager(ManagerConfig{Issuer: iss, Logger: testLogger(t)})
		startRun(t, m)

		first, err := m.Get(context.Background(), idA)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Hold(idA)() // renewed however long the test sleeps between uses
		half := first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) / 2)
		time.Sleep(time.Until(half) + 100*time.Millisecond) // the renewal has failed once
		synctest.Wait()
		if c := iss.count(); c != 2 {
			t.Fatalf("%d Issue calls, want 2", c)
		}
		got, err := m.Get(context.Background(), idA)
		if err != nil || got != first {
			t.Fatalf("Get during failed renewal = %p, %v; want the old certificate", got, err)
		}
		if d := m.Dump(); d[0].State != "Available" {
			t.Errorf("state during failed renewal = %q, want Available", d[0].State)
		}

		time.Sleep(10 * time.Second) // retries at +0.5s, +1s, +2s (±20%) then success
		synctest.Wait()
		ts := iss.callTimes()
		if len(ts) != 5 {
			t.Fatalf("%d Issue calls, want 5", len(ts))
		}
		for i, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
			gap := ts[i+2].Sub(ts[i+1])
			if gap < want*8/10 || gap > want*12/10 {
				t.Errorf("retry %d after %v, want %v ±20%%", i+1, gap, want)
			}
		}
		renewed, err := m.Get(context.Background(), idA)
		if err != nil || renewed == first {
			t.Fatalf("Get after recovery = %p, %v; want a new certificate", renewed, err)
		}
		if d := m.Dump(); d[0].State != "Available" {
			t.Errorf("state after recovery = %q, want Available", d[0].State)
		}
	})
}

func TestManagerInitialFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, time.Hour)
		failing := true
		iss.fail = func(int) error {
			if failing {
				return errors.New("permission denied")
			}
			return nil
		}
		m := NewManager(ManagerConfig{Issuer: iss, Logger: testLogger(t)})

		_, err := m.Get(context.Background(), idA)
		if err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), idA.String()) {
			t.Fatalf("Get = %v, want an error naming the identity and the issuer error", err)
		}
		want := []CertState{{Identity: idA.String(), State: "Unavailable: permission denied"}}
		if diff := cmp.Diff(want, m.Dump()); diff != "" {
			t.Errorf("Dump (-want +got):\n%s", diff)
		}
		// During backoff Get fails fast without calling the issuer.
		if _, err := m.Get(context.Background(), idA); err == nil || !strings.Contains(err.Error(), "next attempt in") {
			t.Errorf("Get during backoff = %v, want the last error", err)
		}
		if c := iss.count(); c != 1 {
			t.Errorf("%d Issue calls, want 1", c)
		}
		// Without Run, a Get after the backoff fetches again.
		time.Sleep(time.Second)
		failing = false
		if _, err := m.Get(context.Background(), idA); err != nil {
			t.Errorf("Get after backoff: %v", err)
		}
		if c := iss.count(); c != 2 {
			t.Errorf("%d Issue calls, want 2", c)
		}
	})
}

// TestManagerReleaseStopsRenewal: releasing the only hold of a never-used identity drops it at once,
// while a held one keeps being renewed.
func TestManagerReleaseStopsRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, time.Hour)
		m := NewManager(ManagerConfig{Issuer: iss, Logger: testLogger(t)})
		startRun(t, m)
		releaseA := m.Hold(idA)
		defer m.Hold(idB)() // released when the test ends
		synctest.Wait()
		releaseA()
		time.Sleep(2*time.Hour + time.Minute) // several half-lives
		synctest.Wait()
		var a, b int
		for _, c := range iss.calls {
			switch c.id {
			case idA:
				a++
			case idB:
				b++
			}
		}
		if a != 1 {
			t.Errorf("released identity issued %d times, want 1", a)
		}
		if b < 4 {
			t.Errorf("held identity issued %d times in two hours of 1h certificates, want >= 4", b)
		}
		if d := m.Dump(); len(d) != 1 || d[0].Identity != idB.String() {
			t.Errorf("Dump after release = %+v, want only %v", d, idB)
		}
	})
}

func TestManagerMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, time.Hour)
		iss.release = make(chan struct{})
		m := NewManager(ManagerConfig{Issuer: iss, MaxInFlight: 3, Logger: testLogger(t)})
		const n = 10
		for i := range n {
			m.Prefetch(Identity{"cluster.local", "ns", fmt.Sprintf("sa%d", i)})
		}
		m.Prefetch(Identity{"cluster.local", "ns", "sa0"}) // already tracked: no new fetch
		synctest.Wait()
		iss.mu.Lock()
		inFlight := iss.inFlight
		iss.mu.Unlock()
		if inFlight != 3 {
			t.Errorf("%d Issue calls in flight, want 3", inFlight)
		}
		close(iss.release)
		synctest.Wait()
		if iss.maxInFlight != 3 || len(iss.calls) != n {
			t.Errorf("max in flight %d with %d calls, want 3 and %d", iss.maxInFlight, len(iss.calls), n)
		}
		d := m.Dump()
		if len(d) != n {
			t.Fatalf("Dump has %d entries, want %d", len(d), n)
		}
		for i, s := range d {
			if s.State != "Available" || len(s.Chain) != 1 || len(s.Roots) != 1 {
				t.Errorf("entry %d = %s %s with %d/%d certs", i, s.Identity, s.State, len(s.Chain), len(s.Roots))
			}
			if i > 0 && d[i-1].Identity >= s.Identity {
				t.Errorf("Dump not sorted: %s before %s", d[i-1].Identity, s.Identity)
			}
		}
	})
}

func TestManagerGetContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, time.Hour)
		iss.release = make(chan struct{})
		m := NewManager(ManagerConfig{Issuer: iss, Logger: testLogger(t)})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := m.Get(ctx, idA); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Get with expiring ctx = %v, want DeadlineExceeded", err)
		}
		// The shared fetch was not cancelled with the caller.
		close(iss.release)
		if _, err := m.Get(context.Background(), idA); err != nil {
			t.Errorf("Get after release: %v", err)
		}
		if c := iss.count(); c != 1 {
			t.Errorf("%d Issue calls, want 1", c)
		}
	})
}

func TestManagerRunStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, time.Hour)
		iss.release = make(chan struct{}) // never closed: only cancellation ends Issue
		m := NewManager(ManagerConfig{Issuer: iss, Logger: testLogger(t)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		m.Prefetch(idA)
		synctest.Wait()
		if err := m.Run(context.Background()); err == nil {
			t.Error("second Run succeeded, want error")
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		if _, err := m.Get(context.Background(), idA); !errors.Is(err, errStopped) {
			t.Errorf("Get after Run returned = %v, want errStopped", err)
		}
		if _, err := m.Get(context.Background(), idB); !errors.Is(err, errStopped) {
			t.Errorf("Get of a new identity after Run returned = %v, want errStopped", err)
		}
	})
}

func TestManagerBadInput(t *testing.T) {
	m := NewManager(ManagerConfig{Logger: testLogger(t)}) // no Issuer
	if _, err := m.Get(context.Background(), idA); err == nil || !strings.Contains(err.Error(), "no certificate issuer") {
		t.Errorf("Get without issuer = %v, want error", err)
	}
	if _, err := m.Get(context.Background(), Identity{}); err == nil {
		t.Error("Get of zero identity succeeded")
	}
	m.Prefetch(Identity{TrustDomain: "x"})
	if d := m.Dump(); len(d) != 1 {
		t.Errorf("invalid Prefetch was tracked: %+v", d)
	}

	iss := newFakeIssuer(t, time.Hour)
	iss.rewrite = func(Identity) Identity { return idB }
	m = NewManager(ManagerConfig{Issuer: iss, Logger: testLogger(t)})
	if _, err := m.Get(context.Background(), idA); err == nil || !strings.Contains(err.Error(), "want "+idA.String()) {
		t.Errorf("Get with wrong-identity issuer = %v, want identity error", err)
	}
}

func TestBackoff(t *testing.T) {
	for n, base := range map[int]time.Duration{1: 500 * time.Millisecond, 2: time.Second, 3: 2 * time.Second, 9: 128 * time.Second, 10: 150 * time.Second, 1000: 150 * time.Second} {
		for range 100 {
			d := backoff(n)
			if d < base*8/10 || d > min(base*12/10, 150*time.Second) {
				t.Fatalf("backoff(%d) = %v, want %v ±20%% capped at 150s", n, d, base)
			}
		}
	}
}

func TestRefreshTime(t *testing.T) {
	now := testNow
	tests := []struct {
		name                string
		notBefore, notAfter time.Time
		want                time.Time
	}{
		{"half-life", now.Add(-time.Minute), now.Add(24 * time.Hour), now.Add(-time.Minute).Add((24*time.Hour + time.Minute) / 2)},
		{"half-life passed: half the remainder", now.Add(-time.Minute), now.Add(2 * time.Second), now.Add(time.Second)},
		{"floor", now.Add(-time.Minute), now.Add(10 * time.Millisecond), now.Add(minRefresh)},
	}
	for _, tc := range tests {
		got := refreshTime(&WorkloadCert{NotBefore: tc.notBefore, NotAfter: tc.notAfter}, now)
		if !got.Equal(tc.want) {
			t.Errorf("%s: refreshTime = %v, want %v", tc.name, got, tc.want)
		}
	}
}
