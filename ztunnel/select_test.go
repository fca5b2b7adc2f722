package ztunnel

import (
	"math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ztunnel-go/ztunnel/workload"
)

// lbWorkload builds a test workload; the uid is derived from the name.
func lbWorkload(name, network string, loc workload.Locality, ips ...string) *workload.Workload {
	w := &workload.Workload{
		UID:            "cluster1//v1/Pod/default/" + name,
		Name:           name,
		Namespace:      "default",
		TrustDomain:    "cluster.local",
		ServiceAccount: "default",
		ClusterID:      "cluster1",
		Network:        network,
		Locality:       loc,
		Capacity:       1,
		Protocol:       workload.ProtocolHBONE,
	}
	for _, ip := range ips {
		w.IPs = append(w.IPs, netip.MustParseAddr(ip))
	}
	return w
}

func lbService(name string, mode workload.LBMode, prefs []workload.Scope, uids ...string) *workload.Service {
	s := &workload.Service{
		Name:      name,
		Namespace: "default",
		Hostname:  name + ".default.svc.cluster.local",
		Ports:     map[uint16]uint16{80: 80},
		Endpoints: map[string]*workload.Endpoint{},
	}
	if mode != workload.LBModeStandard || prefs != nil {
		s.LoadBalancing = &workload.LoadBalancing{RoutingPreference: prefs, Mode: mode}
	}
	for _, uid := range uids {
		s.Endpoints[uid] = &workload.Endpoint{WorkloadUID: uid, Port: map[uint16]uint16{80: 80}}
	}
	return s
}

// picks runs selection n times and returns the set of chosen workload names (sorted).
func picks(t *testing.T, snap *workload.Snapshot, src *workload.Workload, svc *workload.Service, port uint16, n int) []string {
	t.Helper()
	seen := map[string]bool{}
	for range n {
		up, ok := selectEndpoint(snap, src, svc, port, defaultRand)
		if ok {
			seen[up.Workload.Name] = true
		}
	}
	out := []string{}
	for name := range seen {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestSelectReferenceTable ports the expectations of the reference's test_load_balance.
func TestSelectReferenceTable(t *testing.T) {
	regZone := workload.Locality{Region: "reg", Zone: "zone"}
	wlNoLocality := lbWorkload("wl_no_locality", "network", workload.Locality{}, "192.168.0.1")
	wlMatch := lbWorkload("wl_match", "network", regZone, "192.168.0.2")
	wlAlmost := lbWorkload("wl_almost", "network", workload.Locality{Region: "reg", Zone: "not-zone"}, "192.168.0.3")
	wlOther := lbWorkload("wl_other", "other", regZone, "192.168.0.5")
	wlEmptyIP := lbWorkload("wl_empty_ip", "network", regZone)

	prefs := []workload.Scope{workload.ScopeNetwork, workload.ScopeRegion, workload.ScopeZone}
	uids := []string{
		"cluster1//v1/Pod/default/ep_almost", // no such workload
		wlMatch.UID, wlAlmost.UID, wlNoLocality.UID, wlOther.UID, wlEmptyIP.UID,
	}
	strict := lbService("strict", workload.LBModeStrict, prefs, uids...)
	failover := lbService("failover", workload.LBModeFailover, prefs, uids...)
	snap := mustSnapshot(t, []*workload.Workload{wlNoLocality, wlMatch, wlAlmost, wlOther, wlEmptyIP}, strict, failover)
	strict = snap.ServiceByHost("default", strict.Hostname)
	failover = snap.ServiceByHost("default", failover.Hostname)

	src := func(network string, loc workload.Locality) *workload.Workload {
		return lbWorkload("src", network, loc, "10.0.0.1")
	}
	tests := []struct {
		name string
		src  *workload.Workload
		svc  *workload.Service
		want []string
	}{
		{"strict no match should not select", src("", workload.Locality{}), strict, []string{}},
		{"strict match", wlMatch, strict, []string{"wl_match"}},
		{"failover no match can select any endpoint",
			src("no-match", workload.Locality{Region: "no-match", Zone: "no-match"}), failover,
			[]string{"wl_almost", "wl_match", "wl_no_locality", "wl_other"}},
		{"failover matches network+region+zone", src("network", regZone), failover, []string{"wl_match"}},
		{"failover matches network+region", src("network", workload.Locality{Region: "reg"}), failover,
			[]string{"wl_almost", "wl_match"}},
		{"failover matches network", src("network", workload.Locality{Region: "no-match", Zone: "no-match"}), failover,
			[]string{"wl_almost", "wl_match", "wl_no_locality"}},
		{"failover matches region+zone", src("no-match", regZone), failover, []string{"wl_match", "wl_other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := picks(t, snap, tt.src, tt.svc, 80, max(1, len(tt.want)*40))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("selected workloads (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("failover never selects missing ip", func(t *testing.T) {
		for _, name := range picks(t, snap, src("", workload.Locality{}), failover, 80, 200) {
			if name == "wl_empty_ip" {
				t.Fatal("selected a workload without addresses and without a network gateway")
			}
		}
	})
}

// TestSelectS1 covers scenario S1 of SCENARIOS.md: locality failover on one network.
func TestSelectS1(t *testing.T) {
	loc := func(zone, subzone string) workload.Locality {
		return workload.Locality{Region: "region", Zone: zone, Subzone: subzone}
	}
	w1 := lbWorkload("hello-w1", "", loc("zone1", "subzone1"), "10.40.1.2")
	w1.Node = "worker1"
	w2 := lbWorkload("hello-w2", "", loc("zone1", "subzone2"), "10.40.2.2")
	w2.Node = "worker2"
	w3 := lbWorkload("hello-w3", "", loc("zone2", "subzone3"), "10.40.3.2")
	w3.Node = "worker3"
	w3moved := lbWorkload("hello-w3b", "", loc("zone1", "subzone2"), "10.40.3.3")
	w3moved.Node = "worker3"
	client := lbWorkload("sleep", "", loc("zone1", "subzone1"), "10.40.1.9")
	client.Node = "worker1"

	failoverPrefs := []workload.Scope{workload.ScopeNetwork, workload.ScopeRegion, workload.ScopeZone, workload.ScopeSubzone}
	nodePrefs := []workload.Scope{workload.ScopeNode}
	build := func(wls ...*workload.Workload) (*workload.Snapshot, *workload.Service, *workload.Service) {
		var uids []string
		for _, w := range wls {
			uids = append(uids, w.UID)
		}
		hello := lbService("helloworld", workload.LBModeFailover, failoverPrefs, uids...)
		local := lbService("helloworld-local", workload.LBModeStrict, nodePrefs, uids...)
		snap := mustSnapshot(t, append(wls, client), hello, local)
		return snap, snap.ServiceByHost("default", hello.Hostname), snap.ServiceByHost("default", local.Hostname)
	}

	snap, hello, local := build(w1, w2, w3)
	if got := picks(t, snap, client, hello, 80, 100); !cmp.Equal(got, []string{"hello-w1"}) {
		t.Errorf("all replicas: got %v, want only hello-w1 (same subzone)", got)
	}
	if got := picks(t, snap, client, local, 80, 100); !cmp.Equal(got, []string{"hello-w1"}) {
		t.Errorf("strict [NODE]: got %v, want only the replica on worker1", got)
	}

	snap, hello, local = build(w2, w3)
	if got := picks(t, snap, client, hello, 80, 100); !cmp.Equal(got, []string{"hello-w2"}) {
		t.Errorf("worker1 replica deleted: got %v, want only hello-w2 (same zone)", got)
	}
	if got := picks(t, snap, client, local, 80, 50); len(got) != 0 {
		t.Errorf("strict [NODE] with no replica on the node: got %v, want no endpoint", got)
	}

	snap, hello, _ = build(w2, w3moved)
	if got := picks(t, snap, client, hello, 80, 200); !cmp.Equal(got, []string{"hello-w2", "hello-w3b"}) {
		t.Errorf("worker3 moved to zone1/subzone2: got %v, want both subzone2 replicas", got)
	}
}

func TestSelectPortsAndCapacity(t *testing.T) {
	a := lbWorkload("a", "", workload.Locality{}, "10.0.0.1")
	b := lbWorkload("b", "", workload.Locality{}, "10.0.0.2")
	b.Capacity = 3
	zero := lbWorkload("zero", "", workload.Locality{}, "10.0.0.3")
	zero.Capacity = 0
	svc := lbService("svc", workload.LBModeStandard, nil, a.UID, b.UID, zero.UID)
	svc.Ports = map[uint16]uint16{80: 8080, 90: 0}
	svc.Endpoints[a.UID].Port = map[uint16]uint16{90: 9090}
	svc.Endpoints[b.UID].Port = nil
	svc.Endpoints[zero.UID].Port = nil
	snap := mustSnapshot(t, []*workload.Workload{a, b, zero}, svc)
	svc = snap.ServiceByHost("default", svc.Hostname)
	src := lbWorkload("src", "", workload.Locality{}, "10.0.0.9")

	if _, ok := selectEndpoint(snap, src, svc, 81, defaultRand); ok {
		t.Error("port 81 is not on the service but an endpoint was selected")
	}
	// Named target port (0): only endpoints that map the service port qualify, and their mapping is used.
	for range 50 {
		up, ok := selectEndpoint(snap, src, svc, 90, defaultRand)
		if !ok || up.Workload.Name != "a" || up.Port != 9090 {
			t.Fatalf("named port: got %+v %v, want a:9090", up, ok)
		}
	}
	// Capacity weighting: b (3) must get about three quarters, zero (0) nothing.
	const n = 40000
	count := map[string]int{}
	for range n {
		up, ok := selectEndpoint(snap, src, svc, 80, defaultRand)
		if !ok {
			t.Fatal("no endpoint selected")
		}
		if up.Port != 8080 {
			t.Fatalf("target port = %d, want the service target port 8080", up.Port)
		}
		count[up.Workload.Name]++
	}
	if count["zero"] != 0 {
		t.Errorf("a zero-capacity endpoint was selected %d times", count["zero"])
	}
	if share := float64(count["b"]) / n; share < 0.72 || share > 0.78 {
		t.Errorf("capacity 3 vs 1: share of b = %.3f, want about 0.75", share)
	}
	// Deterministic walk: with a source that always returns the last unit, the pick is still valid.
	last := func(n uint64) uint64 { return n - 1 }
	if up, ok := selectEndpoint(snap, src, svc, 80, last); !ok || up.Workload.Name == "zero" {
		t.Errorf("last-unit pick: got %+v %v", up, ok)
	}
}

func TestSelectNetworkGatewayOnly(t *testing.T) {
	remote := lbWorkload("remote", "net2", workload.Locality{}) // no IPs
	remote.NetworkGateway = &workload.GatewayAddress{
		Address:       &workload.NetworkAddress{Network: "net2", Addr: netip.MustParseAddr("172.16.0.1")},
		HBONEMTLSPort: 15008,
	}
	local := lbWorkload("local", "net1", workload.Locality{}) // no IPs, same network as the source
	local.NetworkGateway = remote.NetworkGateway
	svc := lbService("svc", workload.LBModeStandard, nil, remote.UID, local.UID)
	snap := mustSnapshot(t, []*workload.Workload{remote, local}, svc)
	svc = snap.ServiceByHost("default", svc.Hostname)
	src := lbWorkload("src", "net1", workload.Locality{}, "10.0.0.9")
	if got := picks(t, snap, src, svc, 80, 50); !cmp.Equal(got, []string{"remote"}) {
		t.Errorf("got %v, want only the other-network workload reachable through its gateway", got)
	}
}

func mustSnapshot(t testing.TB, wls []*workload.Workload, svcs ...*workload.Service) *workload.Snapshot {
	t.Helper()
	snap, err := workload.NewSnapshot(wls, svcs, nil)
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	return snap
}

func BenchmarkSelect(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			prefs := []workload.Scope{workload.ScopeNetwork, workload.ScopeRegion, workload.ScopeZone, workload.ScopeSubzone}
			var wls []*workload.Workload
			var uids []string
			for i := range n {
				loc := workload.Locality{Region: "r", Zone: "z" + strconv.Itoa(i%4), Subzone: "s" + strconv.Itoa(i%16)}
				w := lbWorkload("w"+strconv.Itoa(i), "", loc, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String())
				wls = append(wls, w)
				uids = append(uids, w.UID)
			}
			svc := lbService("svc", workload.LBModeFailover, prefs, uids...)
			snap := mustSnapshot(b, wls, svc)
			svc = snap.ServiceByHost("default", svc.Hostname)
			src := lbWorkload("src", "", workload.Locality{Region: "r", Zone: "z1", Subzone: "s5"}, "10.255.0.1")
			r := rand.New(rand.NewPCG(1, 2))
			rnd := func(n uint64) uint64 { return r.Uint64N(n) }
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, ok := selectEndpoint(snap, src, svc, 80, rnd); !ok {
					b.Fatal("no endpoint")
				}
			}
		})
	}
}

// BenchmarkSelectBuild measures the first pick after a config change: building the candidate
// set of a service (later picks reuse it).
func BenchmarkSelectBuild(b *testing.B) {
	prefs := []workload.Scope{workload.ScopeNetwork, workload.ScopeRegion, workload.ScopeZone, workload.ScopeSubzone}
	var wls []*workload.Workload
	var uids []string
	for i := range 10000 {
		loc := workload.Locality{Region: "r", Zone: "z" + strconv.Itoa(i%4), Subzone: "s" + strconv.Itoa(i%16)}
		w := lbWorkload("w"+strconv.Itoa(i), "", loc, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String())
		wls = append(wls, w)
		uids = append(uids, w.UID)
	}
	svc := lbService("svc", workload.LBModeFailover, prefs, uids...)
	snap := mustSnapshot(b, wls, svc)
	svc = snap.ServiceByHost("default", svc.Hostname)
	src := lbWorkload("src", "", workload.Locality{Region: "r", Zone: "z1", Subzone: "s5"}, "10.255.0.1")
	b.ReportAllocs()
	for b.Loop() {
		if cs := buildCandidates(snap, src, svc, 80); cs.total == 0 {
			b.Fatal("no candidates")
		}
	}
}
