package workload

import (
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// cmpModel compares model values, including netip types by value; nil and empty are equal.
var cmpModel = cmp.Options{cmpStrict, cmpopts.EquateEmpty()}

func mustParse(t testing.TB, yaml string) *LocalConfig {
	t.Helper()
	cfg, err := ParseLocalConfig("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("ParseLocalConfig: %v", err)
	}
	return cfg
}

func TestParseLocalConfigFull(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseLocalConfig("testdata/full.yaml", data)
	if err != nil {
		t.Fatalf("ParseLocalConfig: %v", err)
	}
	na := func(network, ip string) *NetworkAddress {
		return &NetworkAddress{Network: network, Addr: netip.MustParseAddr(ip)}
	}
	pfx := netip.MustParsePrefix
	wantWorkloads := []*Workload{{
		UID: "cluster1//v1/Pod/default/full", Name: "full", Namespace: "default",
		TrustDomain: "example.org", ServiceAccount: "sa1", Network: "net1", Node: "node1",
		ClusterID: "cluster1", Hostname: "full.example.com",
		WorkloadName: "full-deploy", WorkloadType: "deployment", CanonicalName: "full-app", CanonicalRevision: "v2",
		IPs:         []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		Protocol:    ProtocolHBONE,
		Status:      StatusUnhealthy,
		NetworkMode: NetworkModeHostNetwork,
		Locality:    Locality{Region: "r1", Zone: "z1", Subzone: "s1"},
		Capacity:    0,
		Waypoint:    &GatewayAddress{Address: na("net1", "10.0.0.100"), HBONEMTLSPort: 15008},
		NetworkGateway: &GatewayAddress{
			Hostname:      &NamespacedHostname{Namespace: "istio-system", Hostname: "gw.example.com"},
			HBONEMTLSPort: 15009,
		},
		NativeTunnel:          true,
		ApplicationTunnel:     &ApplicationTunnel{Protocol: "PROXY", Port: 15088},
		AuthorizationPolicies: []string{"default/sel"},
		Services:              map[string]map[uint16]uint16{"default/svc.example.com": {80: 8080, 443: 0}},
	}, {
		UID: "cluster1//v1/Pod/default/minimal", Name: "minimal", Namespace: "default",
		TrustDomain: DefaultTrustDomain, ServiceAccount: DefaultServiceAccount, ClusterID: DefaultClusterID,
		Capacity: 1,
	}}
	wantServices := []*Service{{
		Name: "svc", Namespace: "default", Hostname: "svc.example.com",
		VIPs:            []NetworkAddress{*na("", "10.96.0.1"), *na("net1", "fd00::96")},
		CIDRVIPs:        []NetworkPrefix{{Network: "net1", Prefix: pfx("10.97.0.0/16")}},
		Ports:           map[uint16]uint16{80: 8080, 443: 0},
		SubjectAltNames: []string{"spiffe://example.org/ns/default/sa/sa1"},
		Endpoints: map[string]*Endpoint{"cluster1//v1/Pod/default/ext": {
			WorkloadUID: "cluster1//v1/Pod/default/ext", Port: map[uint16]uint16{80: 9090}, Status: StatusHealthy,
		}},
		Waypoint: &GatewayAddress{
			Hostname:      &NamespacedHostname{Namespace: "default", Hostname: "waypoint.default.svc.cluster.local"},
			HBONEMTLSPort: 15008,
		},
		WeightedWaypoints: []WeightedWaypoint{{
			Destination: GatewayAddress{Address: na("", "10.0.0.200"), HBONEMTLSPort: 15008}, Weight: 90,
		}},
		LoadBalancing: &LoadBalancing{
			RoutingPreference: []Scope{ScopeNetwork, ScopeRegion, ScopeZone, ScopeSubzone, ScopeNode, ScopeCluster},
			Mode:              LBModeFailover,
			HealthPolicy:      HealthAllowAll,
		},
		IPFamilies: IPFamiliesDual,
		Canonical:  true,
		Visibility: VisibilityNamespace,
	}, {
		Name: "strict", Namespace: "default", Hostname: "strict.example.com",
		LoadBalancing: &LoadBalancing{Mode: LBModeStrict, HealthPolicy: HealthOnlyHealthy},
		IPFamilies:    IPFamiliesIPv4, Visibility: VisibilityPublic,
	}, {
		Name: "std", Namespace: "default", Hostname: "std.example.com",
		LoadBalancing: &LoadBalancing{Mode: LBModeStandard}, IPFamilies: IPFamiliesIPv6,
	}, {
		Name: "pass", Namespace: "default", Hostname: "pass.example.com",
		LoadBalancing: &LoadBalancing{Mode: LBModePassthrough},
	}}
	wantPolicies := []*Policy{{
		Name: "sel", Namespace: "default", Scope: PolicyScopeWorkloadSelector, Action: PolicyActionDeny, DryRun: true,
		Rules: [][][]Match{{
			{{
				Namespaces:          []StringMatch{{Kind: StringMatchExact, Value: "default"}, {Kind: StringMatchPrefix, Value: "kube-"}},
				NotNamespaces:       []StringMatch{{Kind: StringMatchSuffix, Value: "-system"}},
				Principals:          []StringMatch{{Kind: StringMatchPresence}, {Kind: StringMatchExact, Value: "cluster.local/ns/a/sa/b"}},
				NotPrincipals:       []StringMatch{{Kind: StringMatchPrefix, Value: "evil"}},
				SourceIPs:           []netip.Prefix{pfx("10.0.0.0/8"), pfx("fd00::/64")},
				NotSourceIPs:        []netip.Prefix{pfx("10.1.2.3/32")},
				DestinationIPs:      []netip.Prefix{pfx("192.168.0.0/16")},
				NotDestinationIPs:   []netip.Prefix{pfx("192.168.1.0/24")},
				DestinationPorts:    []uint16{80, 443},
				NotDestinationPorts: []uint16{9999},
				ServiceAccounts:     []ServiceAccountMatch{{Namespace: "default", ServiceAccount: "sa1"}},
				NotServiceAccounts:  []ServiceAccountMatch{{Namespace: "default", ServiceAccount: "bad"}},
			}, {
				DestinationPorts: []uint16{8080},
			}},
			{{NotDestinationPorts: []uint16{22}}},
		}},
	}, {
		Name: "ns", Namespace: "default", Scope: PolicyScopeNamespace, Action: PolicyActionAllow,
	}, {
		Name: "global", Namespace: "istio-system", Scope: PolicyScopeGlobal, Action: PolicyActionAllow, Rules: [][][]Match{},
	}}
	if diff := cmp.Diff(wantWorkloads, cfg.Workloads, cmpModel); diff != "" {
		t.Errorf("workloads (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantServices, cfg.Services, cmpModel); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantPolicies, cfg.Policies, cmpModel); diff != "" {
		t.Errorf("policies (-want +got):\n%s", diff)
	}
	if string(cfg.Raw) != string(data) {
		t.Errorf("Raw differs from the input")
	}
	if _, err := cfg.Snapshot(); err != nil {
		t.Errorf("Snapshot: %v", err)
	}
}

// localhostYAML has the shape of the reference's examples/localhost.yaml: two node-local
// workloads (HBONE and TCP) in two services, one on another network, and one policy.
const localhostYAML = `
workloads:
- uid: c1//v1/Pod/default/local
  name: local
  namespace: default
  serviceAccount: default
  workloadIps: ["127.0.0.1"]
  protocol: HBONE
  node: local
  network: ""
  services:
    "default/a.example.com":
      80: 8080
    "default/b.example.com":
      80: 8080
- uid: c1//v1/Pod/default/local-tcp
  name: local-tcp
  namespace: default
  serviceAccount: default
  workloadIps: ["127.0.0.2"]
  protocol: TCP
  node: local
  network: ""
  services:
    "default/b.example.com":
      80: 8080
policies:
  - action: Allow
    rules:
    - - - notDestinationPorts:
          - 9999
    name: not-9999
    namespace: default
    scope: Namespace
    dryRun: false
services:
- name: a
  namespace: default
  hostname: a.example.com
  vips:
    - /127.10.0.1
  ports:
    80: 8080
  subjectAltNames:
   - spiffe://cluster.local/ns/default/sa/local
  canonical: true
- name: b
  namespace: default
  hostname: b.example.com
  vips:
    - remote/127.10.0.2
  ports:
    80: 8080
  canonical: true
`

func TestParseLocalConfigReferenceShape(t *testing.T) {
	cfg, err := ParseLocalConfig("LOCAL_XDS", []byte(localhostYAML))
	if err != nil {
		t.Fatalf("ParseLocalConfig: %v", err)
	}
	snap, err := cfg.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	w := snap.WorkloadByAddr("", netip.MustParseAddr("127.0.0.1"))
	if w == nil || w.Name != "local" || w.Protocol != ProtocolHBONE {
		t.Fatalf("WorkloadByAddr(127.0.0.1) = %+v, want the HBONE workload \"local\"", w)
	}
	if got, want := w.Identity(), "spiffe://cluster.local/ns/default/sa/default"; got != want {
		t.Errorf("Identity() = %q, want %q", got, want)
	}
	svc := snap.ServiceByVIP("remote", netip.MustParseAddr("127.10.0.2"))
	if svc == nil || svc.Hostname != "b.example.com" {
		t.Fatalf("ServiceByVIP(remote/127.10.0.2) = %+v, want b.example.com", svc)
	}
	if len(svc.Endpoints) != 2 {
		t.Errorf("b.example.com has %d endpoints, want 2", len(svc.Endpoints))
	}
	if svc := snap.ServiceByVIP("", netip.MustParseAddr("127.10.0.2")); svc != nil {
		t.Errorf("ServiceByVIP on the default network found %s; the VIP is on network remote", svc.Key())
	}
	if ps := snap.PoliciesFor(w); len(ps) != 1 || ps[0].Key() != "default/not-9999" {
		t.Errorf("PoliciesFor(local) = %v, want [default/not-9999]", ps)
	}
}

func TestParseLocalConfigEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "workloads:\nservices: []\npolicies: ~\n", "{}"} {
		cfg, err := ParseLocalConfig("LOCAL_XDS", []byte(in))
		if err != nil {
			t.Errorf("ParseLocalConfig(%q): %v", in, err)
			continue
		}
		if len(cfg.Workloads)+len(cfg.Services)+len(cfg.Policies) != 0 {
			t.Errorf("ParseLocalConfig(%q) = %+v, want empty", in, cfg)
		}
	}
}

func TestParseLocalConfigHostnameWorkloadAndAliases(t *testing.T) {
	cfg := mustParse(t, `
workloads:
- uid: u1
  name: dns
  namespace: ns
  hostname: vm.example.com
  services: {"ns/a.example.com": &p {80: 8080}, "ns/b.example.com": *p}
`)
	w := cfg.Workloads[0]
	if len(w.IPs) != 0 || w.Hostname != "vm.example.com" {
		t.Errorf("workload = %+v, want hostname and no IPs", w)
	}
	want := map[string]map[uint16]uint16{"ns/a.example.com": {80: 8080}, "ns/b.example.com": {80: 8080}}
	if diff := cmp.Diff(want, w.Services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}
