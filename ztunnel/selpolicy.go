package ztunnel

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ztunnel-go/ztunnel/workload"
)

// Endpoint selection under traffic policy (issue 12): a VirtualService's weighted TCP routes choose
// the destination service and subset, the DestinationRule's localityLbSetting puts the endpoints in
// priority levels and locality groups, outlier detection takes ejected hosts out, and Envoy's
// priority-load rule (overprovisioning factor 1.4, multinetwork-and-policy.md §3.3) spreads the
// connections over the levels. A service no traffic policy names keeps the reference's selection
// (select.go).
//
// Deliberate differences from Envoy and Istio, each for a node proxy that has no other health signal:
//   - failover priorities (the default region/zone/subzone chain, `failover`, `failoverPriority`) apply
//     with or without outlierDetection: Istio drops them without it because Envoy would then never
//     see an endpoint unhealthy, but here endpoints that leave the configuration, and ejected ones
//     once outlier detection is on, are exactly what moves traffic down a level;
//   - when every host of every level is ejected (and the panic threshold is off) the hosts of the
//     first level are used anyway, rather than failing every connection until an ejection ends;
//   - `distribute` entries that overlap claim locality groups most specific first (Istio walks a Go
//     map: the order is unspecified);
//   - a service whose workload-discovery entry has a FAILOVER routing preference and whose rule says
//     nothing about locality keeps that preference, as priority levels (istiod's TrafficDistribution
//     becomes failoverPriority with Force, which is the same thing); STRICT always filters.

// overprovisioning is Envoy's default overprovisioning factor, in percent.
const overprovisioning = 140

// policyRoute is where traffic policy sends a connection to a service port: the service and port
// the route chose, and the rule and subset that govern the endpoints.
type policyRoute struct {
	svc    *workload.Service
	port   uint16
	rule   *workload.DestinationPolicy // nil: none
	subset *workload.Subset            // nil: the whole service
}

// settings are the traffic settings that apply: the subset's, else the rule's.
func (r *policyRoute) settings() workload.TrafficSettings {
	if r.subset != nil {
		return r.subset.Policy
	}
	if r.rule != nil {
		return r.rule.Policy
	}
	return workload.TrafficSettings{}
}

// routePolicy applies snap's traffic policy to a connection for port of svc: the VirtualService
// routing svc's hostname (its first TCP route matching the port, one destination by weight), then
// the DestinationRule of the chosen host. ok is false when no policy names the service: the
// caller keeps the plain selection.
func routePolicy(snap *workload.Snapshot, svc *workload.Service, port uint16, rnd randSource) (r policyRoute, ok bool, err error) {
	ti := snap.Traffic()
	if ti == nil {
		return policyRoute{}, false, nil
	}
	r = policyRoute{svc: svc, port: port}
	subsetName := ""
	if vs := ti.Route(svc.Hostname); vs != nil {
		if tr := firstTCPRoute(vs, port); tr != nil && len(tr.Destinations) > 0 {
			d := pickRouteDestination(tr, rnd)
			if d.Host != svc.Hostname {
				to := snap.ServiceByHostname(d.Host)
				if to == nil {
					return policyRoute{}, false, fmt.Errorf("virtual service %s routes %s to host %q, which is not a known service", vs.Key(), svc.Hostname, d.Host)
				}
				r.svc = to
			}
			if d.Port != 0 {
				r.port = d.Port
			}
			subsetName = d.Subset
			ok = true
		}
	}
	r.rule = ti.Destination(r.svc.Hostname)
	if subsetName != "" {
		if r.rule != nil {
			r.subset = r.rule.Subset(subsetName)
		}
		if r.subset == nil {
			return policyRoute{}, false, fmt.Errorf("route to subset %q of %s: no destination rule defines it", subsetName, r.svc.Hostname)
		}
	}
	return r, ok || r.rule != nil, nil
}

func firstTCPRoute(vs *workload.RoutePolicy, port uint16) *workload.TCPRoute {
	for _, tr := range vs.TCP {
		if tr.Matches(port) {
			return tr
		}
	}
	return nil
}

// pickRouteDestination chooses one destination of tr by weight (a single destination may have
// weight 0; destinations of weight 0 among others are never chosen).
func pickRouteDestination(tr *workload.TCPRoute, rnd randSource) workload.RouteDestination {
	if len(tr.Destinations) == 1 {
		return tr.Destinations[0]
	}
	var total uint64
	for _, d := range tr.Destinations {
		total += uint64(d.Weight)
	}
	if total == 0 {
		return tr.Destinations[0]
	}
	x := rnd(total)
	for _, d := range tr.Destinations {
		if x < uint64(d.Weight) {
			return d
		}
		x -= uint64(d.Weight)
	}
	return tr.Destinations[len(tr.Destinations)-1] // not reached
}

// policyPlan is the compiled selection for one (route, source) within one snapshot: the hosts in
// priority levels and locality groups. Which hosts are ejected changes without a new snapshot, so
// the pick tables (planState) are rebuilt whenever the outlier detector's generation moves.
type policyPlan struct {
	cluster   clusterKey
	outlier   *workload.OutlierPolicy // nil: nothing is ever ejected
	minHealth uint32                  // panic threshold, percent (0: off)
	hosts     int                     // every host of every level (maxEjectionPercent counts them)
	levels    [][]planGroup           // by priority, best first; no empty level, no empty group
	state     atomic.Pointer[planState]
}

// planGroup is the hosts of one locality within a level, and the locality's weight.
type planGroup struct {
	weight uint64 // the distribute weight, or the sum of the hosts' capacities
	ups    []upstream
	caps   []uint64
}

// planState is the pick tables of a plan for one outlier-detector generation.
type planState struct {
	gen     uint64
	loadCum []uint64 // cumulative per-level load, in percent (the last is 100); len = levels
	levels  []levelState
}

type levelState struct {
	groupCum []uint64
	groups   []groupState
}

type groupState struct {
	ups []upstream
	cum []uint64
}

// pick chooses the host for a new connection: a level by load, a locality by effective weight,
// a host by capacity. No allocation unless the ejections changed since the last pick.
func (p *policyPlan) pick(d *outlierDetector, rnd randSource) (upstream, bool) {
	st := p.current(d)
	if len(st.levels) == 0 {
		return upstream{}, false
	}
	li := 0
	if len(st.loadCum) > 1 {
		x := rnd(100)
		li = sort.Search(len(st.loadCum), func(i int) bool { return st.loadCum[i] > x })
	}
	lv := &st.levels[li]
	gi := 0
	if n := len(lv.groupCum); n > 1 {
		x := rnd(lv.groupCum[n-1])
		gi = sort.Search(n, func(i int) bool { return lv.groupCum[i] > x })
	}
	if gi >= len(lv.groups) {
		return upstream{}, false // not reached: a level with load has a group with weight
	}
	g := &lv.groups[gi]
	x := rnd(g.cum[len(g.cum)-1])
	return g.ups[sort.Search(len(g.cum), func(i int) bool { return g.cum[i] > x })], true
}

// current returns the pick tables for the detector's present generation.
func (p *policyPlan) current(d *outlierDetector) *planState {
	st := p.state.Load()
	if p.outlier == nil {
		return st // built once: nothing is ever ejected
	}
	gen := d.generation()
	if st != nil && st.gen == gen {
		return st
	}
	fresh := p.buildState(d, gen)
	p.state.Store(fresh)
	return fresh
}

// isEjected reports whether up is ejected under the plan's outlier policy.
func (p *policyPlan) isEjected(d *outlierDetector, up upstream) bool {
	return p.outlier != nil && d != nil && d.ejected(p.cluster, hostKey{uid: up.Workload.UID, port: up.Port})
}

// buildState computes Envoy's priority load (§3.3): a level's health is
// min(100, 1.4 × 100 × available/total); the normalized total health NTH = min(100, Σ health); the
// levels take min(remaining, health × 100 / NTH) in order, and what rounding leaves goes to the
// first level with health. While NTH < 100, a level whose available share is below the panic
// threshold uses all its hosts. Within a level, a locality's effective weight is its weight ×
// min(100, 1.4 × 100 × available/total).
func (p *policyPlan) buildState(d *outlierDetector, gen uint64) *planState {
	st := &planState{gen: gen, loadCum: make([]uint64, len(p.levels)), levels: make([]levelState, len(p.levels))}
	if len(p.levels) == 0 {
		return st
	}
	avail := make([][]bool, len(p.levels))
	health := make([]uint64, len(p.levels))
	healthyPct := make([]uint64, len(p.levels))
	var sumHealth uint64
	for li, groups := range p.levels {
		var total, ok uint64
		for _, g := range groups {
			for _, up := range g.ups {
				a := !p.isEjected(d, up)
				avail[li] = append(avail[li], a)
				total++
				if a {
					ok++
				}
			}
		}
		health[li] = min(100, overprovisioning*ok/total)
		healthyPct[li] = 100 * ok / total
		sumHealth += health[li]
	}
	nth := min(100, sumHealth)
	load := make([]uint64, len(p.levels))
	panicking := make([]bool, len(p.levels))
	if nth == 0 {
		// Every host is ejected: use the first level whole (see the differences above).
		load[0], panicking[0] = 100, true
	} else {
		var used uint64
		for li := range p.levels {
			load[li] = min(100-used, health[li]*100/nth)
			used += load[li]
			panicking[li] = nth < 100 && p.minHealth > 0 && healthyPct[li] < uint64(p.minHealth)
		}
		for li := range p.levels {
			if used < 100 && health[li] > 0 {
				load[li] += 100 - used
				used = 100
			}
		}
	}
	var cum uint64
	for li, groups := range p.levels {
		cum += load[li]
		st.loadCum[li] = cum
		if load[li] == 0 {
			continue
		}
		st.levels[li] = buildLevel(groups, avail[li], panicking[li])
	}
	return st
}

// buildLevel is the pick tables of one level: its locality groups' effective weights and, within
// each, the cumulative capacities of the hosts available (all of them when panicking).
func buildLevel(groups []planGroup, avail []bool, panicking bool) levelState {
	var lv levelState
	var cum uint64
	k := 0
	for _, g := range groups {
		var gs groupState
		var capSum uint64
		for i, up := range g.ups {
			a := avail[k]
			k++
			if !a && !panicking {
				continue
			}
			capSum += g.caps[i]
			gs.ups = append(gs.ups, up)
			gs.cum = append(gs.cum, capSum)
		}
		if capSum == 0 {
			continue
		}
		// In hundredths of a percent, so that one host available of many still weighs something.
		eff := g.weight * max(1, min(10000, 100*overprovisioning*uint64(len(gs.ups))/uint64(len(g.ups))))
		cum += eff
		lv.groupCum = append(lv.groupCum, cum)
		lv.groups = append(lv.groups, gs)
	}
	return lv
}

// pickAvoiding is pick for a retry or to steer around a failed gateway: the best level that has a
// host not rejected by avoid, among those the ones not ejected if any, one by capacity. It walks the
// plan (rare path). ok is false when avoid rejects every host.
func (p *policyPlan) pickAvoiding(d *outlierDetector, rnd randSource, avoid func(upstream) bool) (upstream, bool) {
	for pass := 0; pass < 2; pass++ {
		for _, groups := range p.levels {
			var total uint64
			for _, g := range groups {
				for i, up := range g.ups {
					if !avoid(up) && (pass == 1 || !p.isEjected(d, up)) {
						total += g.caps[i]
					}
				}
			}
			if total == 0 {
				continue
			}
			x := rnd(total)
			for _, g := range groups {
				for i, up := range g.ups {
					if avoid(up) || (pass == 0 && p.isEjected(d, up)) {
						continue
					}
					if x < g.caps[i] {
						return up, true
					}
					x -= g.caps[i]
				}
			}
		}
	}
	return upstream{}, false
}

// buildPlan compiles the selection for route r from src: the endpoints that the plain selection's
// filters keep (select.go: known workload, reachable, port defined, STRICT), that the subset
// matches and that have capacity, placed in levels and groups by the locality settings.
func buildPlan(snap *workload.Snapshot, src *workload.Workload, r policyRoute) *policyPlan {
	set := r.settings()
	p := &policyPlan{cluster: clusterKey{service: r.svc.Key()}, outlier: set.Outlier}
	if r.subset != nil {
		p.cluster.subset = r.subset.Name
	}
	if set.Outlier != nil {
		p.minHealth = set.Outlier.MinHealthPercent
	}
	svcTarget, ok := r.svc.Ports[r.port]
	if !ok {
		p.state.Store(&planState{})
		return p
	}
	lb := r.svc.LoadBalancing
	ranked := lb != nil && (lb.Mode == workload.LBModeFailover || lb.Mode == workload.LBModeStrict)
	var hosts []planHost
	for _, uid := range sortedEndpointUIDs(r.svc) {
		ep := r.svc.Endpoints[uid]
		wl, rank, ok := candidate(snap, src, r.svc, ep, r.port, svcTarget, lb, ranked)
		if !ok || wl.Capacity == 0 || (r.subset != nil && !r.subset.Matches(wl)) {
			continue
		}
		hosts = append(hosts, planHost{up: upstream{Workload: wl, Port: targetPort(ep, r.port, svcTarget)}, rank: rank})
	}
	p.hosts = len(hosts)
	loc := set.Locality
	switch {
	case loc != nil && !loc.Enabled:
		// No locality-aware balancing: one level, one group.
	case loc != nil && len(loc.Distribute) > 0:
		p.levels = distributeLevels(src, hosts, loc.Distribute)
		p.finish()
		return p
	case loc != nil && (len(loc.Failover) > 0 || len(loc.FailoverPriority) > 0):
		for i := range hosts {
			hosts[i].prio = failoverPriority(src, hosts[i].up.Workload, loc)
		}
	case loc == nil && ranked:
		// The workload-discovery routing preference, as levels: the higher rank first.
		for i := range hosts {
			hosts[i].prio = -hosts[i].rank
		}
	case loc != nil || set.Outlier != nil:
		// Locality failover is on by default (the mesh's localityLbSetting.enabled), and outlier
		// detection alone turns it on in Istio: the default region/zone/subzone chain.
		for i := range hosts {
			hosts[i].prio = localityFailover(src, hosts[i].up.Workload, nil)
		}
	}
	p.levels = priorityLevels(hosts)
	p.finish()
	return p
}

// planHost is an endpoint being placed in a plan.
type planHost struct {
	up   upstream
	rank int // the routing-preference rank (select.go)
	prio int // the priority, lower is better (compacted later)
}

// finish drops empty groups and levels and builds the tables once for a plan without outlier
// detection.
func (p *policyPlan) finish() {
	levels := p.levels[:0]
	for _, groups := range p.levels {
		kept := groups[:0]
		for _, g := range groups {
			if len(g.ups) > 0 && g.weight > 0 {
				kept = append(kept, g)
			}
		}
		if len(kept) > 0 {
			levels = append(levels, kept)
		}
	}
	p.levels = levels
	p.hosts = 0
	for _, groups := range p.levels {
		for _, g := range groups {
			p.hosts += len(g.ups)
		}
	}
	if p.outlier == nil {
		p.state.Store(p.buildState(nil, 0))
	}
}

// priorityLevels groups hosts by priority (ascending), and within a level by locality, each
// locality weighted by its hosts' capacities.
func priorityLevels(hosts []planHost) [][]planGroup {
	slices.SortStableFunc(hosts, func(a, b planHost) int { return a.prio - b.prio })
	var levels [][]planGroup
	for i := 0; i < len(hosts); {
		j := i
		for j < len(hosts) && hosts[j].prio == hosts[i].prio {
			j++
		}
		levels = append(levels, localityGroups(hosts[i:j]))
		i = j
	}
	return levels
}

// localityGroups splits hosts by locality (in order of first appearance), each group weighing the
// sum of its hosts' capacities.
func localityGroups(hosts []planHost) []planGroup {
	var groups []planGroup
	var locs []workload.Locality
	for _, h := range hosts {
		l := h.up.Workload.Locality
		gi := slices.Index(locs, l)
		if gi < 0 {
			gi = len(groups)
			locs = append(locs, l)
			groups = append(groups, planGroup{})
		}
		g := &groups[gi]
		c := uint64(h.up.Workload.Capacity)
		g.ups = append(g.ups, h.up)
		g.caps = append(g.caps, c)
		g.weight += c
	}
	return groups
}

// distributeLevels applies `distribute` (Istio's applyLocalityWeights): the first entry whose `from`
// matches the source; each `to` (most specific first) claims the locality groups it matches that no
// other claimed, and a claimed group weighs ceil(orig × to-weight / Σ orig of that to's groups),
// orig being the group's capacity. Unclaimed groups get no traffic at all. One level. With no
// matching entry, the groups keep their capacities as weights.
func distributeLevels(src *workload.Workload, hosts []planHost, dist []workload.LocalityDistribution) [][]planGroup {
	var entry *workload.LocalityDistribution
	for i := range dist {
		if localityMatch(src.Locality, dist[i].From) {
			entry = &dist[i]
			break
		}
	}
	groups := localityGroups(hosts)
	if entry == nil {
		return [][]planGroup{groups}
	}
	to := slices.Clone(entry.To)
	slices.SortStableFunc(to, func(a, b workload.LocalityWeight) int {
		return localitySpecificity(b.Locality) - localitySpecificity(a.Locality)
	})
	claimedBy := make([]int, len(groups))
	for i := range claimedBy {
		claimedBy[i] = -1
	}
	for ti, t := range to {
		for gi, g := range groups {
			if claimedBy[gi] < 0 && localityMatch(g.ups[0].Workload.Locality, t.Locality) {
				claimedBy[gi] = ti
			}
		}
	}
	sums := make([]uint64, len(to))
	for gi, g := range groups {
		if t := claimedBy[gi]; t >= 0 {
			sums[t] += g.weight
		}
	}
	for gi := range groups {
		t := claimedBy[gi]
		if t < 0 {
			groups[gi].weight = 0 // unclaimed: dropped by finish
			continue
		}
		w := uint64(to[t].Weight)
		groups[gi].weight = (groups[gi].weight*w + sums[t] - 1) / sums[t]
	}
	return [][]planGroup{groups}
}

// localityMatch is Istio's util.LocalityMatch: pattern "region/zone/subzone" where "*" matches
// anything and a missing or empty zone or subzone matches anything.
func localityMatch(l workload.Locality, pattern string) bool {
	region, rest, _ := strings.Cut(pattern, "/")
	zone, subzone, _ := strings.Cut(rest, "/")
	return (region == "*" || region == l.Region) &&
		(zone == "*" || zone == "" || zone == l.Zone) &&
		(subzone == "*" || subzone == "" || subzone == l.Subzone)
}

// localitySpecificity counts the segments of a locality pattern that are not wildcards.
func localitySpecificity(pattern string) int {
	n := 0
	for seg := range strings.SplitSeq(pattern, "/") {
		if seg != "" && seg != "*" {
			n++
		}
	}
	return n
}

// failoverPriority is the priority of wl from src under `failover` and `failoverPriority`, as Istio
// composes them: failoverPriority orders first, the locality chain (with failover's regions)
// within each of its levels.
func failoverPriority(src, wl *workload.Workload, loc *workload.LocalityPolicy) int {
	if len(loc.FailoverPriority) == 0 {
		return localityFailover(src, wl, loc.Failover)
	}
	fp := labelPriority(src, wl, loc.FailoverPriority)
	if len(loc.Failover) == 0 {
		return fp
	}
	return fp*5 + localityFailover(src, wl, loc.Failover)
}

// localityFailover is Istio's applyLocalityFailover priority: 0 same region, zone and subzone; 1
// same region and zone; 2 same region; 3 another region, except that when failover has entries
// from the source's region, regions they name are 3 and the others 4.
func localityFailover(src, wl *workload.Workload, failover []workload.LocalityFailover) int {
	s, l := src.Locality, wl.Locality
	switch {
	case l.Region == s.Region && l.Zone == s.Zone && l.Subzone == s.Subzone:
		return 0
	case l.Region == s.Region && l.Zone == s.Zone:
		return 1
	case l.Region == s.Region:
		return 2
	}
	fromHere := false
	for _, f := range failover {
		if f.From == s.Region {
			fromHere = true
			if f.To == l.Region {
				return 3
			}
		}
	}
	if fromHere {
		return 4
	}
	return 3
}

// labelPriority is Istio's failoverPriority level of wl for src: 0 when every label matches, else
// N − j at the first mismatch j. A "key=value" entry compares wl's label to the value instead of
// src's. When the first label is the network and it does not match, the others are still compared
// and N is added, so every endpoint of the source's network outranks every remote one.
func labelPriority(src, wl *workload.Workload, labels []string) int {
	n := len(labels)
	bonus := 0
	for j, entry := range labels {
		key, want, fixed := strings.Cut(entry, "=")
		got, ok := wl.Label(key)
		if !fixed {
			want, fixed = src.Label(key)
		}
		if fixed && ok && got == want {
			continue
		}
		if j == 0 && key == labelNetwork {
			bonus = n
			continue
		}
		return n - j + bonus
	}
	return bonus
}

const labelNetwork = "topology.istio.io/network"

// sortedEndpointUIDs returns the endpoint keys of svc in order, so that plans are deterministic.
func sortedEndpointUIDs(svc *workload.Service) []string {
	uids := make([]string, 0, len(svc.Endpoints))
	for uid := range svc.Endpoints {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	return uids
}

// policyKey identifies a plan within one snapshot: the route and what of the source the plan reads.
type policyKey struct {
	svc                                             *workload.Service
	port                                            uint16
	subset                                          *workload.Subset
	rule                                            *workload.DestinationPolicy
	network, region, zone, subzone, node, clusterID string
	// labels is the source itself when the plan compares labels only explicit labels answer.
	labels *workload.Workload
}

// policyCache memoizes plans for one snapshot, as selectionCache does candidate sets.
type policyCache struct {
	snap  *workload.Snapshot
	mu    sync.RWMutex
	plans map[policyKey]*policyPlan
}

type policyCaches struct{ cur atomic.Pointer[policyCache] }

var policyPlans policyCaches

func (c *policyCaches) get(snap *workload.Snapshot, src *workload.Workload, r policyRoute) *policyPlan {
	pc := c.cur.Load()
	if pc == nil || pc.snap != snap {
		fresh := &policyCache{snap: snap, plans: map[policyKey]*policyPlan{}}
		if c.cur.CompareAndSwap(pc, fresh) {
			pc = fresh
		} else if pc = c.cur.Load(); pc.snap != snap {
			pc = fresh
		}
	}
	k := policyKey{svc: r.svc, port: r.port, subset: r.subset, rule: r.rule, network: src.Network,
		region: src.Locality.Region, zone: src.Locality.Zone, subzone: src.Locality.Subzone, node: src.Node,
		clusterID: src.ClusterID}
	if readsExplicitLabels(src, r.settings().Locality) {
		k.labels = src
	}
	pc.mu.RLock()
	p, ok := pc.plans[k]
	pc.mu.RUnlock()
	if ok {
		return p
	}
	p = buildPlan(snap, src, r)
	pc.mu.Lock()
	if len(pc.plans) >= maxCachedSets {
		pc.plans = map[policyKey]*policyPlan{}
	}
	pc.plans[k] = p
	pc.mu.Unlock()
	return p
}

// readsExplicitLabels reports whether failoverPriority compares a source label beyond the topology
// the cache key holds (then the plan depends on the source workload itself).
func readsExplicitLabels(src *workload.Workload, loc *workload.LocalityPolicy) bool {
	if loc == nil {
		return false
	}
	for _, e := range loc.FailoverPriority {
		key, _, fixed := strings.Cut(e, "=")
		if !fixed && (len(src.Labels) > 0 || !topologyLabels[key]) {
			return true
		}
	}
	return false
}

// topologyLabels are the label keys Workload.Label answers from the fields a policyKey holds.
var topologyLabels = map[string]bool{
	"topology.kubernetes.io/region": true, "topology.kubernetes.io/zone": true, "topology.istio.io/subzone": true,
	"topology.istio.io/cluster": true, labelNetwork: true, "kubernetes.io/hostname": true,
}
