package testbed

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// testTopology is a small topology covering every converted field: an enrolled pod with locality,
// labels, services and a selector policy; a plain TCP pod on another network; an HBONE override; an
// omitted pod; a service with a load balancer and one without; policies of every scope.
func testTopology(t *testing.T) ([]podRecord, []serviceRecord, []policyRecord, []string) {
	t.Helper()
	hello := ServiceSpec{Name: "helloworld", Namespace: "sample"}
	pods := []podRecord{
		{Name: "hello-w1", Namespace: "sample", ServiceAccount: "helloworld", Node: "worker1", Cluster: "Kubernetes",
			Locality: localLocality{"region", "zone1", "subzone1"}, IP: netip.MustParseAddr("10.40.1.2"), Enrolled: true,
			Services: map[string]map[uint16]uint16{hello.ConfigKey(): {5000: 5000, 80: 5000}},
			Labels:   map[string]string{"app": "helloworld", "version": "v1"}, Policies: []string{"sample/only-sleep"}},
		{Name: "legacy", Namespace: "default", ServiceAccount: "default", Node: "worker2", Network: "net2",
			Cluster: "c2", IP: netip.MustParseAddr("10.40.2.2"),
			Labels: map[string]string{"app.kubernetes.io/name": "legacy-app", "app": "ignored", "app.kubernetes.io/version": "v9"}},
		{Name: "fake-hbone", Namespace: "default", ServiceAccount: "default", Node: "worker2", Cluster: "Kubernetes",
			IP: netip.MustParseAddr("10.40.2.3"), Protocol: "HBONE"},
		{Name: "hidden", Namespace: "default", ServiceAccount: "default", Node: "worker2", Cluster: "Kubernetes",
			IP: netip.MustParseAddr("10.40.2.4"), OmitFromConfig: true},
	}
	var svcs []serviceRecord
	for _, s := range []ServiceSpec{
		{Name: "helloworld", Namespace: "sample", VIP: netip.MustParseAddr("10.96.0.10"),
			Ports: map[uint16]uint16{5000: 5000, 80: 5000}, RoutingPreference: []string{"Network", "Region", "Zone", "Subzone", "Node", "Cluster"}},
		{Name: "strict", Namespace: "sample", VIP: netip.MustParseAddr("10.96.0.11"), Ports: map[uint16]uint16{1: 2}, Mode: "Strict"},
		{Name: "plain", Namespace: "default", VIP: netip.MustParseAddr("10.96.0.12"), Ports: map[uint16]uint16{80: 8080}},
	} {
		r, err := newServiceRecord(s)
		if err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, r)
	}
	var pols []policyRecord
	for _, p := range []PolicySpec{
		{Name: "only-sleep", Namespace: "sample", Scope: "WorkloadSelector", Rules: [][]Match{
			{{Principals: []string{"cluster.local/ns/sample/sa/sleep"}}, {DestinationPorts: []uint16{5000}}},
			{{Namespaces: []string{"trusted"}, SourceIPs: []string{"10.40.0.0/16", "10.40.1.9"}}},
		}},
		{Name: "deny-evil", Namespace: "istio-system", Scope: "Global", Action: "Deny", Rules: [][]Match{
			{{NotPrincipals: []string{"cluster.local/ns/good/sa/a", "cluster.local/ns/good/sa/b"}}},
		}},
		{Name: "allow-all", Namespace: "default", Rules: [][]Match{{}}},
		{Name: "allow-none", Namespace: "other"},
	} {
		r, err := newPolicyRecord(p)
		if err != nil {
			t.Fatal(err)
		}
		pols = append(pols, r)
	}
	return pods, svcs, pols, []string{"", "net2", ""}
}

func TestBuildResources(t *testing.T) {
	pods, svcs, pols, nets := testTopology(t)
	got := buildResources(pods, svcs, pols, nets)

	workload := func(w *workloadapi.Workload) *workloadapi.Address {
		return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
	}
	service := func(s *workloadapi.Service) *workloadapi.Address {
		return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}
	}
	vips := func(ip string) []*workloadapi.NetworkAddress {
		a := netip.MustParseAddr(ip).AsSlice()
		return []*workloadapi.NetworkAddress{{Network: "", Address: a}, {Network: "net2", Address: a}}
	}
	exact := func(s string) *security.StringMatch {
		return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}}
	}
	want := xdsResources{
		typeAddress: {
			"Kubernetes//v1/Pod/sample/hello-w1": workload(&workloadapi.Workload{
				Uid: "Kubernetes//v1/Pod/sample/hello-w1", Name: "hello-w1", Namespace: "sample",
				Addresses: [][]byte{{10, 40, 1, 2}}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
				TrustDomain: "cluster.local", ServiceAccount: "helloworld", Node: "worker1", ClusterId: "Kubernetes",
				Locality:      &workloadapi.Locality{Region: "region", Zone: "zone1", Subzone: "subzone1"},
				Status:        workloadapi.WorkloadStatus_HEALTHY,
				CanonicalName: "helloworld", CanonicalRevision: "v1",
				Services: map[string]*workloadapi.PortList{"sample/helloworld.sample.svc.cluster.local": {Ports: []*workloadapi.Port{
					{ServicePort: 80, TargetPort: 5000}, {ServicePort: 5000, TargetPort: 5000}}}},
				AuthorizationPolicies: []string{"sample/only-sleep"},
			}),
			"c2//v1/Pod/default/legacy": workload(&workloadapi.Workload{
				Uid: "c2//v1/Pod/default/legacy", Name: "legacy", Namespace: "default",
				Addresses: [][]byte{{10, 40, 2, 2}}, Network: "net2", TunnelProtocol: workloadapi.TunnelProtocol_NONE,
				TrustDomain: "cluster.local", ServiceAccount: "default", Node: "worker2", ClusterId: "c2",
				CanonicalName: "legacy-app", CanonicalRevision: "v9",
			}),
			"Kubernetes//v1/Pod/default/fake-hbone": workload(&workloadapi.Workload{
				Uid: "Kubernetes//v1/Pod/default/fake-hbone", Name: "fake-hbone", Namespace: "default",
				Addresses: [][]byte{{10, 40, 2, 3}}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
				TrustDomain: "cluster.local", ServiceAccount: "default", Node: "worker2", ClusterId: "Kubernetes",
			}),
			"sample/helloworld.sample.svc.cluster.local": service(&workloadapi.Service{
				Name: "helloworld", Namespace: "sample", Hostname: "helloworld.sample.svc.cluster.local",
				Addresses: vips("10.96.0.10"),
				Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 5000}, {ServicePort: 5000, TargetPort: 5000}},
				LoadBalancing: &workloadapi.LoadBalancing{
					RoutingPreference: []workloadapi.LoadBalancing_Scope{
						workloadapi.LoadBalancing_NETWORK, workloadapi.LoadBalancing_REGION, workloadapi.LoadBalancing_ZONE,
						workloadapi.LoadBalancing_SUBZONE, workloadapi.LoadBalancing_NODE, workloadapi.LoadBalancing_CLUSTER},
					Mode: workloadapi.LoadBalancing_FAILOVER,
				},
			}),
			"sample/strict.sample.svc.cluster.local": service(&workloadapi.Service{
				Name: "strict", Namespace: "sample", Hostname: "strict.sample.svc.cluster.local",
				Addresses:     vips("10.96.0.11"),
				Ports:         []*workloadapi.Port{{ServicePort: 1, TargetPort: 2}},
				LoadBalancing: &workloadapi.LoadBalancing{Mode: workloadapi.LoadBalancing_STRICT},
			}),
			"default/plain.default.svc.cluster.local": service(&workloadapi.Service{
				Name: "plain", Namespace: "default", Hostname: "plain.default.svc.cluster.local",
				Addresses: vips("10.96.0.12"),
				Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}},
			}),
		},
		typeAuthorization: {
			"sample/only-sleep": &security.Authorization{
				Name: "only-sleep", Namespace: "sample", Scope: security.Scope_WORKLOAD_SELECTOR, Action: security.Action_ALLOW,
				Groups: []*security.Group{
					{Rules: []*security.Rules{
						{Matches: []*security.Match{{Principals: []*security.StringMatch{exact("cluster.local/ns/sample/sa/sleep")}}}},
						{Matches: []*security.Match{{DestinationPorts: []uint32{5000}}}},
					}},
					{Rules: []*security.Rules{
						{Matches: []*security.Match{{
							Namespaces: []*security.StringMatch{exact("trusted")},
							SourceIps:  []*security.Address{{Address: []byte{10, 40, 0, 0}, Length: 16}, {Address: []byte{10, 40, 1, 9}, Length: 32}},
						}}},
					}},
				},
			},
			"istio-system/deny-evil": &security.Authorization{
				Name: "deny-evil", Namespace: "istio-system", Scope: security.Scope_GLOBAL, Action: security.Action_DENY,
				Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{
					NotPrincipals: []*security.StringMatch{exact("cluster.local/ns/good/sa/a"), exact("cluster.local/ns/good/sa/b")},
				}}}}}},
			},
			"default/allow-all": &security.Authorization{
				Name: "allow-all", Namespace: "default", Scope: security.Scope_NAMESPACE, Action: security.Action_ALLOW,
				Groups: []*security.Group{{}},
			},
			"other/allow-none": &security.Authorization{
				Name: "allow-none", Namespace: "other", Scope: security.Scope_NAMESPACE, Action: security.Action_ALLOW,
			},
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("buildResources (-want +got):\n%s", diff)
	}

	// No pods, services or policies: both types present and empty; the default network only.
	empty := buildResources(nil, nil, nil, nil)
	if len(empty) != 2 || len(empty[typeAddress]) != 0 || len(empty[typeAuthorization]) != 0 {
		t.Errorf("empty topology = %v", empty)
	}
	one := buildResources(nil, svcs[2:], nil, nil)
	svc := one[typeAddress]["default/plain.default.svc.cluster.local"].(*workloadapi.Address).GetService()
	if diff := cmp.Diff([]*workloadapi.NetworkAddress{{Address: []byte{10, 96, 0, 12}}}, svc.GetAddresses(), protocmp.Transform()); diff != "" {
		t.Errorf("VIPs without networks (-want +got):\n%s", diff)
	}
}

func TestNewPolicyRecord(t *testing.T) {
	r, err := newPolicyRecord(PolicySpec{Name: "p", Namespace: "ns"})
	if err != nil || r.Scope != "Namespace" || r.Action != "Allow" {
		t.Errorf("defaults: %+v, %v; want scope Namespace, action Allow", r, err)
	}
	r, err = newPolicyRecord(PolicySpec{Name: "p", Namespace: "ns", Rules: [][]Match{{{SourceIPs: []string{"10.1.2.3/8", "::ffff:10.0.0.0/104", "fd00::1"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::1/128")}
	if diff := cmp.Diff(want, r.Rules[0][0].SourceIPs, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("source IPs (-want +got):\n%s", diff)
	}
	ok := PolicySpec{Name: "p", Namespace: "ns"}
	tests := []struct {
		name string
		mod  func(*PolicySpec)
		want string
	}{
		{"no name", func(p *PolicySpec) { p.Name = "" }, "policy name"},
		{"bad namespace", func(p *PolicySpec) { p.Namespace = "a/b" }, "policy namespace"},
		{"bad scope", func(p *PolicySpec) { p.Scope = "Cluster" }, `scope "Cluster"`},
		{"bad action", func(p *PolicySpec) { p.Action = "Audit" }, `action "Audit"`},
		{"empty match", func(p *PolicySpec) { p.Rules = [][]Match{{{}}} }, "rules[0][0]: empty match"},
		{"empty principal", func(p *PolicySpec) { p.Rules = [][]Match{{{Principals: []string{""}}}} }, "empty principal"},
		{"port 0", func(p *PolicySpec) { p.Rules = [][]Match{{}, {{DestinationPorts: []uint16{0}}}} }, "rules[1][0]: destination port 0"},
		{"bad CIDR", func(p *PolicySpec) { p.Rules = [][]Match{{{SourceIPs: []string{"10.0.0.0/33"}}}} }, `source IP "10.0.0.0/33"`},
		{"zone", func(p *PolicySpec) { p.Rules = [][]Match{{{SourceIPs: []string{"fe80::1%eth0"}}}} }, `source IP "fe80::1%eth0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.mod(&p)
			_, err := newPolicyRecord(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("newPolicyRecord() error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	for _, bad := range [][]string{{"nons"}, {"ns/"}, {"/name"}, {"ns/a/b"}, {"NS/x"}} {
		if err := checkPolicyRefs(bad); err == nil {
			t.Errorf("checkPolicyRefs(%q) accepted", bad)
		}
	}
	if err := checkPolicyRefs([]string{"sample/only-sleep", "istio-system/x"}); err != nil {
		t.Errorf("checkPolicyRefs: %v", err)
	}
}
