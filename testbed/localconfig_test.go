package testbed

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestRenderConfigGolden(t *testing.T) {
	hello := ServiceSpec{Name: "helloworld", Namespace: "sample"}
	svcs := []ServiceSpec{
		{Name: "helloworld-local", Namespace: "sample", VIP: netip.MustParseAddr("10.96.0.11"),
			Ports: map[uint16]uint16{5000: 5000}, RoutingPreference: []string{"Node"}, Mode: "Strict"},
		{Name: "helloworld", Namespace: "sample", VIP: netip.MustParseAddr("10.96.0.10"),
			Ports: map[uint16]uint16{5000: 5000, 80: 5000}, RoutingPreference: []string{"Network", "Region", "Zone", "Subzone"}},
		{Name: "plain", Namespace: "default", VIP: netip.MustParseAddr("10.96.0.12"), Ports: map[uint16]uint16{80: 8080}},
	}
	var recs []serviceRecord
	for _, s := range svcs {
		r, err := newServiceRecord(s)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	pods := []podRecord{
		{Name: "sleep", Namespace: "sample", ServiceAccount: "sleep", Node: "worker1", Cluster: "Kubernetes",
			Locality: localLocality{"region", "zone1", "subzone1"}, IP: netip.MustParseAddr("10.40.1.5"), Enrolled: true},
		{Name: "helloworld-w1", Namespace: "sample", ServiceAccount: "helloworld", Node: "worker1", Cluster: "Kubernetes",
			Locality: localLocality{"region", "zone1", "subzone1"}, IP: netip.MustParseAddr("10.40.1.2"), Enrolled: true,
			Services: map[string]map[uint16]uint16{hello.ConfigKey(): {5000: 5000}, "sample/helloworld-local.sample.svc.cluster.local": {5000: 5000}},
			Labels:   map[string]string{"app": "helloworld", "version": "v1"}},
		{Name: "legacy", Namespace: "default", ServiceAccount: "default", Node: "worker2", Cluster: "Kubernetes",
			IP: netip.MustParseAddr("10.40.2.2")},
		{Name: "hidden", Namespace: "default", ServiceAccount: "default", Node: "worker2", Cluster: "Kubernetes",
			IP: netip.MustParseAddr("10.40.2.3"), OmitFromConfig: true},
	}
	got, err := renderConfig(pods, recs, nil, []string{"", ""})
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "local-config.golden.yaml")
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

func TestRenderConfigEmptyAndNetworks(t *testing.T) {
	got, err := renderConfig(nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("workloads: []\nservices: []\n", string(got)); diff != "" {
		t.Errorf("empty config (-want +got):\n%s", diff)
	}
	r, err := newServiceRecord(ServiceSpec{Name: "a", Namespace: "b", VIP: netip.MustParseAddr("10.96.0.1"), Ports: map[uint16]uint16{1: 2}})
	if err != nil {
		t.Fatal(err)
	}
	got, err = renderConfig(nil, []serviceRecord{r}, nil, []string{"net2", "net1", "net2"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "vips:\n      - net1/10.96.0.1\n      - net2/10.96.0.1\n") {
		t.Errorf("VIP not published once per network:\n%s", got)
	}
}

func TestNewServiceRecordRejects(t *testing.T) {
	ok := ServiceSpec{Name: "s", Namespace: "ns", VIP: netip.MustParseAddr("10.96.0.1"), Ports: map[uint16]uint16{80: 80}}
	tests := []struct {
		name string
		mod  func(*ServiceSpec)
		want string
	}{
		{"no name", func(s *ServiceSpec) { s.Name = "" }, "service name"},
		{"bad namespace", func(s *ServiceSpec) { s.Namespace = "A/B" }, "service namespace"},
		{"no VIP", func(s *ServiceSpec) { s.VIP = netip.Addr{} }, "no VIP"},
		{"no ports", func(s *ServiceSpec) { s.Ports = nil }, "no ports"},
		{"bad preference", func(s *ServiceSpec) { s.RoutingPreference = []string{"Planet"} }, `routing preference "Planet"`},
		{"bad mode", func(s *ServiceSpec) { s.Mode = "Random" }, `mode "Random"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.mod(&s)
			_, err := newServiceRecord(s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("newServiceRecord() error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	r, err := newServiceRecord(ServiceSpec{Name: "s", Namespace: "ns", VIP: netip.MustParseAddr("10.96.0.1"),
		Ports: map[uint16]uint16{80: 80}, RoutingPreference: []string{"Zone"}})
	if err != nil || r.Mode != "Failover" {
		t.Errorf("default mode with preferences = %q, %v; want Failover", r.Mode, err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no nodes", Config{}, "no nodes"},
		{"bad node name", Config{Nodes: []NodeSpec{{Name: "Node_1"}}}, "node name"},
		{"duplicate", Config{Nodes: []NodeSpec{{Name: "a"}, {Name: "a"}}}, "duplicate"},
		{"v6 pods", Config{Nodes: []NodeSpec{{Name: "a"}}, PodSubnet: netip.MustParsePrefix("fd00::/64")}, "pod subnet"},
		{"small pod subnet", Config{Nodes: []NodeSpec{{Name: "a"}}, PodSubnet: netip.MustParsePrefix("10.0.0.0/24")}, "pod subnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.withDefaults().validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate() = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if err := (Config{Nodes: []NodeSpec{{Name: "worker1"}}}).withDefaults().validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestAddressing(t *testing.T) {
	if got := nodeAddr(defaultNodeSubnet, 3); got != netip.MustParseAddr("172.30.0.3") {
		t.Errorf("nodeAddr = %s", got)
	}
	if got := podPrefix(defaultPodSubnet, 2); got != netip.MustParsePrefix("10.40.2.0/24") {
		t.Errorf("podPrefix = %s", got)
	}
	if got := hostAddr(podPrefix(defaultPodSubnet, 2), 7); got != netip.MustParseAddr("10.40.2.7") {
		t.Errorf("hostAddr = %s", got)
	}
}

func TestParseLoadedLine(t *testing.T) {
	tests := []struct {
		line, want string
		ok         bool
	}{
		{`time=2026-01-01T00:00:00Z level=INFO msg="local config loaded" path=/x sha256=ABCdef01 workloads=3`, "abcdef01", true},
		{`{"time":"x","level":"INFO","msg":"local config loaded","sha256":"0123ab"}`, "0123ab", true},
		{`level=INFO msg="config loaded" sha256=0123`, "", false},
		{`level=INFO msg="local config loaded"`, "", false},
	}
	for _, tt := range tests {
		got, ok := parseLoadedLine(tt.line)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseLoadedLine(%q) = %q, %v; want %q, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}
