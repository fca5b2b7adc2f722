package ztunnel

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztunnel-go/ztunnel/workload"
)

// fakeClock is a settable time source for the detector.
type fakeClock struct{ t time.Time }

func newFakeClock() *fakeClock                       { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)} }
func (c *fakeClock) now() time.Time                  { return c.t }
func (c *fakeClock) advance(d time.Duration)         { c.t = c.t.Add(d) }
func (c *fakeClock) set(t time.Time)                 { c.t = t }
func (c *fakeClock) since(t time.Time) time.Duration { return c.t.Sub(t) }

// step is one reported outcome.
type step struct {
	o      outcome
	status int
}

var (
	fail    = step{o: outcomeConnectFailed}
	timeout = step{o: outcomeConnectTimeout}
	okConn  = step{o: outcomeConnectOK}
	reset   = step{o: outcomeReset}
)

func status(code int) step { return step{o: outcomeStatus, status: code} }

func times(n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func seq(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	testCluster = clusterKey{service: "ns/reviews.ns.svc.cluster.local", subset: "v1"}
	hostA       = hostKey{uid: "c//Pod/ns/a", port: 9080}
	hostB       = hostKey{uid: "c//Pod/ns/b", port: 9080}
)

// hostCopy returns a copy of what d knows of h in c, and whether it knows it.
func hostCopy(d *outlierDetector, c clusterKey, h hostKey) (hostState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cs := d.clusters[c]
	if cs == nil || cs.hosts[h] == nil {
		return hostState{}, false
	}
	return *cs.hosts[h], true
}

func clusterCopy(d *outlierDetector, c clusterKey) (clusterState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cs := d.clusters[c]
	if cs == nil {
		return clusterState{}, false
	}
	return *cs, true
}

// TestOutlierCounting checks how each outcome counts, in non-split and split mode, and when
// each detector fires (multinetwork-and-policy.md §3.1).
func TestOutlierCounting(t *testing.T) {
	type counters struct{ C5xx, Gateway, Local uint32 }
	tests := []struct {
		name   string
		policy workload.OutlierPolicy
		steps  []step
		// wantAt is the step (0-based) after which the host is ejected; -1 never.
		wantAt     int
		wantReason ejectReason
		want       counters // after all steps
	}{
		{name: "connect failures are 503: ejected at the fifth, the gateway counter counts on",
			policy: workload.OutlierPolicy{Consecutive5xx: 5}, steps: times(5, fail),
			wantAt: 4, wantReason: reason5xx, want: counters{0, 5, 0}},
		{name: "a connect success is a 200 and resets both",
			policy: workload.OutlierPolicy{Consecutive5xx: 5, ConsecutiveGateway: 5},
			steps:  seq(times(4, fail), []step{okConn}, times(4, fail)), wantAt: -1, want: counters{4, 4, 0}},
		{name: "timeouts are 504, gateway errors",
			policy: workload.OutlierPolicy{ConsecutiveGateway: 3}, steps: times(3, timeout),
			wantAt: 2, wantReason: reasonGateway, want: counters{3, 0, 0}},
		{name: "a reset before the answer is a 503",
			policy: workload.OutlierPolicy{Consecutive5xx: 2}, steps: times(2, reset),
			wantAt: 1, wantReason: reason5xx, want: counters{0, 2, 0}},
		{name: "a 5xx other than 502-504 resets the gateway counter only",
			policy: workload.OutlierPolicy{Consecutive5xx: 10, ConsecutiveGateway: 3},
			steps:  []step{status(503), status(503), status(500), status(502), status(504)},
			wantAt: -1, want: counters{5, 2, 0}},
		{name: "a non-5xx answer resets both",
			policy: workload.OutlierPolicy{Consecutive5xx: 3, ConsecutiveGateway: 3},
			steps:  []step{status(503), status(503), status(403), status(503), status(503)},
			wantAt: -1, want: counters{2, 2, 0}},
		{name: "a 200 passed as a status is a success",
			policy: workload.OutlierPolicy{Consecutive5xx: 3},
			steps:  []step{fail, fail, status(200), fail, fail}, wantAt: -1, want: counters{2, 2, 0}},
		{name: "both reach the threshold: the gateway detector fires first, the 5xx one finds the host ejected",
			policy: workload.OutlierPolicy{Consecutive5xx: 3, ConsecutiveGateway: 3}, steps: times(3, status(503)),
			wantAt: 2, wantReason: reasonGateway, want: counters{3, 0, 0}},
		{name: "501 counts against 5xx only",
			policy: workload.OutlierPolicy{Consecutive5xx: 5, ConsecutiveGateway: 2}, steps: times(5, status(501)),
			wantAt: 4, wantReason: reason5xx, want: counters{0, 0, 0}},
		{name: "zero thresholds never eject",
			policy: workload.OutlierPolicy{}, steps: times(20, fail), wantAt: -1, want: counters{20, 20, 0}},
		{name: "an answer that is no HTTP status counts as 502",
			policy: workload.OutlierPolicy{ConsecutiveGateway: 2}, steps: []step{status(0), status(700)},
			wantAt: 1, wantReason: reasonGateway, want: counters{2, 0, 0}},
		{name: "an unknown outcome is ignored",
			policy: workload.OutlierPolicy{Consecutive5xx: 2}, steps: []step{fail, {o: 0}, {o: 99}},
			wantAt: -1, want: counters{1, 1, 0}},

		{name: "split: connect failures and timeouts count only against local origin",
			policy: workload.OutlierPolicy{Consecutive5xx: 2, SplitLocalOrigin: true, ConsecutiveLocalOrigin: 3},
			steps:  []step{fail, timeout, fail}, wantAt: 2, wantReason: reasonLocalOrigin, want: counters{0, 0, 0}},
		{name: "split: with local origin off connect failures never eject",
			policy: workload.OutlierPolicy{Consecutive5xx: 2, ConsecutiveGateway: 2, SplitLocalOrigin: true},
			steps:  times(10, fail), wantAt: -1, want: counters{0, 0, 10}},
		{name: "split: answers and resets count against 5xx",
			policy: workload.OutlierPolicy{Consecutive5xx: 2, SplitLocalOrigin: true, ConsecutiveLocalOrigin: 3},
			steps:  []step{status(503), reset}, wantAt: 1, wantReason: reason5xx, want: counters{0, 2, 0}},
		{name: "split: a connect success resets local origin",
			policy: workload.OutlierPolicy{SplitLocalOrigin: true, ConsecutiveLocalOrigin: 3},
			steps:  []step{fail, fail, okConn, fail, fail}, wantAt: -1, want: counters{0, 0, 2}},
		{name: "split: an answer means the host was reached and resets local origin",
			policy: workload.OutlierPolicy{Consecutive5xx: 5, SplitLocalOrigin: true, ConsecutiveLocalOrigin: 3},
			steps:  []step{fail, fail, status(503), fail, fail}, wantAt: -1, want: counters{1, 1, 2}},
		{name: "split: a connect success is a 200 answer and resets 5xx too",
			policy: workload.OutlierPolicy{Consecutive5xx: 2, SplitLocalOrigin: true},
			steps:  []step{status(503), okConn, status(503)}, wantAt: -1, want: counters{1, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newOutlierDetector(newFakeClock().now)
			at := -1
			for i, s := range tt.steps {
				d.report(testCluster, &tt.policy, 100, hostA, s.o, s.status)
				if at < 0 && d.ejected(testCluster, hostA) {
					at = i
				}
			}
			if at != tt.wantAt {
				t.Errorf("ejected after step %d, want %d", at, tt.wantAt)
			}
			cs, _ := clusterCopy(d, testCluster)
			if tt.wantAt >= 0 {
				var want [numEjectReasons]uint64
				want[tt.wantReason] = 1
				if cs.ejections != want {
					t.Errorf("ejections by reason %v, want %v", cs.ejections, want)
				}
			}
			hs, _ := hostCopy(d, testCluster, hostA)
			got := counters{hs.consecutive5xx, hs.consecutiveGateway, hs.consecutiveLocalOrigin}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("counters (-want +got):\n%s", diff)
			}
		})
	}
}

// ticksUntilReturned runs the interval checks at the times they are due until h is no longer
// ejected, and returns how long after its ejection that was.
func ticksUntilReturned(t *testing.T, d *outlierDetector, clock *fakeClock, h hostKey) time.Duration {
	t.Helper()
	hs, _ := hostCopy(d, testCluster, h)
	for i := 0; d.ejected(testCluster, h); i++ {
		if i > 1000 {
			t.Fatal("host never returns")
		}
		next, ok := d.tick(clock.now())
		if !ok {
			t.Fatal("no check is due")
		}
		clock.set(next)
		if _, ok := d.tick(clock.now()); !ok {
			t.Fatal("cluster gone")
		}
	}
	return clock.since(hs.ejectedAt)
}

// TestOutlierEjectionTimeAndBackoff checks min(base × backoff, max), the backoff raised per
// ejection while backoff × base < max + base and lowered per interval check the host is not
// ejected, and the return at the first check after the time is up with counters reset.
func TestOutlierEjectionTimeAndBackoff(t *testing.T) {
	clock := newFakeClock()
	d := newOutlierDetector(clock.now)
	p := &workload.OutlierPolicy{Consecutive5xx: 1, Interval: 10 * time.Second,
		BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 90 * time.Second}
	eject := func() {
		t.Helper()
		d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
		if !d.ejected(testCluster, hostA) {
			t.Fatal("not ejected")
		}
	}
	// Backoff 1, 2, 3, 4 (90 < 120), then it stays at 4 (120 < 120 is false); the time is capped at 90 s.
	for i, want := range []struct {
		d       time.Duration
		backoff uint32
	}{{30 * time.Second, 1}, {60 * time.Second, 2}, {90 * time.Second, 3}, {90 * time.Second, 4}, {90 * time.Second, 4}} {
		eject()
		hs, _ := hostCopy(d, testCluster, hostA)
		if hs.backoff != want.backoff || hs.ejections != uint64(i+1) {
			t.Errorf("ejection %d: backoff %d, ejections %d; want %d, %d", i+1, hs.backoff, hs.ejections, want.backoff, i+1)
		}
		if got := ticksUntilReturned(t, d, clock, hostA); got != want.d {
			t.Errorf("ejection %d lasted %v, want %v", i+1, got, want.d)
		}
	}

	// Two checks without an ejection lower the backoff from 4 to 2: the next ejection lasts 90 s (3).
	for range 2 {
		next, _ := d.tick(clock.now())
		clock.set(next)
		d.tick(clock.now())
	}
	if hs, _ := hostCopy(d, testCluster, hostA); hs.backoff != 2 {
		t.Fatalf("backoff %d after two checks, want 2", hs.backoff)
	}
	clock.advance(3 * time.Second) // not on a check: the ejection is rounded up to the next one
	eject()
	if got := ticksUntilReturned(t, d, clock, hostA); got != 97*time.Second {
		t.Errorf("ejection with backoff 3 at 3 s past a check lasted %v, want 97 s (the first check after 90 s)", got)
	}
	// Four more checks: backoff 3 → 0, and the next ejection is a first one again.
	for range 4 {
		next, _ := d.tick(clock.now())
		clock.set(next)
		d.tick(clock.now())
	}
	eject()
	if got := ticksUntilReturned(t, d, clock, hostA); got != 30*time.Second {
		t.Errorf("after the backoff decayed, ejection lasted %v, want 30 s", got)
	}
}

// TestOutlierPerClusterIntervals checks that each cluster is checked at its own interval: a host
// ejected for 1 s returns after 1 s in a cluster checked every second, after 7 s in one checked
// every 7 s, and ejected again then, 7 s later.
func TestOutlierPerClusterIntervals(t *testing.T) {
	clock := newFakeClock()
	start := clock.now()
	d := newOutlierDetector(clock.now)
	fast, slow := clusterKey{service: "ns/fast"}, clusterKey{service: "ns/slow"}
	fastPolicy := &workload.OutlierPolicy{Consecutive5xx: 1, Interval: time.Second, BaseEjectionTime: time.Second}
	slowPolicy := &workload.OutlierPolicy{Consecutive5xx: 1, Interval: 7 * time.Second, BaseEjectionTime: time.Second}
	d.report(fast, fastPolicy, 10, hostA, outcomeConnectFailed, 0)
	d.report(slow, slowPolicy, 10, hostA, outcomeConnectFailed, 0)
	returned := map[string][]time.Duration{}
	var checks []time.Duration
	for range 15 {
		next, ok := d.tick(clock.now())
		if !ok {
			t.Fatal("no check due")
		}
		clock.set(next)
		checks = append(checks, clock.since(start))
		wasFast, wasSlow := d.ejected(fast, hostA), d.ejected(slow, hostA)
		d.tick(clock.now())
		if wasFast && !d.ejected(fast, hostA) {
			returned["fast"] = append(returned["fast"], clock.since(start))
		}
		if wasSlow && !d.ejected(slow, hostA) {
			returned["slow"] = append(returned["slow"], clock.since(start))
			if len(returned["slow"]) == 1 {
				d.report(slow, slowPolicy, 10, hostA, outcomeConnectFailed, 0) // 2 s this time
			}
		}
	}
	var wantChecks []time.Duration
	for i := 1; i <= 15; i++ {
		wantChecks = append(wantChecks, time.Duration(i)*time.Second)
	}
	if diff := cmp.Diff(wantChecks, checks); diff != "" {
		t.Errorf("check times (-want +got):\n%s", diff)
	}
	want := map[string][]time.Duration{"fast": {time.Second}, "slow": {7 * time.Second, 14 * time.Second}}
	if diff := cmp.Diff(want, returned); diff != "" {
		t.Errorf("returned after (-want +got):\n%s", diff)
	}
}

// TestOutlierCountersWhileEjected checks that failures reported while a host is ejected go on
// counting past the threshold without a second ejection, and that returning resets the counters.
func TestOutlierCountersWhileEjected(t *testing.T) {
	clock := newFakeClock()
	d := newOutlierDetector(clock.now)
	p := &workload.OutlierPolicy{Consecutive5xx: 2, ConsecutiveGateway: 4, Interval: time.Second, BaseEjectionTime: 5 * time.Second}
	for range 2 {
		d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
	}
	for range 3 { // 5xx: 1, 2 (equal again: ignored, the host is ejected), 3; gateway: 3, 4 (ignored), 5
		d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
	}
	hs, _ := hostCopy(d, testCluster, hostA)
	if hs.consecutive5xx != 3 || hs.consecutiveGateway != 5 || hs.ejections != 1 {
		t.Fatalf("while ejected: 5xx %d, gateway %d, ejections %d; want 3, 5, 1", hs.consecutive5xx, hs.consecutiveGateway, hs.ejections)
	}
	ticksUntilReturned(t, d, clock, hostA)
	hs, _ = hostCopy(d, testCluster, hostA)
	if hs.consecutive5xx != 0 || hs.consecutiveGateway != 0 || hs.consecutiveLocalOrigin != 0 {
		t.Errorf("after returning: counters %d %d %d, want 0", hs.consecutive5xx, hs.consecutiveGateway, hs.consecutiveLocalOrigin)
	}
	d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
	if d.ejected(testCluster, hostA) {
		t.Fatal("ejected again by one failure after returning")
	}
	d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
	if !d.ejected(testCluster, hostA) {
		t.Fatal("not ejected again after the threshold")
	}
}

// TestOutlierMaxEjectionPercent checks Envoy's cap, 100 × (ejected + 1) / hosts ≤ max, and our
// difference: one host may always be ejected when none is.
func TestOutlierMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		name                  string
		hosts                 int
		maxPercent            uint32
		wantEjected, overflow int
	}{
		{"10% of 10 hosts: one", 10, 10, 1, 9},
		{"10% of 20 hosts: two", 20, 10, 2, 18},
		{"unset is 10%", 20, 0, 2, 18},
		{"10% of 5 hosts: Envoy none, here one", 5, 10, 1, 4},
		{"10% of a single host: it", 1, 10, 1, 0},
		{"50% of 4 hosts: two", 4, 50, 2, 2},
		{"100% of 3 hosts: all", 3, 100, 3, 0},
		{"above 100 is 100", 2, 150, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newOutlierDetector(newFakeClock().now)
			p := &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: tt.maxPercent}
			ejected := 0
			for i := range tt.hosts {
				h := hostKey{uid: fmt.Sprintf("h%d", i), port: 80}
				d.report(testCluster, p, tt.hosts, h, outcomeConnectFailed, 0)
				if d.ejected(testCluster, h) {
					ejected++
				}
			}
			cs, _ := clusterCopy(d, testCluster)
			if ejected != tt.wantEjected || cs.active != tt.wantEjected || cs.overflow != uint64(tt.overflow) {
				t.Errorf("ejected %d (active %d), overflow %d; want %d, %d", ejected, cs.active, cs.overflow, tt.wantEjected, tt.overflow)
			}
		})
	}

	t.Run("an overflow resets the counter; a freed slot is taken by the next detection", func(t *testing.T) {
		clock := newFakeClock()
		d := newOutlierDetector(clock.now)
		p := &workload.OutlierPolicy{Consecutive5xx: 2, Interval: time.Second, BaseEjectionTime: 2 * time.Second}
		for range 2 {
			d.report(testCluster, p, 2, hostA, outcomeConnectFailed, 0)
		}
		for range 3 { // fires at 2 (overflow, reset), then counts 1
			d.report(testCluster, p, 2, hostB, outcomeConnectFailed, 0)
		}
		cs, _ := clusterCopy(d, testCluster)
		hs, _ := hostCopy(d, testCluster, hostB)
		if d.ejected(testCluster, hostB) || cs.overflow != 1 || hs.consecutive5xx != 1 {
			t.Fatalf("b ejected %v, overflow %d, counter %d; want false, 1, 1", d.ejected(testCluster, hostB), cs.overflow, hs.consecutive5xx)
		}
		ticksUntilReturned(t, d, clock, hostA)
		d.report(testCluster, p, 2, hostB, outcomeConnectFailed, 0)
		if !d.ejected(testCluster, hostB) {
			t.Fatal("b not ejected once a was back")
		}
	})
}

// TestOutlierPolicyChange checks that state survives new policies (a push makes a new pointer)
// and that a changed policy applies from then on.
func TestOutlierPolicyChange(t *testing.T) {
	t.Run("same values, new pointer: counters kept", func(t *testing.T) {
		d := newOutlierDetector(newFakeClock().now)
		for range 3 {
			d.report(testCluster, &workload.OutlierPolicy{Consecutive5xx: 5}, 10, hostA, outcomeConnectFailed, 0)
		}
		p2 := &workload.OutlierPolicy{Consecutive5xx: 5}
		d.report(testCluster, p2, 10, hostA, outcomeConnectFailed, 0)
		if d.ejected(testCluster, hostA) {
			t.Fatal("ejected after 4")
		}
		d.report(testCluster, p2, 10, hostA, outcomeConnectFailed, 0)
		if !d.ejected(testCluster, hostA) {
			t.Fatal("not ejected after 5 failures across two policy pointers")
		}
	})
	t.Run("lowered threshold: a counter past it fires on the next failure", func(t *testing.T) {
		d := newOutlierDetector(newFakeClock().now)
		for range 4 {
			d.report(testCluster, &workload.OutlierPolicy{Consecutive5xx: 5}, 10, hostA, outcomeConnectFailed, 0)
		}
		d.report(testCluster, &workload.OutlierPolicy{Consecutive5xx: 3}, 10, hostA, outcomeConnectFailed, 0)
		if !d.ejected(testCluster, hostA) {
			t.Fatal("not ejected: 5 failures in a row, threshold now 3")
		}
	})
	t.Run("shorter interval and base ejection time apply to a host ejected before", func(t *testing.T) {
		clock := newFakeClock()
		d := newOutlierDetector(clock.now)
		long := &workload.OutlierPolicy{Consecutive5xx: 1, Interval: time.Hour, BaseEjectionTime: time.Hour}
		d.report(testCluster, long, 10, hostA, outcomeConnectFailed, 0)
		if next, _ := d.tick(clock.now()); next.Sub(clock.now()) != time.Hour {
			t.Fatalf("next check in %v, want 1h", next.Sub(clock.now()))
		}
		short := &workload.OutlierPolicy{Consecutive5xx: 1, Interval: time.Second, BaseEjectionTime: 5 * time.Second}
		d.report(testCluster, short, 10, hostB, outcomeConnectOK, 0)
		if next, _ := d.tick(clock.now()); next.Sub(clock.now()) != time.Second {
			t.Fatalf("next check in %v after the change, want 1s", next.Sub(clock.now()))
		}
		if got := ticksUntilReturned(t, d, clock, hostA); got != 5*time.Second {
			t.Errorf("ejection lasted %v, want the new base, 5s", got)
		}
	})
	t.Run("nil policy records nothing", func(t *testing.T) {
		d := newOutlierDetector(newFakeClock().now)
		d.report(testCluster, nil, 10, hostA, outcomeConnectFailed, 0)
		if _, ok := clusterCopy(d, testCluster); ok {
			t.Fatal("a cluster without policy has state")
		}
	})
}

// TestOutlierForgetsHostsThatWentAway checks the memory bound: a host not reported for
// forgetAfter, not ejected and with its backoff spent is forgotten, its cluster with the last
// host; an ejected host is kept.
func TestOutlierForgetsHostsThatWentAway(t *testing.T) {
	clock := newFakeClock()
	d := newOutlierDetector(clock.now)
	p := &workload.OutlierPolicy{Consecutive5xx: 2, Interval: 10 * time.Second, BaseEjectionTime: 20 * time.Minute}
	d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0) // a: one failure, then gone
	for range 2 {                                                // b: ejected for 20 minutes, then gone
		d.report(testCluster, p, 10, hostB, outcomeConnectFailed, 0)
	}
	other := clusterKey{service: "ns/other.ns.svc.cluster.local"}
	live := hostKey{uid: "live", port: 80}
	for start := clock.now(); clock.since(start) < 15*time.Minute; {
		d.report(other, p, 1, live, outcomeConnectOK, 0) // reported every minute
		clock.advance(time.Minute)
		d.tick(clock.now())
	}
	if _, ok := hostCopy(d, testCluster, hostA); ok {
		t.Error("a, idle for 15 minutes, is remembered")
	}
	if !d.ejected(testCluster, hostB) {
		t.Error("b, ejected, was forgotten")
	}
	if _, ok := hostCopy(d, other, live); !ok {
		t.Error("a host reported every minute was forgotten")
	}
	for range 30 { // b returns at 20 minutes, its backoff decays, it is forgotten with its cluster
		clock.advance(time.Minute)
		d.tick(clock.now())
	}
	if _, ok := clusterCopy(d, testCluster); ok {
		t.Error("the cluster of two hosts gone for 45 minutes is remembered")
	}
	d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
	if hs, _ := hostCopy(d, testCluster, hostA); hs.consecutive5xx != 1 {
		t.Errorf("a host seen again starts at %d failures, want 1", hs.consecutive5xx)
	}
}

// TestOutlierGeneration checks that the generation moves on exactly when an ejection state
// changes.
func TestOutlierGeneration(t *testing.T) {
	clock := newFakeClock()
	d := newOutlierDetector(clock.now)
	p := &workload.OutlierPolicy{Consecutive5xx: 2, Interval: time.Second, BaseEjectionTime: 2 * time.Second}
	g0 := d.generation()
	if g0 == 0 {
		t.Fatal("generation 0")
	}
	d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
	d.report(testCluster, p, 10, hostA, outcomeConnectOK, 0)
	clock.advance(time.Second)
	d.tick(clock.now())
	if d.generation() != g0 {
		t.Fatal("generation changed without an ejection")
	}
	d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
	d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
	g1 := d.generation()
	if g1 == g0 {
		t.Fatal("generation unchanged by an ejection")
	}
	clock.advance(time.Second)
	d.tick(clock.now())
	if d.generation() != g1 {
		t.Fatal("generation changed by a check that returned nobody")
	}
	clock.advance(time.Second)
	d.tick(clock.now())
	if d.ejected(testCluster, hostA) || d.generation() == g1 {
		t.Fatalf("after 2s: ejected %v, generation %d (was %d)", d.ejected(testCluster, hostA), d.generation(), g1)
	}
}

// TestOutlierRun checks run in a synctest bubble: it wakes for a cluster added while it waits
// for a distant check, returns hosts on time, and exits (leaving no goroutine) when ctx is done.
func TestOutlierRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newOutlierDetector(time.Now)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- d.run(ctx) }()
		synctest.Wait() // run waits with no cluster

		slow := clusterKey{service: "ns/slow"}
		d.report(slow, &workload.OutlierPolicy{Consecutive5xx: 1, Interval: time.Hour}, 10, hostA, outcomeConnectFailed, 0)
		synctest.Wait()
		p := &workload.OutlierPolicy{Consecutive5xx: 1, Interval: time.Second, BaseEjectionTime: 3 * time.Second}
		d.report(testCluster, p, 10, hostA, outcomeConnectFailed, 0)
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		if !d.ejected(testCluster, hostA) {
			t.Fatal("returned before its ejection time")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if d.ejected(testCluster, hostA) {
			t.Fatal("still ejected at the first check after 3 s: run did not wake for the new cluster")
		}
		if !d.ejected(slow, hostA) {
			t.Fatal("the host of the cluster checked hourly returned after 3.5 s")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v, want nil on cancellation", err)
		}
	})
}

// TestOutlierConcurrent exercises every method at once (run with -race) and then checks that the
// ejected set and the counts agree with the hosts' state.
func TestOutlierConcurrent(t *testing.T) {
	d := newOutlierDetector(time.Now)
	clusters := []clusterKey{{"ns/a", ""}, {"ns/a", "v1"}, {"ns/b", ""}}
	p := &workload.OutlierPolicy{Consecutive5xx: 2, ConsecutiveGateway: 3, Interval: time.Millisecond,
		BaseEjectionTime: time.Millisecond, MaxEjectionPercent: 50}
	outcomes := []step{fail, timeout, okConn, reset, status(503), status(500), status(404)}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- d.run(ctx) }()
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				c := clusters[(i+w)%len(clusters)]
				s := outcomes[(i*7+w)%len(outcomes)]
				d.report(c, p, 8, hostKey{uid: fmt.Sprint("h", i%8), port: 80}, s.o, s.status)
			}
		})
	}
	wg.Go(func() {
		for i := range 20000 {
			d.ejected(clusters[i%len(clusters)], hostKey{uid: fmt.Sprint("h", i%8), port: 80})
			d.generation()
		}
	})
	wg.Go(func() {
		col := &outlierCollector{d: d}
		for range 50 {
			d.dump()
			ch := make(chan prometheus.Metric, 1000)
			col.Collect(ch)
		}
	})
	wg.Wait()
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for c, cs := range d.clusters {
		n := 0
		for h, hs := range cs.hosts {
			if hs.ejected {
				n++
			}
			if d.ejected(c, h) != hs.ejected {
				t.Errorf("%v %v: ejected() %v, state %v", c, h, d.ejected(c, h), hs.ejected)
			}
		}
		if n != cs.active {
			t.Errorf("%v: %d hosts ejected, active %d", c, n, cs.active)
		}
	}
}

// TestOutlierEjectedDoesNotAllocate guards the hot path.
func TestOutlierEjectedDoesNotAllocate(t *testing.T) {
	d := newOutlierDetector(newFakeClock().now)
	p := &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100}
	d.report(testCluster, p, 2, hostA, outcomeConnectFailed, 0)
	var hit, miss bool
	if n := testing.AllocsPerRun(100, func() {
		hit = d.ejected(testCluster, hostA)
		miss = d.ejected(testCluster, hostB)
	}); n != 0 {
		t.Errorf("ejected allocates %v times per call pair", n)
	}
	if !hit || miss {
		t.Errorf("ejected: a %v, b %v; want true, false", hit, miss)
	}
}

func BenchmarkOutlierEjected(b *testing.B) {
	d := newOutlierDetector(time.Now)
	p := &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100}
	for i := range 100 {
		d.report(testCluster, p, 100, hostKey{uid: fmt.Sprint("h", i), port: 80}, outcomeConnectFailed, 0)
	}
	h := hostKey{uid: "h7", port: 80}
	b.ReportAllocs()
	for b.Loop() {
		d.ejected(testCluster, h)
	}
}

// TestOutlierMetrics checks the three metrics on the proxy's registry.
func TestOutlierMetrics(t *testing.T) {
	p := newTestProxy(t, Config{})
	pol := &workload.OutlierPolicy{Consecutive5xx: 1, ConsecutiveGateway: 1, MaxEjectionPercent: 10}
	p.outliers.report(testCluster, pol, 10, hostA, outcomeStatus, 500) // consecutive_5xx
	p.outliers.report(testCluster, pol, 10, hostB, outcomeStatus, 503) // gateway fires first: overflow (1 of 10 ejected)
	got := gather(t, p.metrics.reg)
	labels := func(reason string) map[string]string {
		l := map[string]string{"service": testCluster.service, "subset": testCluster.subset}
		if reason != "" {
			l["reason"] = reason
		}
		return l
	}
	want := map[string][]sample{
		"ztunnel_outlier_ejections_total": {
			{labels("consecutive_5xx"), 1}, {labels("consecutive_gateway"), 0}, {labels("consecutive_local_origin"), 0},
		},
		// Both detectors of b fired and each was refused.
		"ztunnel_outlier_ejections_overflow_total": {{labels(""), 2}},
		"ztunnel_outlier_ejected_hosts":            {{labels(""), 1}},
	}
	for name, w := range want {
		if diff := cmp.Diff(w, got[name]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}

// TestOutlierConfigDump checks the outlierDetection section of /config_dump: field names, values
// and order (clusters by service then subset, hosts by uid then port).
func TestOutlierConfigDump(t *testing.T) {
	p := newTestProxy(t, Config{})
	clock := newFakeClock()
	p.outliers = newOutlierDetector(clock.now)
	pol := &workload.OutlierPolicy{Consecutive5xx: 2, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second}
	other := clusterKey{service: testCluster.service} // the whole service sorts before its subset v1
	p.outliers.report(testCluster, pol, 10, hostKey{uid: "z", port: 80}, outcomeConnectFailed, 0)
	p.outliers.report(testCluster, pol, 10, hostKey{uid: "a", port: 9090}, outcomeConnectOK, 0)
	p.outliers.report(testCluster, pol, 10, hostKey{uid: "a", port: 80}, outcomeConnectFailed, 0)
	p.outliers.report(testCluster, pol, 10, hostKey{uid: "a", port: 80}, outcomeConnectTimeout, 0)
	p.outliers.report(other, pol, 10, hostA, outcomeStatus, 500)

	var doc struct {
		OutlierDetection []map[string]any `json:"outlierDetection"`
	}
	if err := json.Unmarshal(renderDump(t, p), &doc); err != nil {
		t.Fatal(err)
	}
	now := "2026-01-02T03:04:00Z"
	host := func(uid string, port float64, c5xx, gw float64, ejected bool, until string, times, backoff float64) map[string]any {
		h := map[string]any{"uid": uid, "port": port, "consecutive5xx": c5xx, "consecutiveGateway": gw,
			"consecutiveLocalOrigin": 0.0, "ejected": ejected, "timesEjected": times, "ejectionBackoff": backoff, "lastReport": now}
		if until != "" {
			h["ejectedUntil"] = until
		}
		return h
	}
	cluster := func(subset string, ejected, n5xx float64, hosts ...any) map[string]any {
		return map[string]any{"service": testCluster.service, "subset": subset, "ejectedHosts": ejected,
			"ejections": map[string]any{"consecutive_5xx": n5xx, "consecutive_gateway": 0.0, "consecutive_local_origin": 0.0},
			"overflow":  0.0, "nextCheck": "2026-01-02T03:04:10Z", "intervalSeconds": 10.0,
			"baseEjectionSeconds": 30.0, "maxEjectionSeconds": 300.0, "hosts": hosts}
	}
	want := []map[string]any{
		cluster("", 0, 0, host(hostA.uid, float64(hostA.port), 1, 0, false, "", 0, 0)),
		cluster("v1", 1, 1,
			host("a", 80, 0, 2, true, "2026-01-02T03:04:30Z", 1, 1),
			host("a", 9090, 0, 0, false, "", 0, 0),
			host("z", 80, 1, 1, false, "", 0, 0)),
	}
	if diff := cmp.Diff(want, doc.OutlierDetection); diff != "" {
		t.Errorf("outlierDetection (-want +got):\n%s", diff)
	}
}
