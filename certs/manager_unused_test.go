package certs

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// issuedFor counts the Issue calls for id.
func (f *fakeIssuer) issuedFor(id Identity) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.id == id {
			n++
		}
	}
	return n
}

// dumped returns the identities in m.Dump().
func dumped(m *Manager) []string {
	var ids []string
	for _, s := range m.Dump() {
		ids = append(ids, s.Identity)
	}
	return ids
}

// TestManagerDropsUnusedOnDemandIdentity: a certificate fetched on demand by Get and then never
// used again is dropped after the default UnusedTTL instead of being renewed at every half-life
// forever; the drop is logged at debug, and a later Get fetches it again.
func TestManagerDropsUnusedOnDemandIdentity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 10*time.Hour)
		var logs lockedBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		m := NewManager(ManagerConfig{Issuer: iss, Logger: log})
		startRun(t, m)

		first, err := m.Get(context.Background(), idA)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Hour) // six half-lives of a 10h certificate
		synctest.Wait()
		if n := iss.count(); n != 1 {
			t.Errorf("%d Issue calls in 30h for an identity used once, want 1 (no renewals)", n)
		}
		if d := m.Dump(); len(d) != 0 {
			t.Errorf("Dump = %+v, want no identities", d)
		}
		if l := logs.String(); !strings.Contains(l, "level=DEBUG msg=\"certificate dropped") || !strings.Contains(l, idA.String()) {
			t.Errorf("no debug log of the drop of %s:\n%s", idA, l)
		}
		again, err := m.Get(context.Background(), idA)
		if err != nil {
			t.Fatal(err)
		}
		if again == first || iss.count() != 2 {
			t.Errorf("Get after the drop returned the old certificate or did not fetch (%d Issue calls)", iss.count())
		}
	})
}

// TestManagerDropsAtLastUsePlusTTL: every Get moves the drop time; the identity goes at its last
// use plus UnusedTTL, well before its renewal would fall due.
func TestManagerDropsAtLastUsePlusTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 10*time.Hour)
		m := NewManager(ManagerConfig{Issuer: iss, UnusedTTL: time.Hour, Logger: testLogger(t)})
		startRun(t, m)
		get := func() {
			t.Helper()
			if _, err := m.Get(context.Background(), idA); err != nil {
				t.Fatal(err)
			}
		}
		get()
		time.Sleep(40 * time.Minute)
		get() // last use
		time.Sleep(time.Hour - time.Second)
		synctest.Wait()
		if d := dumped(m); len(d) != 1 {
			t.Fatalf("one second before last use + UnusedTTL: Dump = %v, want %v", d, idA)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		m.mu.Lock()
		tracked := len(m.entries)
		m.mu.Unlock()
		if tracked != 0 || len(m.Dump()) != 0 {
			t.Errorf("one second after last use + UnusedTTL: %d entries tracked, Dump %v; want none", tracked, dumped(m))
		}
		if n := iss.count(); n != 1 {
			t.Errorf("%d Issue calls, want 1", n)
		}
	})
}

// TestManagerRenewsUsedIdentity: an identity used more often than UnusedTTL is renewed at every
// half-life, and its users never wait for a fetch.
func TestManagerRenewsUsedIdentity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 10*time.Hour)
		m := NewManager(ManagerConfig{Issuer: iss, UnusedTTL: time.Hour, Logger: testLogger(t)})
		startRun(t, m)
		if _, err := m.Get(context.Background(), idA); err != nil {
			t.Fatal(err)
		}
		for range 49 { // 24.5 hours, a use every 30 minutes
			time.Sleep(30 * time.Minute)
			synctest.Wait()
			before := iss.count()
			c, err := m.Get(context.Background(), idA)
			if err != nil {
				t.Fatal(err)
			}
			if iss.count() != before {
				t.Fatalf("Get at %v had to fetch: the certificate was dropped or expired", time.Now())
			}
			if !time.Now().Before(c.NotAfter) {
				t.Fatalf("Get returned a certificate that expired at %v", c.NotAfter)
			}
		}
		if n := iss.count(); n < 5 {
			t.Errorf("%d Issue calls in 24.5h of 10h certificates used every 30m, want >= 5 (renewed at each half-life)", n)
		}
	})
}

// TestManagerHoldsAreCounted: a held identity is renewed without any use; it stays while any hold
// is left (a release called twice counts once) and is dropped at once when the last one goes, if
// it was never used.
func TestManagerHoldsAreCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, time.Hour)
		m := NewManager(ManagerConfig{Issuer: iss, UnusedTTL: time.Minute, Logger: testLogger(t)})
		startRun(t, m)
		release1 := m.Hold(idA)
		release2 := m.Hold(idA)
		synctest.Wait()
		if n := iss.count(); n != 1 {
			t.Fatalf("%d Issue calls after two holds, want 1", n)
		}
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		if n := iss.count(); n < 6 {
			t.Errorf("held identity issued %d times in 3h of 1h certificates, want >= 6", n)
		}
		release1()
		release1() // counts once
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if d := dumped(m); len(d) != 1 {
			t.Fatalf("with one hold left: Dump = %v, want %v", d, idA)
		}
		if c, err := m.Get(context.Background(), idA); err != nil || !time.Now().Before(c.NotAfter) {
			t.Fatalf("Get with one hold left = %v, %v; want a valid certificate", c, err)
		}
		time.Sleep(2 * time.Minute) // past that use + UnusedTTL, still held
		synctest.Wait()
		if d := dumped(m); len(d) != 1 {
			t.Fatalf("held identity unused for 2m (UnusedTTL 1m): Dump = %v, want %v", d, idA)
		}
		issued := iss.count()
		release2()
		if d := m.Dump(); len(d) != 0 {
			t.Errorf("after the last release of an identity unused for longer than UnusedTTL: Dump = %+v, want none", d)
		}
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		if n := iss.count(); n != issued {
			t.Errorf("released identity issued %d more times, want 0", n-issued)
		}
	})
}

// TestManagerReleaseAfterUseLingers: released soon after a use, an identity stays until that use
// plus UnusedTTL, not longer.
func TestManagerReleaseAfterUseLingers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 10*time.Hour)
		m := NewManager(ManagerConfig{Issuer: iss, UnusedTTL: time.Hour, Logger: testLogger(t)})
		startRun(t, m)
		release := m.Hold(idB)
		if _, err := m.Get(context.Background(), idB); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
		release()
		time.Sleep(49 * time.Minute)
		synctest.Wait()
		if d := dumped(m); len(d) != 1 {
			t.Fatalf("59m after the last use: Dump = %v, want %v", d, idB)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if d := dumped(m); len(d) != 0 {
			t.Errorf("61m after the last use: Dump = %v, want none", d)
		}
	})
}

// TestManagerGetWaitingIsNotDropped: an identity whose fetch outlasts UnusedTTL is not dropped
// under the Get waiting for it.
func TestManagerGetWaitingIsNotDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, time.Hour)
		iss.release = make(chan struct{})
		m := NewManager(ManagerConfig{Issuer: iss, UnusedTTL: time.Second, Logger: testLogger(t)})
		startRun(t, m)
		type result struct {
			c   *WorkloadCert
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := m.Get(context.Background(), idA)
			done <- result{c, err}
		}()
		time.Sleep(5 * time.Second)
		close(iss.release)
		r := <-done
		if r.err != nil || r.c == nil {
			t.Fatalf("Get whose fetch took 5s with UnusedTTL 1s = %v, %v; want the certificate", r.c, r.err)
		}
		synctest.Wait()
		time.Sleep(2 * time.Second) // and then, unused, it goes
		synctest.Wait()
		if d := dumped(m); len(d) != 0 {
			t.Errorf("Dump = %v, want none", d)
		}
	})
}

// TestManagerDumpHidesStaleWithoutRun: without Run nothing is freed, but Dump does not list an
// identity that would have been dropped.
func TestManagerDumpHidesStaleWithoutRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(t, 10*time.Hour)
		m := NewManager(ManagerConfig{Issuer: iss, UnusedTTL: time.Hour, Logger: testLogger(t)})
		if _, err := m.Get(context.Background(), idA); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Hour)
		if d := m.Dump(); len(d) != 0 {
			t.Errorf("Dump = %+v, want none", d)
		}
	})
}
