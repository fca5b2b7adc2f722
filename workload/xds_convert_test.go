package workload

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

func u32(v uint32) *uint32 { return &v }

func fullWorkloadProto() *workloadapi.Workload {
	return &workloadapi.Workload{
		Uid: "c1//v1/Pod/ns1/p1", Name: "p1", Namespace: "ns1",
		Addresses: [][]byte{ip4("10.0.0.1"), netip.MustParseAddr("fd00::1").AsSlice(), netip.MustParseAddr("::ffff:10.0.0.2").AsSlice()},
		Hostname:  "p1.example", Network: "net1", TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
		TrustDomain: "td.example", ServiceAccount: "sa1",
		Waypoint: &workloadapi.GatewayAddress{
			Destination:   &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: "ns1", Hostname: "wp.ns1.svc"}},
			HboneMtlsPort: 15008,
		},
		NetworkGateway: &workloadapi.GatewayAddress{
			Destination:   &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Network: "net2", Address: ip4("192.0.2.1")}},
			HboneMtlsPort: 15009,
		},
		Node: "node1", CanonicalName: "app", CanonicalRevision: "v1",
		WorkloadType: workloadapi.WorkloadType_POD, WorkloadName: "app-v1", NativeTunnel: true,
		ApplicationTunnel: &workloadapi.ApplicationTunnel{Protocol: workloadapi.ApplicationTunnel_PROXY, Port: 15088},
		Services: map[string]*workloadapi.PortList{
			"ns1/svc.ns1.svc": {Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 443}}},
			"ns1/empty.svc":   nil,
		},
		AuthorizationPolicies: []string{"ns1/p"},
		Status:                workloadapi.WorkloadStatus_UNHEALTHY,
		ClusterId:             "cluster9",
		Locality:              &workloadapi.Locality{Region: "r", Zone: "z", Subzone: "s"},
		NetworkMode:           workloadapi.NetworkMode_HOST_NETWORK,
		Capacity:              wrapperspb.UInt32(0),
	}
}

func TestConvertWorkload(t *testing.T) {
	got, err := convertWorkload(fullWorkloadProto(), newInterner())
	if err != nil {
		t.Fatal(err)
	}
	want := &Workload{
		UID: "c1//v1/Pod/ns1/p1", Name: "p1", Namespace: "ns1", TrustDomain: "td.example", ServiceAccount: "sa1",
		Network: "net1", Node: "node1", ClusterID: "cluster9", Hostname: "p1.example",
		WorkloadName: "app-v1", WorkloadType: "pod", CanonicalName: "app", CanonicalRevision: "v1",
		IPs:      []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.2")},
		Protocol: ProtocolHBONE, Status: StatusUnhealthy, NetworkMode: NetworkModeHostNetwork,
		Locality: Locality{"r", "z", "s"}, Capacity: 0,
		Waypoint:              &GatewayAddress{Hostname: &NamespacedHostname{"ns1", "wp.ns1.svc"}, HBONEMTLSPort: 15008},
		NetworkGateway:        &GatewayAddress{Address: &NetworkAddress{"net2", netip.MustParseAddr("192.0.2.1")}, HBONEMTLSPort: 15009},
		NativeTunnel:          true,
		ApplicationTunnel:     &ApplicationTunnel{Protocol: "PROXY", Port: 15088},
		AuthorizationPolicies: []string{"ns1/p"},
		Services:              map[string]map[uint16]uint16{"ns1/svc.ns1.svc": {80: 8080, 443: 0}, "ns1/empty.svc": {}},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("convertWorkload (-want +got):\n%s", diff)
	}
}

func TestConvertWorkloadDefaults(t *testing.T) {
	got, err := convertWorkload(&workloadapi.Workload{Uid: "u", Namespace: "ns", WorkloadType: 42}, newInterner())
	if err != nil {
		t.Fatal(err)
	}
	want := &Workload{UID: "u", Namespace: "ns", TrustDomain: "cluster.local", ServiceAccount: "default",
		ClusterID: "Kubernetes", Capacity: 1, WorkloadType: "deployment"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("convertWorkload defaults (-want +got):\n%s", diff)
	}
	if got.Identity() != "spiffe://cluster.local/ns/ns/sa/default" {
		t.Errorf("Identity = %s", got.Identity())
	}
}

func TestConvertService(t *testing.T) {
	x := &workloadapi.Service{
		Name: "svc", Namespace: "ns1", Hostname: "svc.ns1.svc",
		Addresses: []*workloadapi.NetworkAddress{
			{Address: ip4("10.96.0.1")},
			{Network: "n2", Address: ip4("10.96.0.2"), Length: u32(32)},
			{Address: ip4("10.97.0.0"), Length: u32(16)},
			{Address: netip.MustParseAddr("fd00::").AsSlice(), Length: u32(64)},
		},
		Ports:           []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080, AppProtocol: workloadapi.AppProtocol_HTTP11}, {ServicePort: 90}},
		SubjectAltNames: []string{"spiffe://td/ns/ns1/sa/svc"},
		Waypoint:        &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: ip4("10.0.0.9")}}, HboneMtlsPort: 15008},
		LoadBalancing: &workloadapi.LoadBalancing{
			RoutingPreference: []workloadapi.LoadBalancing_Scope{workloadapi.LoadBalancing_NETWORK, workloadapi.LoadBalancing_REGION, workloadapi.LoadBalancing_NODE},
			Mode:              workloadapi.LoadBalancing_FAILOVER, HealthPolicy: workloadapi.LoadBalancing_ALLOW_ALL,
		},
		IpFamilies: workloadapi.IPFamilies_DUAL, Canonical: true,
		WeightedWaypoints: []*workloadapi.WeightedWaypoint{{
			Destination: &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: "ns1", Hostname: "wp2"}}},
			Weight:      3,
		}},
		Visibility: workloadapi.Service_NAMESPACE,
	}
	got, err := convertService(x, newInterner())
	if err != nil {
		t.Fatal(err)
	}
	want := &Service{
		Name: "svc", Namespace: "ns1", Hostname: "svc.ns1.svc",
		VIPs: []NetworkAddress{{"", netip.MustParseAddr("10.96.0.1")}, {"n2", netip.MustParseAddr("10.96.0.2")}},
		CIDRVIPs: []NetworkPrefix{
			{"", netip.MustParsePrefix("10.97.0.0/16")},
			{"", netip.MustParsePrefix("fd00::/64")},
		},
		Ports:             map[uint16]uint16{80: 8080, 90: 0},
		SubjectAltNames:   []string{"spiffe://td/ns/ns1/sa/svc"},
		LoadBalancing:     &LoadBalancing{RoutingPreference: []Scope{ScopeNetwork, ScopeRegion, ScopeNode}, Mode: LBModeFailover, HealthPolicy: HealthAllowAll},
		Waypoint:          &GatewayAddress{Address: &NetworkAddress{"", netip.MustParseAddr("10.0.0.9")}, HBONEMTLSPort: 15008},
		WeightedWaypoints: []WeightedWaypoint{{Destination: GatewayAddress{Hostname: &NamespacedHostname{"ns1", "wp2"}}, Weight: 3}},
		Canonical:         true, IPFamilies: IPFamiliesDual, Visibility: VisibilityNamespace,
	}
	cmpAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	cmpPrefix := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	if diff := cmp.Diff(want, got, cmpAddr, cmpPrefix); diff != "" {
		t.Errorf("convertService (-want +got):\n%s", diff)
	}
	x.Visibility = 9 // unknown: fails open to public, like the reference
	if got, err := convertService(x, newInterner()); err != nil || got.Visibility != "" {
		t.Errorf("unknown visibility: %v, %v; want public", got.Visibility, err)
	}
}

func TestConvertAuthorization(t *testing.T) {
	x := &security.Authorization{
		Name: "p", Namespace: "ns1", Scope: security.Scope_WORKLOAD_SELECTOR, Action: security.Action_DENY, DryRun: true,
		Groups: []*security.Group{
			{Rules: []*security.Rules{
				{Matches: []*security.Match{{
					Namespaces:          []*security.StringMatch{{MatchType: &security.StringMatch_Exact{Exact: "a"}}},
					NotNamespaces:       []*security.StringMatch{{MatchType: &security.StringMatch_Prefix{Prefix: "kube-"}}},
					Principals:          []*security.StringMatch{{MatchType: &security.StringMatch_Suffix{Suffix: "/sa/x"}}},
					NotPrincipals:       []*security.StringMatch{{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}},
					SourceIps:           []*security.Address{{Address: ip4("10.0.0.0"), Length: 8}},
					NotSourceIps:        []*security.Address{{Address: ip4("10.1.2.3"), Length: 32}},
					DestinationIps:      []*security.Address{{Address: netip.MustParseAddr("fd00::").AsSlice(), Length: 16}},
					NotDestinationIps:   []*security.Address{{Address: ip4("0.0.0.0"), Length: 0}},
					DestinationPorts:    []uint32{80, 443},
					NotDestinationPorts: []uint32{9999},
					ServiceAccounts:     []*security.ServiceAccountMatch{{Namespace: "ns1", ServiceAccount: "sa1"}},
					NotServiceAccounts:  []*security.ServiceAccountMatch{{Namespace: "ns2", ServiceAccount: "sa2"}},
				}, {DestinationPorts: []uint32{8080}}}},
				{Matches: []*security.Match{{Namespaces: []*security.StringMatch{{MatchType: &security.StringMatch_Exact{Exact: "b"}}}}}},
			}},
			{},
		},
	}
	got, err := convertAuthorization(x)
	if err != nil {
		t.Fatal(err)
	}
	want := &Policy{
		Name: "p", Namespace: "ns1", Scope: PolicyScopeWorkloadSelector, Action: PolicyActionDeny, DryRun: true,
		Rules: [][][]Match{
			{
				{
					{
						Namespaces:          []StringMatch{{StringMatchExact, "a"}},
						NotNamespaces:       []StringMatch{{StringMatchPrefix, "kube-"}},
						Principals:          []StringMatch{{StringMatchSuffix, "/sa/x"}},
						NotPrincipals:       []StringMatch{{Kind: StringMatchPresence}},
						SourceIPs:           []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
						NotSourceIPs:        []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")},
						DestinationIPs:      []netip.Prefix{netip.MustParsePrefix("fd00::/16")},
						NotDestinationIPs:   []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
						DestinationPorts:    []uint16{80, 443},
						NotDestinationPorts: []uint16{9999},
						ServiceAccounts:     []ServiceAccountMatch{{"ns1", "sa1"}},
						NotServiceAccounts:  []ServiceAccountMatch{{"ns2", "sa2"}},
					},
					{DestinationPorts: []uint16{8080}},
				},
				{{Namespaces: []StringMatch{{StringMatchExact, "b"}}}},
			},
			{},
		},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("convertAuthorization (-want +got):\n%s", diff)
	}
}

func TestConvertErrors(t *testing.T) {
	wl := func(mut func(*workloadapi.Workload)) *workloadapi.Address {
		w := fullWorkloadProto()
		mut(w)
		return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
	}
	svc := func(mut func(*workloadapi.Service)) *workloadapi.Address {
		s := pbService("ns1", "h", "10.96.0.1")
		mut(s)
		return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}
	}
	for _, tc := range []struct {
		name string
		in   *workloadapi.Address
		want string
	}{
		{"empty address", &workloadapi.Address{}, "neither a workload nor a service"},
		{"no uid", wl(func(w *workloadapi.Workload) { w.Uid = "" }), "no uid"},
		{"IP length", wl(func(w *workloadapi.Workload) { w.Addresses[1] = []byte{1} }), "addresses[1]: IP address is 1 bytes"},
		{"legacy mTLS", wl(func(w *workloadapi.Workload) { w.TunnelProtocol = workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS }), "LEGACY_ISTIO_MTLS"},
		{"unknown tunnel", wl(func(w *workloadapi.Workload) { w.TunnelProtocol = 5 }), "unknown tunnel protocol 5"},
		{"unknown network mode", wl(func(w *workloadapi.Workload) { w.NetworkMode = 3 }), "unknown network mode 3"},
		{"waypoint without destination", wl(func(w *workloadapi.Workload) { w.Waypoint.Destination = nil }), "waypoint: no destination"},
		{"gateway bad IP", wl(func(w *workloadapi.Workload) {
			w.NetworkGateway.Destination = &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: []byte{1, 2}}}
		}), "network gateway: address: IP address is 2 bytes"},
		{"gateway port", wl(func(w *workloadapi.Workload) { w.Waypoint.HboneMtlsPort = 1 << 16 }), "waypoint: hbone mtls port: 65536 is out of range"},
		{"app tunnel protocol", wl(func(w *workloadapi.Workload) { w.ApplicationTunnel.Protocol = 2 }), "application tunnel: unknown protocol 2"},
		{"services key", wl(func(w *workloadapi.Workload) { w.Services["nohost"] = nil }), `services: invalid namespaced hostname "nohost"`},
		{"services port", wl(func(w *workloadapi.Workload) {
			w.Services["ns1/svc.ns1.svc"].Ports[0].TargetPort = 70000
		}), `services["ns1/svc.ns1.svc"]: [0] target port: 70000 is out of range`},
		{"service no hostname", svc(func(s *workloadapi.Service) { s.Hostname = "" }), "namespace and hostname"},
		{"service VIP bytes", svc(func(s *workloadapi.Service) { s.Addresses[0].Address = nil }), "addresses[0]: IP address is 0 bytes"},
		{"service CIDR", svc(func(s *workloadapi.Service) { s.Addresses[0].Length = u32(40) }), "invalid CIDR 10.96.0.1/40"},
		{"service port", svc(func(s *workloadapi.Service) { s.Ports[0].ServicePort = 1 << 20 }), "ports: [0] service port"},
		{"scope unspecified", svc(func(s *workloadapi.Service) {
			s.LoadBalancing = &workloadapi.LoadBalancing{RoutingPreference: []workloadapi.LoadBalancing_Scope{0}}
		}), "load balancing: routing preference[0]: invalid scope 0"},
		{"lb mode", svc(func(s *workloadapi.Service) { s.LoadBalancing = &workloadapi.LoadBalancing{Mode: 9} }), "unknown mode 9"},
		{"health policy", svc(func(s *workloadapi.Service) { s.LoadBalancing = &workloadapi.LoadBalancing{HealthPolicy: 2} }), "unknown health policy 2"},
		{"ip families", svc(func(s *workloadapi.Service) { s.IpFamilies = 4 }), "unknown IP families 4"},
		{"weighted waypoint", svc(func(s *workloadapi.Service) {
			s.WeightedWaypoints = []*workloadapi.WeightedWaypoint{{Weight: 1}}
		}), "weighted waypoints[0]: no destination"},
	} {
		_, _, err := convertAddress(tc.in, newInterner())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: convertAddress error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	pol := func(mut func(*security.Authorization)) *security.Authorization {
		p := pbPolicy("ns1", "p")
		mut(p)
		return p
	}
	match := func(m *security.Match) *security.Authorization {
		return pol(func(p *security.Authorization) { p.Groups[0].Rules[0].Matches = []*security.Match{m} })
	}
	for _, tc := range []struct {
		name string
		in   *security.Authorization
		want string
	}{
		{"no name", pol(func(p *security.Authorization) { p.Name = "" }), "name and namespace"},
		{"scope", pol(func(p *security.Authorization) { p.Scope = 3 }), "unknown scope 3"},
		{"action", pol(func(p *security.Authorization) { p.Action = 2 }), "unknown action 2"},
		{"empty string match", match(&security.Match{NotNamespaces: []*security.StringMatch{{}}}), "rules[0][0][0]: not namespaces: [0]: string match has no match type"},
		{"bad IP", match(&security.Match{SourceIps: []*security.Address{{Address: []byte{1, 2, 3}, Length: 8}}}), "source IPs: [0]: IP address is 3 bytes"},
		{"bad CIDR", match(&security.Match{NotDestinationIps: []*security.Address{{Address: ip4("10.0.0.0"), Length: 33}}}), "not destination IPs: [0]: invalid CIDR 10.0.0.0/33"},
		{"bad port", match(&security.Match{NotDestinationPorts: []uint32{65536}}), "not destination ports: [0]: 65536 is out of range"},
	} {
		_, err := convertAuthorization(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: convertAuthorization error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}
