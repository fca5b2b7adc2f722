package testbed

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ztunnel-go/ztunnel/workload"
)

// multiNetTopology is S2 in records: helloworld v1 on network1 (cluster1), v2 and v2b on network2
// (cluster2), a client on each network, a pod of network3 (no gateway) behind the service too,
// and a gateway on network1 and network2.
func multiNetTopology(t *testing.T) ([]podRecord, []serviceRecord, []gatewayRecord) {
	t.Helper()
	hello := ServiceSpec{Name: "helloworld", Namespace: "sample"}
	svc, err := newServiceRecord(ServiceSpec{Name: "helloworld", Namespace: "sample", VIP: netip.MustParseAddr("10.96.0.20"),
		Ports: map[uint16]uint16{5000: 5000}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := newServiceRecord(ServiceSpec{Name: "local-only", Namespace: "sample", VIP: netip.MustParseAddr("10.96.0.21"),
		Ports: map[uint16]uint16{80: 8080}})
	if err != nil {
		t.Fatal(err)
	}
	ep := map[string]map[uint16]uint16{hello.ConfigKey(): {5000: 5000}}
	pod := func(name, sa, node, network, cluster, ip string, services map[string]map[uint16]uint16) podRecord {
		return podRecord{Name: name, Namespace: "sample", ServiceAccount: sa, Node: node, Network: network, Cluster: cluster,
			IP: netip.MustParseAddr(ip), Enrolled: true, Services: services,
			Labels: map[string]string{"app": strings.TrimSuffix(name, "-v1")}}
	}
	pods := []podRecord{
		pod("sleep-c1", "sleep", "c1-node1", "network1", "cluster1", "10.40.1.2", nil),
		pod("helloworld-v1", "helloworld", "c1-node2", "network1", "cluster1", "10.40.2.2", ep),
		pod("sleep-c2", "sleep", "c2-node1", "network2", "cluster2", "10.40.3.2", nil),
		pod("helloworld-v2", "helloworld", "c2-node2", "network2", "cluster2", "10.40.4.3", ep),
		pod("helloworld-v2b", "helloworld-b", "c2-node2", "network2", "cluster2", "10.40.4.4", ep),
		pod("helloworld-v3", "helloworld-c", "c3-node1", "network3", "cluster3", "10.40.5.2", ep),
		pod("local-only", "default", "c2-node1", "network2", "cluster2", "10.40.3.3",
			map[string]map[uint16]uint16{"sample/local-only.sample.svc.cluster.local": {80: 8080}}),
	}
	gws := []gatewayRecord{
		{Network: "network2", Cluster: "cluster2", Node: "c2-node2", Name: gatewayPodName("network2"), IP: netip.MustParseAddr("10.40.4.2")},
		{Network: "network1", Cluster: "cluster1", Node: "c1-node2", Name: gatewayPodName("network1"), IP: netip.MustParseAddr("10.40.2.3")},
	}
	return pods, []serviceRecord{svc, other}, gws
}

// TestRenderNetworkConfigGolden pins network1's file of the multi-network topology.
func TestRenderNetworkConfigGolden(t *testing.T) {
	pods, svcs, gws := multiNetTopology(t)
	got, err := renderNetworkConfig("network1", pods, svcs, nil, gws)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "local-config-network1.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("rendered config differs from %s (-want +got):\n%s", golden, diff)
	}
}

// TestRenderNetworkConfigParse reads every network's file with the proxy's own parser and checks
// what istiod would send that network: its own pods, the other networks' gateways and
// split-horizon workloads (no remote pod), VIPs on its network only, SANs of every endpoint.
func TestRenderNetworkConfigParse(t *testing.T) {
	pods, svcs, gws := multiNetTopology(t)
	allSANs := []string{
		"spiffe://cluster.local/ns/sample/sa/helloworld",
		"spiffe://cluster.local/ns/sample/sa/helloworld-b",
		"spiffe://cluster.local/ns/sample/sa/helloworld-c",
	}
	type gwView struct {
		Dest     string
		Port     uint16
		Capacity uint32
		Services []string
	}
	tests := []struct {
		network   string
		pods      []string          // names of the pod workloads
		gateways  map[string]string // uid -> IP of the gateway workloads
		split     map[string]gwView // uid -> view of the split-horizon workloads
		remoteNet string
	}{
		{
			network:  "network1",
			pods:     []string{"helloworld-v1", "sleep-c1"},
			gateways: map[string]string{"NetworkGateway/network2/10.40.4.2/15008": "10.40.4.2"},
			split: map[string]gwView{
				"network2/SplitHorizonWorkload/istio-system/eastwestgateway/10.40.4.2/sample/helloworld.sample.svc.cluster.local": {
					Dest: "network2/10.40.4.2", Port: 15008, Capacity: 2, Services: []string{"sample/helloworld.sample.svc.cluster.local"}},
				"network2/SplitHorizonWorkload/istio-system/eastwestgateway/10.40.4.2/sample/local-only.sample.svc.cluster.local": {
					Dest: "network2/10.40.4.2", Port: 15008, Capacity: 1, Services: []string{"sample/local-only.sample.svc.cluster.local"}},
			},
		},
		{
			network:  "network2",
			pods:     []string{"helloworld-v2", "helloworld-v2b", "local-only", "sleep-c2"},
			gateways: map[string]string{"NetworkGateway/network1/10.40.2.3/15008": "10.40.2.3"},
			split: map[string]gwView{
				"network1/SplitHorizonWorkload/istio-system/eastwestgateway/10.40.2.3/sample/helloworld.sample.svc.cluster.local": {
					Dest: "network1/10.40.2.3", Port: 15008, Capacity: 1, Services: []string{"sample/helloworld.sample.svc.cluster.local"}},
			},
		},
		{
			// No gateway of its own, but it reaches both others through theirs.
			network: "network3",
			pods:    []string{"helloworld-v3"},
			gateways: map[string]string{
				"NetworkGateway/network1/10.40.2.3/15008": "10.40.2.3",
				"NetworkGateway/network2/10.40.4.2/15008": "10.40.4.2",
			},
			split: map[string]gwView{
				"network1/SplitHorizonWorkload/istio-system/eastwestgateway/10.40.2.3/sample/helloworld.sample.svc.cluster.local": {
					Dest: "network1/10.40.2.3", Port: 15008, Capacity: 1, Services: []string{"sample/helloworld.sample.svc.cluster.local"}},
				"network2/SplitHorizonWorkload/istio-system/eastwestgateway/10.40.4.2/sample/helloworld.sample.svc.cluster.local": {
					Dest: "network2/10.40.4.2", Port: 15008, Capacity: 2, Services: []string{"sample/helloworld.sample.svc.cluster.local"}},
				"network2/SplitHorizonWorkload/istio-system/eastwestgateway/10.40.4.2/sample/local-only.sample.svc.cluster.local": {
					Dest: "network2/10.40.4.2", Port: 15008, Capacity: 1, Services: []string{"sample/local-only.sample.svc.cluster.local"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.network, func(t *testing.T) {
			data, err := renderNetworkConfig(tt.network, pods, svcs, nil, gws)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := workload.ParseLocalConfig("rendered", data)
			if err != nil {
				t.Fatalf("ParseLocalConfig: %v\n%s", err, data)
			}
			var podNames []string
			gateways := map[string]string{}
			split := map[string]gwView{}
			for _, w := range cfg.Workloads {
				switch {
				case w.NetworkGateway != nil:
					if len(w.IPs) != 0 {
						t.Errorf("split-horizon workload %s has addresses %v", w.UID, w.IPs)
					}
					if w.NetworkGateway.Address == nil {
						t.Fatalf("split-horizon workload %s: gateway %+v is not an address", w.UID, w.NetworkGateway)
					}
					if w.Network == tt.network {
						t.Errorf("split-horizon workload %s is on the local network", w.UID)
					}
					split[w.UID] = gwView{Dest: w.NetworkGateway.Address.String(),
						Port: w.NetworkGateway.HBONEMTLSPort, Capacity: w.Capacity, Services: slices.Sorted(maps.Keys(w.Services))}
				case w.Namespace == GatewayNamespace:
					if w.UID != w.Name || w.ServiceAccount != GatewayServiceAccount || len(w.IPs) != 1 || w.Protocol != workload.ProtocolHBONE {
						t.Errorf("gateway workload %+v", w)
					}
					if !strings.HasPrefix(w.UID, "NetworkGateway/"+w.Network+"/") {
						t.Errorf("gateway workload %s on network %q", w.UID, w.Network)
					}
					gateways[w.UID] = w.IPs[0].String()
				default:
					if w.Network != tt.network {
						t.Errorf("pod workload %s of network %q listed on %s", w.Name, w.Network, tt.network)
					}
					podNames = append(podNames, w.Name)
				}
			}
			slices.Sort(podNames)
			if diff := cmp.Diff(tt.pods, podNames); diff != "" {
				t.Errorf("pod workloads (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.gateways, gateways); diff != "" {
				t.Errorf("gateway workloads (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.split, split); diff != "" {
				t.Errorf("split-horizon workloads (-want +got):\n%s", diff)
			}
			for _, s := range cfg.Services {
				var vips []string
				for _, v := range s.VIPs {
					vips = append(vips, v.String())
				}
				want := map[string][]string{"helloworld": {tt.network + "/10.96.0.20"}, "local-only": {tt.network + "/10.96.0.21"}}[s.Name]
				if diff := cmp.Diff(want, vips); diff != "" {
					t.Errorf("service %s VIPs (-want +got):\n%s", s.Name, diff)
				}
				wantSANs := allSANs
				if s.Name == "local-only" {
					wantSANs = []string{"spiffe://cluster.local/ns/sample/sa/default"}
				}
				if diff := cmp.Diff(wantSANs, s.SubjectAltNames); diff != "" {
					t.Errorf("service %s SANs (-want +got):\n%s", s.Name, diff)
				}
			}
		})
	}
}

// TestRenderNetworkConfigNoRemoteEndpoints: a service with no endpoint on a gateway's network gets
// no split-horizon workload there; with no gateways at all, a network sees only itself.
func TestRenderNetworkConfigNoRemoteEndpoints(t *testing.T) {
	pods, svcs, gws := multiNetTopology(t)
	data, err := renderNetworkConfig("network2", pods, svcs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(data); strings.Contains(s, "SplitHorizon") || strings.Contains(s, "NetworkGateway") || strings.Contains(s, "network1") {
		t.Errorf("network2 without gateways mentions another network:\n%s", s)
	}
	// Only helloworld-v1 is on network1: drop it and network2 sees no split-horizon workload.
	var rest []podRecord
	for _, p := range pods {
		if p.Name != "helloworld-v1" {
			rest = append(rest, p)
		}
	}
	data, err = renderNetworkConfig("network2", rest, svcs, nil, gws)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(data); strings.Contains(s, "SplitHorizon") || !strings.Contains(s, "NetworkGateway/network1/") {
		t.Errorf("network2 with no endpoint on network1: want network1's gateway and no split-horizon workload:\n%s", s)
	}
}
