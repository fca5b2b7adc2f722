package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/workload"
)

// policyFixture is a service with endpoints and a traffic policy, in one snapshot.
type policyFixture struct {
	t    testing.TB
	snap *workload.Snapshot
	svc  *workload.Service
	d    *outlierDetector
}

func newPolicyFixture(t testing.TB, wls []*workload.Workload, svc *workload.Service, dests []*workload.DestinationPolicy,
	routes []*workload.RoutePolicy, more ...*workload.Service) *policyFixture {
	t.Helper()
	for _, w := range wls {
		svc.Endpoints[w.UID] = &workload.Endpoint{WorkloadUID: w.UID, Port: map[uint16]uint16{80: 8080}}
	}
	snap := mustSnapshot(t, wls, append([]*workload.Service{svc}, more...)...)
	ti, err := workload.NewTrafficIndex(dests, routes)
	if err != nil {
		t.Fatalf("NewTrafficIndex: %v", err)
	}
	snap = snap.WithTraffic(ti)
	return &policyFixture{t: t, snap: snap, svc: snap.ServiceByHostname(svc.Hostname), d: newOutlierDetector(time.Now)}
}

// plan returns the plan for a connection from src to port 80 of the fixture's service.
func (f *policyFixture) plan(src *workload.Workload) *policyPlan {
	f.t.Helper()
	r, ok, err := routePolicy(f.snap, f.svc, 80, defaultRand)
	if err != nil || !ok {
		f.t.Fatalf("routePolicy = %v, %v; want a policy route", ok, err)
	}
	return buildPlan(f.snap, src, r)
}

// eject ejects the named workloads from p's cluster (one failure each, under a policy that ejects
// on the first and does not cap ejections).
func (f *policyFixture) eject(p *policyPlan, names ...string) {
	f.t.Helper()
	pol := &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100, Interval: time.Hour, BaseEjectionTime: time.Hour}
	for _, name := range names {
		found := false
		for _, lv := range p.levels {
			for _, g := range lv {
				for _, up := range g.ups {
					if up.Workload.Name == name {
						f.d.report(p.cluster, pol, p.hosts, hostKey{uid: up.Workload.UID, port: up.Port}, outcomeConnectFailed, 0)
						found = true
					}
				}
			}
		}
		if !found {
			f.t.Fatalf("eject %s: not in the plan", name)
		}
	}
}

// shares computes the exact probability of each workload (by name) from the plan's pick tables.
func shares(p *policyPlan, d *outlierDetector) map[string]float64 {
	st := p.current(d)
	out := map[string]float64{}
	var prev uint64
	for li, lv := range st.levels {
		load := float64(st.loadCum[li]-prev) / 100
		prev = st.loadCum[li]
		if load == 0 {
			continue
		}
		var gprev uint64
		for gi, g := range lv.groups {
			gshare := float64(lv.groupCum[gi]-gprev) / float64(lv.groupCum[len(lv.groupCum)-1])
			gprev = lv.groupCum[gi]
			var hprev uint64
			for hi, up := range g.ups {
				out[up.Workload.Name] += load * gshare * float64(g.cum[hi]-hprev) / float64(g.cum[len(g.cum)-1])
				hprev = g.cum[hi]
			}
		}
	}
	return out
}

// levels lists the workload names of each level of p.
func levelNames(p *policyPlan) [][]string {
	var out [][]string
	for _, lv := range p.levels {
		var names []string
		for _, g := range lv {
			for _, up := range g.ups {
				names = append(names, up.Workload.Name)
			}
		}
		out = append(out, names)
	}
	return out
}

// loc parses "region/zone/subzone".
func loc(s string) workload.Locality {
	region, rest, _ := strings.Cut(s, "/")
	zone, subzone, _ := strings.Cut(rest, "/")
	return workload.Locality{Region: region, Zone: zone, Subzone: subzone}
}

func wl(name, locality string, ip string) *workload.Workload {
	return lbWorkload(name, "", loc(locality), ip)
}

func rule(host string, set workload.TrafficSettings, subsets ...*workload.Subset) *workload.DestinationPolicy {
	return &workload.DestinationPolicy{Name: "dr", Namespace: "default", Host: host, Policy: set, Subsets: subsets}
}

const svcHost = "svc.default.svc.cluster.local"

// approx compares shares to within 1e-9.
var approx = cmpopts.EquateApprox(0, 1e-9)

// Envoy's priority load with the overprovisioning factor 1.4 (multinetwork-and-policy.md §3.3):
// level 0 keeps everything down to 72% available, then spills: 71% → 99/1, 50% → 70/30, 25% → 35/65.
func TestPolicyPriorityLoad(t *testing.T) {
	for _, tc := range []struct {
		ejected   int // of the 100 hosts of level 0
		wantLevel [2]float64
	}{
		{0, [2]float64{1, 0}},
		{28, [2]float64{1, 0}},
		{29, [2]float64{0.99, 0.01}},
		{50, [2]float64{0.70, 0.30}},
		{75, [2]float64{0.35, 0.65}},
		{100, [2]float64{0, 1}},
	} {
		t.Run(strconv.Itoa(tc.ejected), func(t *testing.T) {
			var wls []*workload.Workload
			for i := range 100 {
				wls = append(wls, wl("near"+strconv.Itoa(i), "r1/z1/s1", netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}).String()))
			}
			wls = append(wls, wl("far", "r2/z1/s1", "10.0.1.1"))
			out := &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100}
			f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{
				rule(svcHost, workload.TrafficSettings{Outlier: out}),
			}, nil)
			src := wl("client", "r1/z1/s1", "10.9.9.9")
			p := f.plan(src)
			if got := len(p.levels); got != 2 {
				t.Fatalf("levels = %v; want near and far", levelNames(p))
			}
			var names []string
			for i := range tc.ejected {
				names = append(names, "near"+strconv.Itoa(i))
			}
			f.eject(p, names...)
			sh := shares(p, f.d)
			var near float64
			for name, s := range sh {
				if name != "far" {
					near += s
				}
			}
			if got := [2]float64{near, sh["far"]}; !cmp.Equal(got, tc.wantLevel, approx) {
				t.Errorf("load = %v; want %v", got, tc.wantLevel)
			}
			for i := range tc.ejected {
				if sh["near"+strconv.Itoa(i)] != 0 {
					t.Errorf("ejected near%d has share %v", i, sh["near"+strconv.Itoa(i)])
				}
			}
		})
	}
}

// S3 distribution: from hangzhou 90% to hangzhou, 10% to shanghai, whatever the endpoint counts;
// with half of hangzhou ejected its effective weight drops to 90 × 70% (≈ 86/14); with all of it
// ejected everything goes to shanghai. A locality no `to` names gets nothing.
func TestPolicyDistribute(t *testing.T) {
	wls := []*workload.Workload{
		wl("hz1", "cn-hangzhou/a/x", "10.0.0.1"), wl("hz2", "cn-hangzhou/b/x", "10.0.0.2"),
		wl("sh1", "cn-shanghai/a/x", "10.0.1.1"),
		wl("bj1", "cn-beijing/a/x", "10.0.2.1"),
	}
	dist := &workload.LocalityPolicy{Enabled: true, Distribute: []workload.LocalityDistribution{
		{From: "cn-shanghai/*", To: []workload.LocalityWeight{{Locality: "cn-shanghai/*", Weight: 100}}},
		{From: "cn-hangzhou/*", To: []workload.LocalityWeight{{Locality: "cn-hangzhou/*", Weight: 90}, {Locality: "cn-shanghai/*", Weight: 10}}},
	}}
	out := &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100}
	f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{
		rule(svcHost, workload.TrafficSettings{Outlier: out, Locality: dist}),
	}, nil)
	src := wl("client", "cn-hangzhou/a/x", "10.9.9.9")
	p := f.plan(src)
	want := map[string]float64{"hz1": 0.45, "hz2": 0.45, "sh1": 0.10}
	if got := shares(p, f.d); !cmp.Equal(got, want, approx) {
		t.Errorf("shares = %v; want %v", got, want)
	}
	samplePicks(t, p, f.d, want)

	f.eject(p, "hz1")
	// hz1 and hz2 are separate localities (zones a and b) of the same `to`: each claimed group
	// weighs ceil(1 × 90 / 2) = 45; hz1's group has nothing available.
	want = map[string]float64{"hz2": 45.0 / 55, "sh1": 10.0 / 55}
	if got := shares(p, f.d); !cmp.Equal(got, want, approx) {
		t.Errorf("hz1 ejected: shares = %v; want %v", got, want)
	}
	f.eject(p, "hz2")
	want = map[string]float64{"sh1": 1}
	if got := shares(p, f.d); !cmp.Equal(got, want, approx) {
		t.Errorf("hangzhou ejected: shares = %v; want %v", got, want)
	}

	// From shanghai only shanghai; from a locality no `from` matches, every locality by capacity.
	if got, want := shares(f.plan(wl("c2", "cn-shanghai/a/x", "10.9.9.8")), f.d), map[string]float64{"sh1": 1}; !cmp.Equal(got, want, approx) {
		t.Errorf("from shanghai: %v; want %v", got, want)
	}
	other := f.plan(wl("c3", "us-east/a/x", "10.9.9.7"))
	if got := len(levelNames(other)[0]); got != 4 {
		t.Errorf("from an unmatched locality: %v; want all four endpoints in one level", levelNames(other))
	}
}

// The availability scaling of one locality: two hosts in hangzhou (one locality), one ejected:
// 90 × min(100, 140 × 1/2) = 90 × 70 against 10 × 100 (the reference's "≈ 86/14").
func TestPolicyDistributeAvailability(t *testing.T) {
	wls := []*workload.Workload{
		wl("hz1", "cn-hangzhou/a/x", "10.0.0.1"), wl("hz2", "cn-hangzhou/a/x", "10.0.0.2"),
		wl("sh1", "cn-shanghai/a/x", "10.0.1.1"),
	}
	dist := &workload.LocalityPolicy{Enabled: true, Distribute: []workload.LocalityDistribution{
		{From: "cn-hangzhou", To: []workload.LocalityWeight{{Locality: "cn-hangzhou", Weight: 90}, {Locality: "cn-shanghai", Weight: 10}}},
	}}
	f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{
		rule(svcHost, workload.TrafficSettings{Outlier: &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100}, Locality: dist}),
	}, nil)
	p := f.plan(wl("client", "cn-hangzhou/a/x", "10.9.9.9"))
	f.eject(p, "hz1")
	hz := 90.0 * 70
	want := map[string]float64{"hz2": hz / (hz + 1000), "sh1": 1000 / (hz + 1000)}
	if got := shares(p, f.d); !cmp.Equal(got, want, approx) {
		t.Errorf("shares = %v; want %v", got, want)
	}
}

// Overlapping `to` entries claim most specific first: zone a of hangzhou 80, the rest of hangzhou 20.
func TestPolicyDistributeSpecificFirst(t *testing.T) {
	wls := []*workload.Workload{wl("a", "r/a/x", "10.0.0.1"), wl("b", "r/b/x", "10.0.0.2"), wl("c", "r/c/x", "10.0.0.3")}
	dist := &workload.LocalityPolicy{Enabled: true, Distribute: []workload.LocalityDistribution{
		{From: "*", To: []workload.LocalityWeight{{Locality: "r/*", Weight: 20}, {Locality: "r/a/*", Weight: 80}}},
	}}
	f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{
		rule(svcHost, workload.TrafficSettings{Locality: dist}),
	}, nil)
	want := map[string]float64{"a": 0.8, "b": 0.1, "c": 0.1}
	if got := shares(f.plan(wl("client", "r/a/x", "10.9.9.9")), f.d); !cmp.Equal(got, want, approx) {
		t.Errorf("shares = %v; want %v", got, want)
	}
}

// The locality failover chain: 0 same subzone, 1 same zone, 2 same region, 3 other regions; a
// failover entry from the source's region puts its target at 3 and the other regions at 4.
func TestPolicyLocalityFailover(t *testing.T) {
	wls := []*workload.Workload{
		wl("same", "r1/z1/s1", "10.0.0.1"), wl("zone", "r1/z1/s2", "10.0.0.2"), wl("region", "r1/z2/s3", "10.0.0.3"),
		wl("r2", "r2/z1/s1", "10.0.0.4"), wl("r3", "r3/z1/s1", "10.0.0.5"),
	}
	src := wl("client", "r1/z1/s1", "10.9.9.9")
	for _, tc := range []struct {
		name string
		set  workload.TrafficSettings
		want [][]string
	}{
		{"outlier detection alone", workload.TrafficSettings{Outlier: &workload.OutlierPolicy{Consecutive5xx: 1}},
			[][]string{{"same"}, {"zone"}, {"region"}, {"r2", "r3"}}},
		{"enabled only", workload.TrafficSettings{Locality: &workload.LocalityPolicy{Enabled: true}},
			[][]string{{"same"}, {"zone"}, {"region"}, {"r2", "r3"}}},
		{"failover r1 to r3", workload.TrafficSettings{Locality: &workload.LocalityPolicy{Enabled: true,
			Failover: []workload.LocalityFailover{{From: "r1", To: "r3"}, {From: "r2", To: "r1"}}}},
			[][]string{{"same"}, {"zone"}, {"region"}, {"r3"}, {"r2"}}},
		{"failover of another region only", workload.TrafficSettings{Locality: &workload.LocalityPolicy{Enabled: true,
			Failover: []workload.LocalityFailover{{From: "r2", To: "r3"}}}},
			[][]string{{"same"}, {"zone"}, {"region"}, {"r2", "r3"}}},
		{"disabled", workload.TrafficSettings{Outlier: &workload.OutlierPolicy{Consecutive5xx: 1}, Locality: &workload.LocalityPolicy{}},
			[][]string{{"same", "zone", "region", "r2", "r3"}}},
		{"nothing about locality, no outlier detection", workload.TrafficSettings{},
			[][]string{{"same", "zone", "region", "r2", "r3"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{rule(svcHost, tc.set)}, nil)
			got := levelNames(f.plan(src))
			if !cmp.Equal(got, tc.want, cmpopts.SortSlices(func(a, b string) bool { return a < b })) {
				t.Errorf("levels = %v; want %v", got, tc.want)
			}
		})
	}
}

// failoverPriority: level N − j at the first mismatching label j; "key=value" compares with the
// value; a mismatching network first still compares the rest, behind every same-network endpoint;
// with failover as well, failoverPriority orders first and the locality chain within.
func TestPolicyFailoverPriority(t *testing.T) {
	mk := func(name, network, cluster, locality, version string) *workload.Workload {
		w := lbWorkload(name, network, loc(locality), "10.0.0."+strconv.Itoa(len(name)*7%250+1))
		w.ClusterID, w.CanonicalRevision = cluster, version
		return w
	}
	c1v1 := mk("c1v1", "n1", "cluster1", "r1/z1/s1", "v1")
	c1v2 := mk("c1v2x", "n1", "cluster1", "r2/z1/s1", "v2")
	c2v1 := mk("c2v1xx", "n1", "cluster2", "r1/z1/s1", "v1")
	c3v1 := mk("c3v1xxx", "n2", "cluster3", "r1/z1/s1", "v1")
	c3v1.IPs = nil
	c3v1.NetworkGateway = &workload.GatewayAddress{Address: &workload.NetworkAddress{Network: "n2", Addr: netip.MustParseAddr("172.30.0.1")}}
	wls := []*workload.Workload{c1v1, c1v2, c2v1, c3v1}
	src := mk("client", "n1", "cluster1", "r1/z1/s1", "v1")
	for _, tc := range []struct {
		name string
		loc  *workload.LocalityPolicy
		want [][]string
	}{
		{"cluster", &workload.LocalityPolicy{Enabled: true, FailoverPriority: []string{"topology.istio.io/cluster"}},
			[][]string{{"c1v1", "c1v2x"}, {"c2v1xx", "c3v1xxx"}}},
		{"version then cluster", &workload.LocalityPolicy{Enabled: true, FailoverPriority: []string{"version", "topology.istio.io/cluster"}},
			[][]string{{"c1v1"}, {"c2v1xx", "c3v1xxx"}, {"c1v2x"}}},
		{"fixed values", &workload.LocalityPolicy{Enabled: true, FailoverPriority: []string{"version=v2", "topology.istio.io/cluster=cluster1"}},
			[][]string{{"c1v2x"}, {"c1v1", "c2v1xx", "c3v1xxx"}}},
		{"network first", &workload.LocalityPolicy{Enabled: true, FailoverPriority: []string{"topology.istio.io/network", "topology.istio.io/cluster"}},
			[][]string{{"c1v1", "c1v2x"}, {"c2v1xx"}, {"c3v1xxx"}}},
		{"with failover", &workload.LocalityPolicy{Enabled: true, FailoverPriority: []string{"topology.istio.io/cluster"},
			Failover: []workload.LocalityFailover{{From: "r1", To: "r2"}}},
			[][]string{{"c1v1"}, {"c1v2x"}, {"c2v1xx", "c3v1xxx"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{
				rule(svcHost, workload.TrafficSettings{Locality: tc.loc}),
			}, nil)
			got := levelNames(f.plan(src))
			if !cmp.Equal(got, tc.want, cmpopts.SortSlices(func(a, b string) bool { return a < b })) {
				t.Errorf("levels = %v; want %v", got, tc.want)
			}
		})
	}
}

// A rule with nothing about locality keeps the workload-discovery routing preference as levels
// (so failover still reaches the next rank when the best is ejected); STRICT still filters.
func TestPolicyKeepsRoutingPreference(t *testing.T) {
	wls := []*workload.Workload{wl("same", "r1/z1/s1", "10.0.0.1"), wl("zone", "r1/z1/s2", "10.0.0.2"), wl("far", "r2/z1/s1", "10.0.0.3")}
	src := wl("client", "r1/z1/s1", "10.9.9.9")
	set := workload.TrafficSettings{Outlier: &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100}}
	prefs := []workload.Scope{workload.ScopeRegion, workload.ScopeZone, workload.ScopeSubzone}
	f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeFailover, prefs), []*workload.DestinationPolicy{rule(svcHost, set)}, nil)
	if got, want := levelNames(f.plan(src)), [][]string{{"same"}, {"zone"}, {"far"}}; !cmp.Equal(got, want) {
		t.Errorf("failover: levels = %v; want %v", got, want)
	}
	f = newPolicyFixture(t, wls, lbService("svc", workload.LBModeStrict, prefs[:2]), []*workload.DestinationPolicy{rule(svcHost, set)}, nil)
	p := f.plan(src)
	if got, want := levelNames(p), [][]string{{"same", "zone"}}; !cmp.Equal(got, want) {
		t.Errorf("strict: levels = %v; want %v", got, want)
	}
	f.eject(p, "same", "zone")
	// Everything ejected: the first level whole, never the endpoint STRICT excludes.
	if got, want := shares(p, f.d), map[string]float64{"same": 0.5, "zone": 0.5}; !cmp.Equal(got, want, approx) {
		t.Errorf("strict, all ejected: %v; want %v", got, want)
	}
}

// The panic threshold (minHealthPercent): while the total health is under 100%, a level whose
// available share is under the threshold balances over all its hosts, ejected or not.
func TestPolicyPanicThreshold(t *testing.T) {
	wls := []*workload.Workload{
		wl("a1", "r1/z1/s1", "10.0.0.1"), wl("a2", "r1/z1/s1", "10.0.0.2"), wl("a3", "r1/z1/s1", "10.0.0.3"), wl("a4", "r1/z1/s1", "10.0.0.4"),
		wl("b1", "r2/z1/s1", "10.0.1.1"), wl("b2", "r2/z1/s1", "10.0.1.2"),
	}
	src := wl("client", "r1/z1/s1", "10.9.9.9")
	for _, tc := range []struct {
		minHealth uint32
		want      map[string]float64
	}{
		{0, map[string]float64{"a4": 1}},
		{50, map[string]float64{"a1": 0.25, "a2": 0.25, "a3": 0.25, "a4": 0.25}},
	} {
		set := workload.TrafficSettings{Outlier: &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100, MinHealthPercent: tc.minHealth}}
		f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{rule(svcHost, set)}, nil)
		p := f.plan(src)
		f.eject(p, "a1", "a2", "a3", "b1", "b2")
		if got := shares(p, f.d); !cmp.Equal(got, tc.want, approx) {
			t.Errorf("minHealthPercent %d: shares = %v; want %v", tc.minHealth, got, tc.want)
		}
	}
}

// Subsets by label (version maps to the canonical revision) and a VirtualService's weighted TCP
// route: 90/10 between v3 and v4, exactly, over every value of the random source.
func TestPolicyWeightedRouteToSubsets(t *testing.T) {
	mk := func(name, version, ip string) *workload.Workload {
		w := wl(name, "r/z/s", ip)
		w.CanonicalRevision = version
		return w
	}
	wls := []*workload.Workload{mk("v3a", "v3", "10.0.0.1"), mk("v3b", "v3", "10.0.0.2"), mk("v4a", "v4", "10.0.0.3")}
	dr := rule(svcHost, workload.TrafficSettings{},
		&workload.Subset{Name: "v3", Labels: map[string]string{"version": "v3"}},
		&workload.Subset{Name: "v4", Labels: map[string]string{"version": "v4"}})
	vs := &workload.RoutePolicy{Name: "vs", Namespace: "default", Hosts: []string{svcHost}, TCP: []*workload.TCPRoute{
		{Ports: []uint16{9999}, Destinations: []workload.RouteDestination{{Host: svcHost, Subset: "v4"}}},
		{Destinations: []workload.RouteDestination{{Host: svcHost, Subset: "v3", Weight: 90}, {Host: svcHost, Subset: "v4", Weight: 10}}},
	}}
	f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{dr}, []*workload.RoutePolicy{vs})
	count := map[string]int{}
	for x := range uint64(100) {
		r, ok, err := routePolicy(f.snap, f.svc, 80, func(n uint64) uint64 { return x % n })
		if err != nil || !ok {
			t.Fatalf("routePolicy: %v %v", ok, err)
		}
		count[r.subset.Name]++
	}
	if want := map[string]int{"v3": 90, "v4": 10}; !cmp.Equal(count, want) {
		t.Errorf("subsets over 100 draws = %v; want %v", count, want)
	}
	r, _, _ := routePolicy(f.snap, f.svc, 80, func(uint64) uint64 { return 0 })
	p := buildPlan(f.snap, wl("client", "r/z/s", "10.9.9.9"), r)
	if got, want := levelNames(p), [][]string{{"v3a", "v3b"}}; !cmp.Equal(got, want) {
		t.Errorf("subset v3 plan = %v; want %v", got, want)
	}
	if p.cluster != (clusterKey{service: "default/" + svcHost, subset: "v3"}) {
		t.Errorf("cluster = %+v", p.cluster)
	}
}

// Traffic policy that names no usable destination fails with an error naming what is missing.
func TestPolicyRouteErrors(t *testing.T) {
	wls := []*workload.Workload{wl("a", "r/z/s", "10.0.0.1")}
	vs := &workload.RoutePolicy{Name: "vs", Namespace: "default", Hosts: []string{svcHost}, TCP: []*workload.TCPRoute{
		{Destinations: []workload.RouteDestination{{Host: "gone.default.svc.cluster.local"}}},
	}}
	f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), nil, []*workload.RoutePolicy{vs})
	_, _, err := routePolicy(f.snap, f.svc, 80, defaultRand)
	if err == nil || !strings.Contains(err.Error(), `virtual service default/vs routes svc.default.svc.cluster.local to host "gone.default.svc.cluster.local", which is not a known service`) {
		t.Errorf("route to an unknown host: %v", err)
	}
	// No policy names the service: the plain selection.
	f = newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{rule("other.default.svc.cluster.local", workload.TrafficSettings{})}, nil)
	if _, ok, err := routePolicy(f.snap, f.svc, 80, defaultRand); ok || err != nil {
		t.Errorf("unnamed service: routed %v, %v", ok, err)
	}
}

// A retry goes to a host not tried yet, of the best level that has one, not ejected if possible.
func TestPolicyPickAvoiding(t *testing.T) {
	wls := []*workload.Workload{wl("a1", "r1/z1/s1", "10.0.0.1"), wl("a2", "r1/z1/s1", "10.0.0.2"), wl("b1", "r2/z1/s1", "10.0.1.1")}
	set := workload.TrafficSettings{Outlier: &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100}}
	f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{rule(svcHost, set)}, nil)
	p := f.plan(wl("client", "r1/z1/s1", "10.9.9.9"))
	avoid := func(names ...string) func(upstream) bool {
		return func(up upstream) bool {
			for _, n := range names {
				if up.Workload.Name == n {
					return true
				}
			}
			return false
		}
	}
	for x := range uint64(4) {
		rnd := func(n uint64) uint64 { return x % n }
		if up, ok := p.pickAvoiding(f.d, rnd, avoid("a1")); !ok || up.Workload.Name != "a2" {
			t.Errorf("a1 tried: %v; want a2 (same level)", up.Workload)
		}
		if up, ok := p.pickAvoiding(f.d, rnd, avoid("a1", "a2")); !ok || up.Workload.Name != "b1" {
			t.Errorf("a1, a2 tried: %v; want b1 (next level)", up.Workload)
		}
	}
	f.eject(p, "a2")
	if up, ok := p.pickAvoiding(f.d, defaultRand, avoid("a1")); !ok || up.Workload.Name != "b1" {
		t.Errorf("a1 tried, a2 ejected: %v; want b1", up.Workload)
	}
	if _, ok := p.pickAvoiding(f.d, defaultRand, avoid("a1", "a2", "b1")); ok {
		t.Error("every host tried: picked one")
	}
	f.eject(p, "b1")
	if up, ok := p.pickAvoiding(f.d, defaultRand, avoid("a1")); !ok || up.Workload.Name != "a2" {
		t.Errorf("a1 tried, the rest ejected: %v; want a2 (ejected, but untried)", up.Workload)
	}
}

// samplePicks checks that pick follows the tables: 200 000 picks within 1% of the exact shares.
func samplePicks(t *testing.T, p *policyPlan, d *outlierDetector, want map[string]float64) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 9))
	rnd := func(n uint64) uint64 { return r.Uint64N(n) }
	const n = 200000
	count := map[string]int{}
	for range n {
		up, ok := p.pick(d, rnd)
		if !ok {
			t.Fatal("no pick")
		}
		count[up.Workload.Name]++
	}
	for name, share := range want {
		if got := float64(count[name]) / n; math.Abs(got-share) > 0.01 {
			t.Errorf("%s picked %.4f of the time; want %.4f", name, got, share)
		}
	}
	for name := range count {
		if _, ok := want[name]; !ok {
			t.Errorf("%s picked; want never", name)
		}
	}
}

// What a failed connect means for the outlier detector and for a retry.
func TestClassifyConnect(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		err    error
		o      outcome
		status int
		retry  bool
	}{
		{"success", live, nil, outcomeConnectOK, 0, false},
		{"refused", live, fmt.Errorf("dial: %w", refused), outcomeConnectFailed, 0, true},
		{"timeout", live, fmt.Errorf("hbone connect: %w", context.DeadlineExceeded), outcomeConnectTimeout, 0, true},
		{"503", live, fmt.Errorf("x: %w", &hbone.StatusError{Code: 503}), outcomeStatus, 503, true},
		{"401 denied", live, fmt.Errorf("x: %w", &hbone.StatusError{Code: 401}), outcomeStatus, 401, false},
		{"reset before 200", live, &hbone.StreamError{Code: hbone.ErrCodeRefusedStream, Remote: true}, outcomeReset, 0, true},
		{"no certificate", live, fmt.Errorf("x: %w", &localError{errors.New("certificate")}), 0, 0, false},
		{"no address", live, &setupError{errors.New("no usable IP")}, 0, 0, true},
		{"client gone", gone, fmt.Errorf("dial: %w", refused), 0, 0, false},
		{"pool closed", live, fmt.Errorf("x: %w", hbone.ErrPoolClosed), 0, 0, false},
	} {
		o, status, retry := classifyConnect(tc.ctx, tc.err)
		if o != tc.o || status != tc.status || retry != tc.retry {
			t.Errorf("%s: (%v, %d, %v); want (%v, %d, %v)", tc.name, o, status, retry, tc.o, tc.status, tc.retry)
		}
	}
}

// A pick under traffic policy allocates nothing once the plan is built and the ejections have
// not changed.
func TestPolicyPickAllocs(t *testing.T) {
	f, src := bigPolicyFixture(t, 1000)
	r, _, _ := routePolicy(f.snap, f.svc, 80, defaultRand)
	p := policyPlans.get(f.snap, src, r)
	f.eject(p, "w0")
	p.pick(f.d, defaultRand)
	if n := testing.AllocsPerRun(1000, func() {
		r, _, _ := routePolicy(f.snap, f.svc, 80, defaultRand)
		if _, ok := policyPlans.get(f.snap, src, r).pick(f.d, defaultRand); !ok {
			t.Fatal("no pick")
		}
	}); n != 0 {
		t.Errorf("%v allocations per pick; want 0", n)
	}
}

// bigPolicyFixture is n endpoints over 4 zones and 16 subzones of one region, with failover by
// zone and outlier detection.
func bigPolicyFixture(t testing.TB, n int) (*policyFixture, *workload.Workload) {
	var wls []*workload.Workload
	for i := range n {
		l := workload.Locality{Region: "r", Zone: "z" + strconv.Itoa(i%4), Subzone: "s" + strconv.Itoa(i%16)}
		wls = append(wls, lbWorkload("w"+strconv.Itoa(i), "", l, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()))
	}
	svc := lbService("svc", workload.LBModeStandard, nil)
	set := workload.TrafficSettings{
		Outlier:  &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100},
		Locality: &workload.LocalityPolicy{Enabled: true, FailoverPriority: []string{"topology.kubernetes.io/region", "topology.kubernetes.io/zone"}},
	}
	f := newPolicyFixture(t, wls, svc, []*workload.DestinationPolicy{rule(svcHost, set)}, nil)
	return f, lbWorkload("src", "", workload.Locality{Region: "r", Zone: "z1", Subzone: "s5"}, "10.255.0.1")
}

// When the total health is under 100%, the loads are health × 100 / NTH, rounded down, and what the
// rounding leaves goes to the first level with health: 1 of 4 available (35) and 1 of 3 (46) make
// NTH 81, loads 43 + 56 = 99, and level 0 gets the last percent.
func TestPolicyPriorityLoadRounding(t *testing.T) {
	wls := []*workload.Workload{
		wl("a1", "r1/z1/s1", "10.0.0.1"), wl("a2", "r1/z1/s1", "10.0.0.2"), wl("a3", "r1/z1/s1", "10.0.0.3"), wl("a4", "r1/z1/s1", "10.0.0.4"),
		wl("b1", "r2/z1/s1", "10.0.1.1"), wl("b2", "r2/z1/s1", "10.0.1.2"), wl("b3", "r2/z1/s1", "10.0.1.3"),
	}
	set := workload.TrafficSettings{Outlier: &workload.OutlierPolicy{Consecutive5xx: 1, MaxEjectionPercent: 100}}
	f := newPolicyFixture(t, wls, lbService("svc", workload.LBModeStandard, nil), []*workload.DestinationPolicy{rule(svcHost, set)}, nil)
	p := f.plan(wl("client", "r1/z1/s1", "10.9.9.9"))
	f.eject(p, "a1", "a2", "a3", "b1", "b2")
	if got, want := shares(p, f.d), map[string]float64{"a4": 0.44, "b3": 0.56}; !cmp.Equal(got, want, approx) {
		t.Errorf("shares = %v; want %v", got, want)
	}
}

// BenchmarkSelectPolicy is BenchmarkSelect under a DestinationRule (failoverPriority by region and
// zone, outlier detection with one host ejected): the route lookup, the plan from the cache and
// the pick.
func BenchmarkSelectPolicy(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			f, src := bigPolicyFixture(b, n)
			r0, _, _ := routePolicy(f.snap, f.svc, 80, defaultRand)
			f.eject(policyPlans.get(f.snap, src, r0), "w1")
			r := rand.New(rand.NewPCG(1, 2))
			rnd := func(n uint64) uint64 { return r.Uint64N(n) }
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rt, _, _ := routePolicy(f.snap, f.svc, 80, rnd)
				if _, ok := policyPlans.get(f.snap, src, rt).pick(f.d, rnd); !ok {
					b.Fatal("no endpoint")
				}
			}
		})
	}
}
