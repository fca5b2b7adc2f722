package workload

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var ip = netip.MustParseAddr

func pod(ns, name string, ips ...string) *Workload {
	w := &Workload{
		UID: "c1//Pod/" + ns + "/" + name, Name: name, Namespace: ns, Capacity: 1, Protocol: ProtocolHBONE,
		TrustDomain: DefaultTrustDomain, ServiceAccount: DefaultServiceAccount, ClusterID: DefaultClusterID,
	}
	for _, s := range ips {
		w.IPs = append(w.IPs, ip(s))
	}
	return w
}

func mustSnapshot(t testing.TB, ws []*Workload, ss []*Service, ps []*Policy) *Snapshot {
	t.Helper()
	s, err := NewSnapshot(ws, ss, ps)
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	return s
}

func uids(ws []*Workload) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.UID)
	}
	return out
}

func TestSnapshotWorkloadLookups(t *testing.T) {
	a := pod("ns", "a", "10.0.0.1", "fd00::1")
	a.Node, a.ServiceAccount = "node1", "sa-a"
	b := pod("ns", "b", "10.0.0.2")
	b.Node, b.Network = "node2", "net2"
	host := pod("ns", "host", "10.0.0.3")
	host.Node, host.NetworkMode = "node1", NetworkModeHostNetwork
	s := mustSnapshot(t, []*Workload{b, host, a}, nil, nil)

	if got := s.WorkloadByUID(a.UID); got != a {
		t.Errorf("WorkloadByUID(a) = %v", got)
	}
	if got := s.WorkloadByUID("nope"); got != nil {
		t.Errorf("WorkloadByUID(nope) = %v, want nil", got)
	}
	for _, tc := range []struct {
		network, ip string
		want        *Workload
	}{
		{"", "10.0.0.1", a},
		{"", "fd00::1", a},
		{"", "::ffff:10.0.0.1", a}, // IPv4-mapped lookups are unmapped
		{"net2", "10.0.0.2", b},
		{"", "10.0.0.2", nil}, // other network
		{"", "10.0.0.3", nil}, // HostNetwork: not indexed by IP
		{"", "10.0.0.9", nil},
	} {
		if got := s.WorkloadByAddr(tc.network, ip(tc.ip)); got != tc.want {
			t.Errorf("WorkloadByAddr(%q, %s) = %v, want %v", tc.network, tc.ip, got, tc.want)
		}
	}
	if got, want := uids(s.WorkloadsOnNode("node1")), []string{a.UID, host.UID}; !cmp.Equal(got, want) {
		t.Errorf("WorkloadsOnNode(node1) = %v, want %v", got, want)
	}
	if got := s.WorkloadsOnNode("node3"); len(got) != 0 {
		t.Errorf("WorkloadsOnNode(node3) = %v, want none", got)
	}
	if got, want := uids(s.Workloads()), []string{a.UID, b.UID, host.UID}; !cmp.Equal(got, want) {
		t.Errorf("Workloads() = %v, want sorted %v", got, want)
	}

	// FindWorkload by ZDS info; b has the default service account.
	for _, tc := range []struct {
		node, ns, name, sa string
		want               *Workload
	}{
		{"node1", "ns", "a", "sa-a", a},
		{"", "ns", "a", "sa-a", a},
		{"node2", "ns", "a", "sa-a", nil}, // wrong node
		{"node1", "ns", "a", "default", nil},
		{"node2", "ns", "b", "default", b},
		{"node2", "ns", "b", "", b}, // "" = default SA
		{"", "other", "b", "default", nil},
	} {
		if got := s.FindWorkload(tc.node, tc.ns, tc.name, tc.sa); got != tc.want {
			t.Errorf("FindWorkload(%q, %q, %q, %q) = %v, want %v", tc.node, tc.ns, tc.name, tc.sa, got, tc.want)
		}
	}
}

func TestSnapshotDefaultsApplied(t *testing.T) {
	in := &Workload{UID: "u", Name: "n", Namespace: "ns", IPs: []netip.Addr{ip("::ffff:10.1.1.1")}}
	s := mustSnapshot(t, []*Workload{in}, nil, nil)
	got := s.WorkloadByUID("u")
	if got.TrustDomain != DefaultTrustDomain || got.ServiceAccount != DefaultServiceAccount || got.ClusterID != DefaultClusterID {
		t.Errorf("defaults not applied: %+v", got)
	}
	if got.IPs[0] != ip("10.1.1.1") || in.IPs[0] != ip("::ffff:10.1.1.1") {
		t.Errorf("IPs: snapshot %v, input %v; want the snapshot's unmapped and the input untouched", got.IPs, in.IPs)
	}
	if in.TrustDomain != "" {
		t.Errorf("NewSnapshot modified its input: %+v", in)
	}
	if got, want := in.Identity(), "spiffe://cluster.local/ns/ns/sa/default"; got != want {
		t.Errorf("Identity() = %q, want %q", got, want)
	}
}

func TestSnapshotIPCollision(t *testing.T) {
	// Same IP: a pod beats a non-pod, HBONE beats TCP, then the smallest uid.
	se := &Workload{UID: "c1/networking.istio.io/ServiceEntry/ns/se", Name: "se", Namespace: "ns", Protocol: ProtocolHBONE, IPs: []netip.Addr{ip("10.0.0.1")}}
	tcpPod := pod("ns", "tcp", "10.0.0.1")
	tcpPod.Protocol = ProtocolTCP
	hbonePod := pod("ns", "zz-hbone", "10.0.0.1")
	hbonePod2 := pod("ns", "zz-hbone2", "10.0.0.1")
	for _, tc := range []struct {
		name string
		ws   []*Workload
		want string
	}{
		{"pod beats HBONE non-pod", []*Workload{se, tcpPod}, tcpPod.UID},
		{"HBONE pod beats TCP pod", []*Workload{tcpPod, hbonePod, se}, hbonePod.UID},
		{"ties: smallest uid", []*Workload{hbonePod2, hbonePod}, hbonePod.UID},
		{"non-pod HBONE beats non-pod TCP", []*Workload{
			{UID: "b", Name: "b", Namespace: "ns", IPs: []netip.Addr{ip("10.0.0.1")}}, se,
		}, se.UID},
	} {
		s := mustSnapshot(t, tc.ws, nil, nil)
		if got := s.WorkloadByAddr("", ip("10.0.0.1")); got == nil || got.UID != tc.want {
			t.Errorf("%s: WorkloadByAddr = %v, want %s", tc.name, got, tc.want)
		}
	}
}

func TestSnapshotServiceLookups(t *testing.T) {
	na := func(network, s string) NetworkAddress { return NetworkAddress{network, ip(s)} }
	a := &Service{Name: "a", Namespace: "ns1", Hostname: "a.example.com", VIPs: []NetworkAddress{na("", "10.96.0.1"), na("net2", "10.96.0.1")}}
	bShared := &Service{Name: "b", Namespace: "ns1", Hostname: "shared.example.com", VIPs: []NetworkAddress{na("", "10.96.0.9")}}
	cShared := &Service{Name: "c", Namespace: "ns0", Hostname: "shared.example.com", VIPs: []NetworkAddress{na("", "10.96.0.9")}}
	canon := &Service{Name: "d", Namespace: "ns9", Hostname: "z.example.com", Canonical: true, VIPs: []NetworkAddress{na("", "10.96.0.7")}}
	nonCanon := &Service{Name: "e", Namespace: "ns0", Hostname: "y.example.com", VIPs: []NetworkAddress{na("", "10.96.0.7")}}
	wide := &Service{Name: "f", Namespace: "ns", Hostname: "wide.example.com", CIDRVIPs: []NetworkPrefix{{"", netip.MustParsePrefix("10.200.0.0/16")}}}
	narrow := &Service{Name: "g", Namespace: "ns", Hostname: "narrow.example.com", CIDRVIPs: []NetworkPrefix{{"", netip.MustParsePrefix("10.200.1.0/24")}}}
	s := mustSnapshot(t, nil, []*Service{a, bShared, cShared, canon, nonCanon, wide, narrow}, nil)

	for _, tc := range []struct {
		network, ip string
		want        string // key, "" for nil
	}{
		{"", "10.96.0.1", "ns1/a.example.com"},
		{"net2", "10.96.0.1", "ns1/a.example.com"},
		{"net3", "10.96.0.1", ""},
		{"", "10.96.0.9", "ns0/shared.example.com"}, // no canonical: first by key
		{"", "10.96.0.7", "ns9/z.example.com"},      // canonical wins over an earlier key
		{"", "10.200.1.5", "ns/narrow.example.com"}, // longest CIDR VIP
		{"", "10.200.2.5", "ns/wide.example.com"},
		{"net2", "10.200.2.5", ""},
		{"", "10.96.0.2", ""},
	} {
		got := s.ServiceByVIP(tc.network, ip(tc.ip))
		gotKey := ""
		if got != nil {
			gotKey = got.Key()
		}
		if gotKey != tc.want {
			t.Errorf("ServiceByVIP(%q, %s) = %q, want %q", tc.network, tc.ip, gotKey, tc.want)
		}
	}
	if got := s.ServiceByHost("ns0", "shared.example.com"); got == nil || got.Name != "c" {
		t.Errorf("ServiceByHost(ns0, shared.example.com) = %v, want service c", got)
	}
	if got := s.ServiceByHost("ns2", "shared.example.com"); got != nil {
		t.Errorf("ServiceByHost(ns2, ...) = %v, want nil", got)
	}
	var got []string
	for _, svc := range s.Services() {
		got = append(got, svc.Key())
	}
	want := []string{"ns1/a.example.com", "ns/narrow.example.com", "ns0/shared.example.com", "ns1/shared.example.com",
		"ns/wide.example.com", "ns0/y.example.com", "ns9/z.example.com"}
	if !cmp.Equal(got, want) {
		t.Errorf("Services() order = %v, want %v (by hostname, then namespace)", got, want)
	}
}

func TestSnapshotEndpoints(t *testing.T) {
	healthy := pod("ns", "healthy", "10.0.0.1")
	healthy.Services = map[string]map[uint16]uint16{"ns/svc": {80: 8080}, "ns/all": {80: 8081}, "ns/missing": {1: 2}}
	sick := pod("ns", "sick", "10.0.0.2")
	sick.Status = StatusUnhealthy
	sick.Services = map[string]map[uint16]uint16{"ns/svc": {80: 8080}, "ns/all": {80: 8080}}
	// sick2 is also listed as the service's own endpoint (healthy there): the workload wins.
	sick2 := pod("ns", "sick2", "10.0.0.3")
	sick2.Status = StatusUnhealthy
	sick2.Services = map[string]map[uint16]uint16{"ns/svc": {80: 8080}}

	own := map[string]*Endpoint{
		"ext-ok":   {WorkloadUID: "ext-ok", Port: map[uint16]uint16{80: 9090}},
		"ext-sick": {WorkloadUID: "ext-sick", Status: StatusUnhealthy},
		sick2.UID:  {WorkloadUID: sick2.UID},
	}
	svc := &Service{Name: "svc", Namespace: "ns", Hostname: "svc", Ports: map[uint16]uint16{80: 8080}, Endpoints: own}
	all := &Service{Name: "all", Namespace: "ns", Hostname: "all", LoadBalancing: &LoadBalancing{HealthPolicy: HealthAllowAll},
		Endpoints: map[string]*Endpoint{"ext-sick": {WorkloadUID: "ext-sick", Status: StatusUnhealthy}}}
	s := mustSnapshot(t, []*Workload{healthy, sick, sick2}, []*Service{svc, all}, nil)

	got := s.ServiceByHost("ns", "svc").Endpoints
	want := map[string]*Endpoint{
		"ext-ok":    {WorkloadUID: "ext-ok", Port: map[uint16]uint16{80: 9090}},
		healthy.UID: {WorkloadUID: healthy.UID, Port: map[uint16]uint16{80: 8080}, Status: StatusHealthy},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("svc endpoints (OnlyHealthy) (-want +got):\n%s", diff)
	}
	got = s.ServiceByHost("ns", "all").Endpoints
	want = map[string]*Endpoint{
		"ext-sick":  {WorkloadUID: "ext-sick", Status: StatusUnhealthy},
		healthy.UID: {WorkloadUID: healthy.UID, Port: map[uint16]uint16{80: 8081}, Status: StatusHealthy},
		sick.UID:    {WorkloadUID: sick.UID, Port: map[uint16]uint16{80: 8080}, Status: StatusUnhealthy},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("all endpoints (AllowAll) (-want +got):\n%s", diff)
	}
	if len(svc.Endpoints) != 3 || svc.Endpoints["ext-sick"] == nil {
		t.Errorf("NewSnapshot modified the input service's endpoints: %v", svc.Endpoints)
	}
	// A workload naming a service that does not exist is kept; it joins a later snapshot.
	if s.WorkloadByUID(healthy.UID) == nil {
		t.Fatal("workload naming a missing service was dropped")
	}
	later := mustSnapshot(t, []*Workload{healthy}, []*Service{{Name: "m", Namespace: "ns", Hostname: "missing"}}, nil)
	if eps := later.ServiceByHost("ns", "missing").Endpoints; len(eps) != 1 || eps[healthy.UID] == nil {
		t.Errorf("later snapshot: endpoints of ns/missing = %v, want the healthy workload", eps)
	}
}

func TestSnapshotPolicies(t *testing.T) {
	global := &Policy{Name: "g", Namespace: "istio-system", Scope: PolicyScopeGlobal}
	nsPol := &Policy{Name: "n", Namespace: "ns", Scope: PolicyScopeNamespace}
	otherNS := &Policy{Name: "n", Namespace: "other", Scope: PolicyScopeNamespace}
	sel := &Policy{Name: "sel", Namespace: "ns", Scope: PolicyScopeWorkloadSelector, Action: PolicyActionDeny}
	unused := &Policy{Name: "unused", Namespace: "ns", Scope: PolicyScopeWorkloadSelector}
	s := mustSnapshot(t, nil, nil, []*Policy{sel, otherNS, unused, nsPol, global})

	keys := func(ps []*Policy) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Key())
		}
		return out
	}
	if got, want := keys(s.Policies()), []string{"istio-system/g", "ns/n", "ns/sel", "ns/unused", "other/n"}; !cmp.Equal(got, want) {
		t.Errorf("Policies() = %v, want %v", got, want)
	}
	w := pod("ns", "a")
	w.AuthorizationPolicies = []string{"ns/sel", "ns/missing", "ns/sel", "ns/n", "istio-system/g"}
	if got, want := keys(s.PoliciesFor(w)), []string{"ns/n", "istio-system/g", "ns/sel"}; !cmp.Equal(got, want) {
		t.Errorf("PoliciesFor = %v, want %v", got, want)
	}
	if got, want := keys(s.PoliciesFor(pod("third", "b"))), []string{"istio-system/g"}; !cmp.Equal(got, want) {
		t.Errorf("PoliciesFor(other namespace) = %v, want %v", got, want)
	}
	if s.PolicyByKey("ns/sel") != sel || s.PolicyByKey("ns/zzz") != nil {
		t.Error("PolicyByKey lookup failed")
	}
}

func TestNewSnapshotRejects(t *testing.T) {
	okSvc := func() *Service { return &Service{Name: "a", Namespace: "ns", Hostname: "h"} }
	for _, tc := range []struct {
		name string
		ws   []*Workload
		ss   []*Service
		ps   []*Policy
		want string
	}{
		{"nil workload", []*Workload{nil}, nil, nil, "workloads[0]: nil"},
		{"empty uid", []*Workload{{Name: "x"}}, nil, nil, "empty uid"},
		{"duplicate uid", []*Workload{pod("ns", "a"), pod("ns", "a")}, nil, nil, `workloads[1] (uid "c1//Pod/ns/a"): duplicate uid`},
		{"invalid IP", []*Workload{{UID: "u", IPs: []netip.Addr{{}}}}, nil, nil, "IPs[0]: invalid IP"},
		{"IP with zone", []*Workload{{UID: "u", IPs: []netip.Addr{ip("fe80::1%eth0")}}}, nil, nil, "invalid IP"},
		{"nil service", nil, []*Service{nil}, nil, "services[0]: nil"},
		{"no hostname", nil, []*Service{{Name: "a", Namespace: "ns"}}, nil, "hostname must be set"},
		{"duplicate service", nil, []*Service{okSvc(), okSvc()}, nil, `services[1] ("ns/h"): duplicate`},
		{"invalid VIP", nil, []*Service{{Namespace: "ns", Hostname: "h", VIPs: []NetworkAddress{{}}}}, nil, "vips[0]: invalid VIP"},
		{"invalid CIDR VIP", nil, []*Service{{Namespace: "ns", Hostname: "h", CIDRVIPs: []NetworkPrefix{{}}}}, nil, "cidrVips[0]: invalid CIDR"},
		{"nil endpoint", nil, []*Service{{Namespace: "ns", Hostname: "h", Endpoints: map[string]*Endpoint{"u": nil}}}, nil, `endpoints["u"]: nil`},
		{"nil policy", nil, nil, []*Policy{nil}, "policies[0]: nil"},
		{"policy without name", nil, nil, []*Policy{{Namespace: "ns"}}, "name is empty"},
		{"duplicate policy", nil, nil, []*Policy{{Name: "p", Namespace: "ns"}, {Name: "p", Namespace: "ns", Action: PolicyActionDeny}}, `policies[1] ("ns/p"): duplicate`},
		{"bad policy enum", nil, nil, []*Policy{{Name: "p", Namespace: "ns", Scope: 9}}, "invalid scope"},
		{"bad match CIDR", nil, nil, []*Policy{{Name: "p", Namespace: "ns", Rules: [][][]Match{{{{SourceIPs: []netip.Prefix{{}}}}}}}}, "rules[0][0][0]: invalid CIDR"},
	} {
		_, err := NewSnapshot(tc.ws, tc.ss, tc.ps)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewSnapshot error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestStringMatch(t *testing.T) {
	for _, tc := range []struct {
		m    StringMatch
		s    string
		want bool
	}{
		{StringMatch{StringMatchExact, "a"}, "a", true},
		{StringMatch{StringMatchExact, "a"}, "ab", false},
		{StringMatch{StringMatchPrefix, "ab"}, "abc", true},
		{StringMatch{StringMatchPrefix, "ab"}, "a", false},
		{StringMatch{StringMatchSuffix, "bc"}, "abc", true},
		{StringMatch{StringMatchSuffix, "bc"}, "c", false},
		{StringMatch{StringMatchPresence, ""}, "x", true},
		{StringMatch{StringMatchPresence, ""}, "", false},
		{StringMatch{Kind: 9}, "x", false},
	} {
		if got := tc.m.Matches(tc.s); got != tc.want {
			t.Errorf("%v.Matches(%q) = %v, want %v", tc.m, tc.s, got, tc.want)
		}
	}
}

func TestEnumSpellings(t *testing.T) {
	// The config_dump / local config spellings (ztunnel-behavior.md §5, §7.2) round-trip.
	check := func(names []string, str func(int) string, parse func(string) (int, error)) {
		t.Helper()
		for i, n := range names {
			if n == "" {
				continue
			}
			if got := str(i); got != n {
				t.Errorf("String(%d) = %q, want %q", i, got, n)
			}
			if got, err := parse(n); err != nil || got != i {
				t.Errorf("Parse(%q) = %d, %v; want %d", n, got, err, i)
			}
		}
		if _, err := parse("bogus"); err == nil {
			t.Errorf("Parse(bogus) succeeded")
		}
	}
	wrap := func(f func(string) (uint8, error)) func(string) (int, error) {
		return func(s string) (int, error) { v, err := f(s); return int(v), err }
	}
	check([]string{"TCP", "HBONE"}, func(i int) string { return Protocol(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParseProtocol(s); return uint8(v), err }))
	check([]string{"Healthy", "Unhealthy"}, func(i int) string { return Status(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParseStatus(s); return uint8(v), err }))
	check([]string{"Standard", "HostNetwork"}, func(i int) string { return NetworkMode(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParseNetworkMode(s); return uint8(v), err }))
	check([]string{"", "Region", "Zone", "Subzone", "Node", "Cluster", "Network"}, func(i int) string { return Scope(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParseScope(s); return uint8(v), err }))
	check([]string{"Standard", "Strict", "Failover", "Passthrough"}, func(i int) string { return LBMode(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParseLBMode(s); return uint8(v), err }))
	check([]string{"OnlyHealthy", "AllowAll"}, func(i int) string { return HealthPolicy(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParseHealthPolicy(s); return uint8(v), err }))
	check([]string{"Global", "Namespace", "WorkloadSelector"}, func(i int) string { return PolicyScope(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParsePolicyScope(s); return uint8(v), err }))
	check([]string{"Allow", "Deny"}, func(i int) string { return PolicyAction(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParsePolicyAction(s); return uint8(v), err }))
	check([]string{"Exact", "Prefix", "Suffix", "Presence"}, func(i int) string { return StringMatchKind(i).String() },
		wrap(func(s string) (uint8, error) { v, err := ParseStringMatchKind(s); return uint8(v), err }))
	if got := Scope(0).String(); got != "workload.Scope(0)" {
		t.Errorf("Scope(0).String() = %q", got)
	}
	if _, err := ParseScope(""); err == nil {
		t.Error(`ParseScope("") succeeded`)
	}
}

func TestAddressStrings(t *testing.T) {
	if got := (NetworkAddress{Addr: ip("10.0.0.1")}).String(); got != "/10.0.0.1" {
		t.Errorf("default-network address = %q, want /10.0.0.1", got)
	}
	if got := (NamespacedHostname{"ns", "h.example.com"}).String(); got != "ns/h.example.com" {
		t.Errorf("NamespacedHostname = %q", got)
	}
	for in, want := range map[string]string{
		"/10.0.0.1":         "/10.0.0.1",
		"net1/fd00::1":      "net1/fd00::1",
		"ns/waypoint.local": "ns/waypoint.local",
	} {
		g, err := ParseGatewayDestination(in)
		if err != nil || g.Destination() != want {
			t.Errorf("ParseGatewayDestination(%q) = %q, %v; want %q", in, g.Destination(), err, want)
		}
	}
	if g, _ := ParseGatewayDestination("ns/waypoint.local"); g.Hostname == nil || g.Address != nil {
		t.Errorf("ns/waypoint.local parsed as %+v, want a hostname", g)
	}
}

// BenchmarkNewSnapshot: 10 000 workloads (each in one of 1 000 services) and 1 000 services.
func BenchmarkNewSnapshot(b *testing.B) {
	const nw, ns = 10000, 1000
	var services []*Service
	for i := range ns {
		services = append(services, &Service{
			Name: fmt.Sprintf("svc%d", i), Namespace: "ns", Hostname: fmt.Sprintf("svc%d.ns.svc.cluster.local", i),
			VIPs:  []NetworkAddress{{Addr: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})}},
			Ports: map[uint16]uint16{80: 8080},
		})
	}
	var workloads []*Workload
	for i := range nw {
		w := pod("ns", fmt.Sprintf("pod%d", i))
		w.IPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}
		w.Node = fmt.Sprintf("node%d", i%50)
		w.TrustDomain, w.ServiceAccount, w.ClusterID = DefaultTrustDomain, "sa", DefaultClusterID
		w.Services = map[string]map[uint16]uint16{services[i%ns].Key(): {80: 8080}}
		workloads = append(workloads, w)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewSnapshot(workloads, services, nil); err != nil {
			b.Fatal(err)
		}
	}
}
