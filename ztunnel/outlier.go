package ztunnel

import (
	"container/heap"
	"context"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ztunnel-go/ztunnel/workload"
)

// Passive outlier detection (DestinationRule outlierDetection, issue 12), with Envoy's semantics
// (multinetwork-and-policy.md §3.1–3.2): the selection reports what became of every attempt to
// reach a host, consecutive failures eject the host for a while, and the selection skips ejected
// hosts. Deliberate differences from Envoy, each for a reason given where it is implemented:
//   - one host of a cluster may always be ejected when none is, whatever maxEjectionPercent says
//     (mayEject);
//   - split mode: a CONNECT answered 200 is both a local-origin success and a 200 answer, so it
//     resets all three counters (record);
//   - the state outlives configuration pushes (Envoy rebuilds a detector with its cluster), so a
//     lowered threshold is applied to a counter already past it (setPolicy), and hosts that stop
//     being reported are forgotten after a while (check).

// clusterKey identifies a group of hosts that share one outlier policy: a service's endpoints, or
// a subset of them.
type clusterKey struct{ service, subset string } // service "ns/hostname"

// hostKey identifies one host of a cluster: an endpoint workload and its target port.
type hostKey struct {
	uid  string
	port uint16
}

// outcome is what became of one attempt to reach a host.
type outcome uint8

const (
	_ outcome = iota // the zero value is no outcome: report ignores it
	// outcomeConnectOK: the CONNECT was answered 200 (a plain TCP connect succeeded).
	outcomeConnectOK
	// outcomeConnectFailed: the host could not be reached (refused, unreachable, TLS failed).
	outcomeConnectFailed
	// outcomeConnectTimeout: reaching the host timed out.
	outcomeConnectTimeout
	// outcomeStatus: the CONNECT was answered with another status (passed to report).
	outcomeStatus
	// outcomeReset: the CONNECT stream was reset before its answer. The host's node was reached,
	// so in split mode this is an external-origin failure (Envoy's ExtOriginRequestFailed, a 503).
	outcomeReset
)

// ejectReason is the detector that ejected a host.
type ejectReason uint8

const (
	reason5xx ejectReason = iota
	reasonGateway
	reasonLocalOrigin
	numEjectReasons
)

// String is the reason as the metrics and the config dump name it.
func (r ejectReason) String() string {
	switch r {
	case reason5xx:
		return "consecutive_5xx"
	case reasonGateway:
		return "consecutive_gateway"
	case reasonLocalOrigin:
		return "consecutive_local_origin"
	}
	return "unknown"
}

// Envoy's defaults (DetectorConfig), for the durations an OutlierPolicy leaves zero.
const (
	defaultOutlierInterval    = 10 * time.Second
	defaultBaseEjectionTime   = 30 * time.Second
	defaultMaxEjectionTime    = 300 * time.Second
	defaultMaxEjectionPercent = 10
	// outlierForgetAfter is how long a host that is not ejected, whose ejection backoff is spent
	// and that nothing reported goes on being remembered (its consecutive counters are lost).
	outlierForgetAfter = 10 * time.Minute
)

// outlierSettings is an OutlierPolicy with every default resolved.
type outlierSettings struct {
	consecutive5xx, consecutiveGateway, consecutiveLocalOrigin uint32
	split                                                      bool
	interval, baseEjection, maxEjection                        time.Duration
	maxEjectionPercent                                         uint64 // 0..100
}

// resolveOutlier fills in Envoy's defaults for what p leaves zero: interval 10 s, base ejection
// time 30 s, maximum ejection time the larger of 300 s and the base, maximum ejection percent 10
// (Istio passes maxEjectionPercent only when it is above 0). A maximum ejection time under the
// base is raised to the base (Envoy refuses such a configuration; the config compiler should
// too), and a percentage above 100 is 100.
func resolveOutlier(p *workload.OutlierPolicy) outlierSettings {
	s := outlierSettings{
		consecutive5xx:         p.Consecutive5xx,
		consecutiveGateway:     p.ConsecutiveGateway,
		consecutiveLocalOrigin: p.ConsecutiveLocalOrigin,
		split:                  p.SplitLocalOrigin,
		interval:               p.Interval,
		baseEjection:           p.BaseEjectionTime,
		maxEjection:            p.MaxEjectionTime,
		maxEjectionPercent:     uint64(min(p.MaxEjectionPercent, 100)),
	}
	if s.interval <= 0 {
		s.interval = defaultOutlierInterval
	}
	if s.baseEjection <= 0 {
		s.baseEjection = defaultBaseEjectionTime
	}
	if s.maxEjection <= 0 {
		s.maxEjection = max(defaultMaxEjectionTime, s.baseEjection)
	}
	s.maxEjection = max(s.maxEjection, s.baseEjection)
	if p.MaxEjectionPercent == 0 {
		s.maxEjectionPercent = defaultMaxEjectionPercent
	}
	return s
}

// ejectionTime is how long a host ejected with backoff stays out: base × backoff, at most max.
func (s *outlierSettings) ejectionTime(backoff uint32) time.Duration {
	if backoff == 0 {
		return 0
	}
	if uint64(backoff) > uint64(s.maxEjection/s.baseEjection) {
		return s.maxEjection // also keeps the product below from overflowing
	}
	return min(s.baseEjection*time.Duration(backoff), s.maxEjection)
}

// hostState is what the detector knows of one host.
type hostState struct {
	consecutive5xx, consecutiveGateway, consecutiveLocalOrigin uint32

	ejected    bool
	ejectedAt  time.Time // of the last ejection
	backoff    uint32    // the last ejection lasts base × backoff (Envoy's ejectTimeBackoff)
	ejections  uint64    // times ejected in all
	lastReport time.Time
}

// clusterState is one cluster's detector.
type clusterState struct {
	src       *workload.OutlierPolicy // the policy last reported with (compared by pointer first)
	settings  outlierSettings
	hosts     map[hostKey]*hostState
	active    int       // hosts ejected now
	nextCheck time.Time // of the interval timer

	ejections [numEjectReasons]uint64 // by reason, for the metrics
	overflow  uint64                  // ejections refused by maxEjectionPercent
}

// outlierKey is a host of a cluster, the key of the ejected set.
type outlierKey struct {
	c clusterKey
	h hostKey
}

// outlierDetector keeps the outlier state of every cluster the selection reported on: the
// consecutive failure counters of each host, its ejection and ejection backoff.
//
// # Concurrency
//
// All methods are safe for concurrent use. report and the interval checks take mu; ejected reads
// an immutable set of the ejected hosts through an atomic pointer, replaced (under mu) whenever a
// host is ejected or returns, so it never waits for them.
type outlierDetector struct {
	now         func() time.Time
	forgetAfter time.Duration

	mu       sync.Mutex
	clusters map[clusterKey]*clusterState // guarded by mu
	due      checkQueue                   // guarded by mu

	ejectedSet atomic.Pointer[map[outlierKey]struct{}] // never nil; do not modify the map
	gen        atomic.Uint64
	wake       chan struct{} // 1-buffered: a cluster's next check moved earlier
}

// newOutlierDetector returns a detector with no state that reads the time from now
// (time.Now if nil).
func newOutlierDetector(now func() time.Time) *outlierDetector {
	if now == nil {
		now = time.Now
	}
	d := &outlierDetector{now: now, forgetAfter: outlierForgetAfter,
		clusters: map[clusterKey]*clusterState{}, wake: make(chan struct{}, 1)}
	empty := map[outlierKey]struct{}{}
	d.ejectedSet.Store(&empty)
	d.gen.Store(1)
	return d
}

// report records one outcome for host h of cluster c under policy p (nil: the cluster has no
// outlier detection, nothing is recorded); hosts is the number of hosts the cluster has now (for
// maxEjectionPercent), status the CONNECT answer's status for outcomeStatus (a status outside
// 100–599 counts as 502, an invalid answer). A report may eject h at once; h returns at the first
// interval check after its ejection time is up. An unknown outcome is ignored.
func (d *outlierDetector) report(c clusterKey, p *workload.OutlierPolicy, hosts int, h hostKey, o outcome, status int) {
	if p == nil || o == 0 || o > outcomeReset {
		return
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	cs := d.clusters[c]
	if cs == nil {
		cs = &clusterState{src: p, settings: resolveOutlier(p), hosts: map[hostKey]*hostState{}}
		d.clusters[c] = cs
		d.schedule(c, cs, now.Add(cs.settings.interval), true)
	} else if cs.src != p {
		d.setPolicy(c, cs, p, now)
	}
	hs := cs.hosts[h]
	if hs == nil {
		hs = &hostState{}
		cs.hosts[h] = hs
	}
	hs.lastReport = now
	fired, n := hs.record(&cs.settings, o, status)
	changed := false
	for _, r := range fired[:n] {
		if d.detected(cs, hs, r, hosts, now) {
			changed = true
		}
	}
	if changed {
		d.publish()
	}
}

// setPolicy makes p the policy of cs from now on. The counters are kept, but one already at or
// past a new, lower threshold is set just under it: the next failure ejects (with Envoy's exact
// equality it would never fire until a success reset it). A shorter interval takes effect now.
// Called with d.mu held.
func (d *outlierDetector) setPolicy(c clusterKey, cs *clusterState, p *workload.OutlierPolicy, now time.Time) {
	cs.src = p
	s := resolveOutlier(p)
	if s == cs.settings {
		return
	}
	cs.settings = s
	clamp := func(counter *uint32, threshold uint32) {
		if threshold > 0 && *counter >= threshold {
			*counter = threshold - 1
		}
	}
	for _, hs := range cs.hosts {
		clamp(&hs.consecutive5xx, s.consecutive5xx)
		clamp(&hs.consecutiveGateway, s.consecutiveGateway)
		clamp(&hs.consecutiveLocalOrigin, s.consecutiveLocalOrigin)
	}
	if next := now.Add(s.interval); next.Before(cs.nextCheck) {
		d.schedule(c, cs, next, true)
	}
}

// record counts outcome o (status for outcomeStatus) and returns the detectors that fired, in
// the order Envoy handles them (gateway before 5xx).
//
// Non-split mode maps every outcome to a status (Envoy's resultToHttpCode): connect failure 503,
// timeout 504, reset 503, connect OK 200. Split mode counts connect failures and timeouts only
// against the local-origin counter, and every outcome that reached the host (an answer, a reset)
// resets it. Unlike Envoy's TCP proxy, whose connect success in split mode resets only the
// local-origin counter, a CONNECT answered 200 is an answer too and resets all three.
func (hs *hostState) record(s *outlierSettings, o outcome, status int) (fired [2]ejectReason, n int) {
	code := 0
	switch o {
	case outcomeConnectOK:
		code = 200
	case outcomeConnectFailed, outcomeReset:
		code = 503
	case outcomeConnectTimeout:
		code = 504
	case outcomeStatus:
		code = status
		if code < 100 || code > 599 {
			code = 502
		}
	}
	if s.split {
		switch o {
		case outcomeConnectFailed, outcomeConnectTimeout:
			hs.consecutiveLocalOrigin++
			if hs.consecutiveLocalOrigin == s.consecutiveLocalOrigin {
				fired[n], n = reasonLocalOrigin, n+1
			}
			return fired, n
		default:
			hs.consecutiveLocalOrigin = 0
		}
	}
	if code < 500 {
		hs.consecutive5xx, hs.consecutiveGateway = 0, 0
		return fired, n
	}
	if code == 502 || code == 503 || code == 504 {
		hs.consecutiveGateway++
		if hs.consecutiveGateway == s.consecutiveGateway {
			fired[n], n = reasonGateway, n+1
		}
	} else {
		hs.consecutiveGateway = 0
	}
	hs.consecutive5xx++
	if hs.consecutive5xx == s.consecutive5xx {
		fired[n], n = reason5xx, n+1
	}
	return fired, n
}

// detected handles a detector of hs that fired (Envoy's onConsecutiveErrorWorker and ejectHost):
// nothing if hs is ejected already (its counters go on and are reset when it returns); else its
// counter is reset and hs is ejected if maxEjectionPercent allows it, or the refusal is counted
// as an overflow. It reports whether hs was ejected. Called with d.mu held.
func (d *outlierDetector) detected(cs *clusterState, hs *hostState, r ejectReason, hosts int, now time.Time) bool {
	if hs.ejected {
		return false
	}
	switch r {
	case reason5xx:
		hs.consecutive5xx = 0
	case reasonGateway:
		hs.consecutiveGateway = 0
	case reasonLocalOrigin:
		hs.consecutiveLocalOrigin = 0
	}
	if !cs.mayEject(hosts) {
		cs.overflow++
		return false
	}
	s := &cs.settings
	// Envoy raises the backoff while backoff × base < max + base (in 128 bits: never overflows).
	if hi, lo := bits.Mul64(uint64(hs.backoff), uint64(s.baseEjection)); hi == 0 && lo < uint64(s.maxEjection)+uint64(s.baseEjection) {
		hs.backoff++
	}
	hs.ejected, hs.ejectedAt = true, now
	hs.ejections++
	cs.active++
	cs.ejections[r]++
	return true
}

// mayEject applies maxEjectionPercent to one more ejection in a cluster of hosts hosts, as Envoy
// does: 100 × (ejected + 1) / hosts ≤ max. Unlike Envoy's default, one host may always be ejected
// when none is (Envoy's always_eject_one_host): with the default 10% Envoy never ejects in a
// cluster of fewer than 10 hosts, so a dead endpoint of a small service would go on taking
// connections. Called with d.mu held.
func (cs *clusterState) mayEject(hosts int) bool {
	if cs.active == 0 {
		return true
	}
	return 100*uint64(cs.active+1) <= cs.settings.maxEjectionPercent*uint64(max(hosts, 0))
}

// ejected reports whether h of c is ejected now: from the report that ejected it to the interval
// check that returns it. It neither locks nor allocates. It does not know policies: a host stays
// ejected under the policy it was last reported with, even if its cluster has none any more.
func (d *outlierDetector) ejected(c clusterKey, h hostKey) bool {
	set := *d.ejectedSet.Load()
	if len(set) == 0 {
		return false
	}
	_, ok := set[outlierKey{c, h}]
	return ok
}

// generation is a number (never 0) that changes every time any host is ejected or returns.
func (d *outlierDetector) generation() uint64 { return d.gen.Load() }

// publish replaces the ejected set after an ejection state changed and moves the generation on.
// Called with d.mu held.
func (d *outlierDetector) publish() {
	set := map[outlierKey]struct{}{}
	for c, cs := range d.clusters {
		if cs.active == 0 {
			continue
		}
		for h, hs := range cs.hosts {
			if hs.ejected {
				set[outlierKey{c, h}] = struct{}{}
			}
		}
	}
	d.ejectedSet.Store(&set)
	d.gen.Add(1)
}

func (d *outlierDetector) wakeRun() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run does the interval checks of every cluster, each at its own interval, until ctx is done;
// it then returns nil.
func (d *outlierDetector) run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next, ok := d.tick(d.now())
		var fire <-chan time.Time
		if ok {
			timer.Reset(next.Sub(d.now()))
			fire = timer.C
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-fire:
		case <-d.wake:
		}
	}
}

// tick does the interval check of every cluster whose check is due at now (Envoy's
// onIntervalTimer) and returns when the next one is due (false: no cluster left). For each host
// of such a cluster: an ejected host whose ejection time (base × backoff, at most max, under the
// cluster's current policy) is up returns, with all its counters reset; a host that is not
// ejected has its backoff lowered by one. A host that is not ejected, whose backoff is spent and
// that was not reported for forgetAfter is forgotten (its counters with it; a host that is still
// there starts afresh), and a cluster without hosts with it: the state of endpoints that came
// and went stays bounded. The cost is that of the clusters due, not of all of them.
func (d *outlierDetector) tick(now time.Time) (next time.Time, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := false
	for len(d.due) > 0 && !now.Before(d.due[0].at) {
		e := heap.Pop(&d.due).(dueCheck)
		cs := d.clusters[e.c]
		if cs == nil || !cs.nextCheck.Equal(e.at) {
			continue // the cluster is gone or was rescheduled
		}
		if d.check(e.c, cs, now) {
			changed = true
		}
	}
	if changed {
		d.publish()
	}
	if len(d.due) == 0 {
		return time.Time{}, false
	}
	return d.due[0].at, true // may be stale: then run wakes for nothing once
}

// check is one interval check of cluster c (see tick) and reports whether a host returned.
// Called with d.mu held.
func (d *outlierDetector) check(c clusterKey, cs *clusterState, now time.Time) (changed bool) {
	for h, hs := range cs.hosts {
		switch {
		case hs.ejected:
			if now.Sub(hs.ejectedAt) >= cs.settings.ejectionTime(hs.backoff) {
				hs.ejected = false
				hs.consecutive5xx, hs.consecutiveGateway, hs.consecutiveLocalOrigin = 0, 0, 0
				cs.active--
				changed = true
			}
		case hs.backoff > 0:
			hs.backoff--
		case now.Sub(hs.lastReport) >= d.forgetAfter:
			delete(cs.hosts, h)
		}
	}
	if len(cs.hosts) == 0 {
		delete(d.clusters, c)
		return changed
	}
	d.schedule(c, cs, now.Add(cs.settings.interval), false)
	return changed
}

// schedule sets the next check of cluster c, and wakes run if asked to and the check is the
// first due (run itself needs no waking). An entry of the queue for another time of the cluster
// is stale and skipped when it comes up. Called with d.mu held.
func (d *outlierDetector) schedule(c clusterKey, cs *clusterState, at time.Time, wake bool) {
	cs.nextCheck = at
	heap.Push(&d.due, dueCheck{at: at, c: c})
	if wake && d.due[0].at.Equal(at) {
		d.wakeRun()
	}
}

// dueCheck is an interval check of cluster c due at at.
type dueCheck struct {
	at time.Time
	c  clusterKey
}

// checkQueue is a min-heap of interval checks by time (container/heap).
type checkQueue []dueCheck

func (q checkQueue) Len() int           { return len(q) }
func (q checkQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q checkQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *checkQueue) Push(x any)        { *q = append(*q, x.(dueCheck)) }
func (q *checkQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = dueCheck{}
	*q = old[:len(old)-1]
	return e
}
