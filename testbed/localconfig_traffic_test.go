package testbed

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/ztunnel-go/ztunnel/workload"
)

// canaryPolicy is an S4-style policy on helloworld.sample: subsets v3/v4 by version, a 90/10 tcp
// route, outlier detection and a locality distribution.
func canaryPolicy() TrafficPolicy {
	return TrafficPolicy{
		DestinationRules: []DestinationRule{{Name: "helloworld", Namespace: "sample", Spec: &networking.DestinationRule{
			Host: "helloworld",
			TrafficPolicy: &networking.TrafficPolicy{
				OutlierDetection: &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(1),
					Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(time.Minute)},
				LoadBalancer: &networking.LoadBalancerSettings{LocalityLbSetting: &networking.LocalityLoadBalancerSetting{
					Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{{From: "region/*",
						To: map[string]uint32{"region/zone1/*": 90, "region/zone2/*": 10}}}}},
			},
			Subsets: []*networking.Subset{
				{Name: "v3", Labels: map[string]string{"version": "v3"}},
				{Name: "v4", Labels: map[string]string{"version": "v4"}},
			},
		}}},
		VirtualServices: []VirtualService{{Name: "helloworld", Namespace: "sample", Spec: &networking.VirtualService{
			Hosts: []string{"helloworld"},
			Tcp: []*networking.TCPRoute{{
				Match: []*networking.L4MatchAttributes{{Port: 5000}},
				Route: []*networking.RouteDestination{
					{Destination: &networking.Destination{Host: "helloworld", Subset: "v3"}, Weight: 90},
					{Destination: &networking.Destination{Host: "helloworld", Subset: "v4"}, Weight: 10},
				}}},
		}}},
	}
}

// TestRenderTrafficParses checks the rendered traffic policy, appended to a rendered config,
// against the proxy's own local config parser.
func TestRenderTrafficParses(t *testing.T) {
	pods, svcs, pols, nets := testTopology(t)
	data, err := renderConfig(pods, svcs, pols, nets)
	if err != nil {
		t.Fatal(err)
	}
	traffic, err := renderTraffic(canaryPolicy())
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, traffic...)
	cfg, err := workload.ParseLocalConfig("rendered", data)
	if err != nil {
		t.Fatalf("ParseLocalConfig: %v\n%s", err, data)
	}
	if len(cfg.Workloads) != 3 || len(cfg.Services) != 3 || len(cfg.Policies) != 4 {
		t.Errorf("parsed %d workloads, %d services, %d policies, want 3, 3, 4: the traffic keys displaced the rest",
			len(cfg.Workloads), len(cfg.Services), len(cfg.Policies))
	}
	const host = "helloworld.sample.svc.cluster.local"
	if len(cfg.DestinationRules) != 1 || len(cfg.VirtualServices) != 1 {
		t.Fatalf("parsed %d destination rules and %d virtual services, want 1 and 1\n%s", len(cfg.DestinationRules), len(cfg.VirtualServices), data)
	}
	dr := cfg.DestinationRules[0]
	type rule struct {
		Name, Namespace, Host string
		Outlier               [3]any // consecutive 5xx, interval, base ejection time
		Distribute            []workload.LocalityDistribution
		Subsets               map[string]map[string]string
	}
	got := rule{Name: dr.Name, Namespace: dr.Namespace, Host: dr.Host, Subsets: map[string]map[string]string{}}
	if o := dr.Policy.Outlier; o != nil {
		got.Outlier = [3]any{o.Consecutive5xx, o.Interval, o.BaseEjectionTime}
	}
	if l := dr.Policy.Locality; l != nil {
		got.Distribute = l.Distribute
	}
	for _, s := range dr.Subsets {
		got.Subsets[s.Name] = s.Labels
	}
	want := rule{Name: "helloworld", Namespace: "sample", Host: host,
		Outlier: [3]any{uint32(1), time.Second, time.Minute},
		Distribute: []workload.LocalityDistribution{{From: "region/*",
			To: []workload.LocalityWeight{{Locality: "region/zone1/*", Weight: 90}, {Locality: "region/zone2/*", Weight: 10}}}},
		Subsets: map[string]map[string]string{"v3": {"version": "v3"}, "v4": {"version": "v4"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parsed destination rule (-want +got):\n%s\n%s", diff, data)
	}
	vs := cfg.VirtualServices[0]
	wantRoute := []*workload.TCPRoute{{Ports: []uint16{5000}, Destinations: []workload.RouteDestination{
		{Host: host, Subset: "v3", Weight: 90}, {Host: host, Subset: "v4", Weight: 10}}}}
	if diff := cmp.Diff(wantRoute, vs.TCP); vs.Name != "helloworld" || diff != "" {
		t.Errorf("parsed virtual service %s/%s, tcp routes (-want +got):\n%s", vs.Namespace, vs.Name, diff)
	}
}

func TestRenderTrafficEmpty(t *testing.T) {
	b, err := renderTraffic(TrafficPolicy{})
	if err != nil || b != nil {
		t.Errorf("renderTraffic(empty) = %q, %v; want nothing", b, err)
	}
}

// TestRenderTrafficRejects checks that bad objects are refused with an error naming the object
// and what is wrong, before anything is written.
func TestRenderTrafficRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*TrafficPolicy)
		want   string
	}{
		{"no spec", func(tp *TrafficPolicy) { tp.DestinationRules[0].Spec = nil }, "destination rule 0 (sample/helloworld): no spec"},
		{"bad name", func(tp *TrafficPolicy) { tp.VirtualServices[0].Name = "Hello_World" }, `name "Hello_World"`},
		{"no namespace", func(tp *TrafficPolicy) { tp.DestinationRules[0].Namespace = "" }, `namespace ""`},
		{"weights not 100", func(tp *TrafficPolicy) { tp.VirtualServices[0].Spec.Tcp[0].Route[1].Weight = 20 },
			"virtual service sample/helloworld: tcp[0].route"},
		{"negative weight", func(tp *TrafficPolicy) { tp.VirtualServices[0].Spec.Tcp[0].Route[1].Weight = -10 },
			"virtual service sample/helloworld: tcp[0].route[1].weight"},
		{"unknown subset", func(tp *TrafficPolicy) { tp.VirtualServices[0].Spec.Tcp[0].Route[1].Destination.Subset = "v5" }, `"v5"`},
		{"unknown label", func(tp *TrafficPolicy) {
			tp.DestinationRules[0].Spec.Subsets[0].Labels = map[string]string{"tier": "gold"}
		},
			`unknown label "tier"`},
		{"no host", func(tp *TrafficPolicy) { tp.DestinationRules[0].Spec.Host = "" }, "destination rule sample/helloworld: host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := canaryPolicy()
			tc.modify(&tp)
			b, err := renderTraffic(tp)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("renderTraffic = %v (%d bytes), want an error containing %q", err, len(b), tc.want)
			}
		})
	}
}

// testConfigCluster is a Cluster without namespaces or proxies that writes its configs in a
// temporary directory: one shared file, or one per network if networks are given.
func testConfigCluster(t *testing.T, networks ...string) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{log: slog.New(slog.NewTextHandler(io.Discard, nil)), dir: dir, pods: map[string]*Pod{},
		services: map[string]serviceRecord{}, policies: map[string]policyRecord{}, lastHash: map[string]string{}}
	if len(networks) == 0 {
		c.configPath = filepath.Join(dir, "local-config.yaml")
	} else {
		c.netConfigPaths = map[string]string{}
		for _, n := range networks {
			c.netConfigPaths[n] = filepath.Join(dir, "local-config-"+n+".yaml")
			c.cfg.Nodes = append(c.cfg.Nodes, NodeSpec{Name: "node-" + n, Network: n})
		}
	}
	hello, err := newServiceRecord(ServiceSpec{Name: "helloworld", Namespace: "sample", VIP: netip.MustParseAddr("10.96.0.40"),
		Ports: map[uint16]uint16{5000: 5000}})
	if err != nil {
		t.Fatal(err)
	}
	c.services["sample/helloworld"] = hello
	return c
}

// TestSetTrafficPolicyWritesEveryConfig checks that the traffic policy reaches every network's
// config file (and the shared one), stays there when the config is rewritten for other reasons,
// and goes away when emptied.
func TestSetTrafficPolicyWritesEveryConfig(t *testing.T) {
	for _, networks := range [][]string{nil, {"network1", "network2"}} {
		c := testConfigCluster(t, networks...)
		paths := []string{c.configPath}
		if networks != nil {
			paths = []string{c.netConfigPaths["network1"], c.netConfigPaths["network2"]}
		}
		parse := func(path string) *workload.LocalConfig {
			t.Helper()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := workload.ParseLocalConfig(path, b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			return cfg
		}
		ctx := context.Background()
		if err := c.SetTrafficPolicy(ctx, canaryPolicy()); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteConfig(); err != nil { // e.g. a pod was added
			t.Fatal(err)
		}
		for _, p := range paths {
			if cfg := parse(p); len(cfg.DestinationRules) != 1 || len(cfg.VirtualServices) != 1 || len(cfg.Services) != 1 {
				t.Errorf("%s: %d destination rules, %d virtual services, %d services; want 1 each", filepath.Base(p),
					len(cfg.DestinationRules), len(cfg.VirtualServices), len(cfg.Services))
			}
		}
		good := c.traffic
		bad := canaryPolicy()
		bad.VirtualServices[0].Spec.Tcp[0].Route[0].Weight = 80
		if err := c.SetTrafficPolicy(ctx, bad); err == nil {
			t.Error("SetTrafficPolicy accepted weights summing to 90")
		}
		if !bytes.Equal(c.traffic, good) {
			t.Error("a refused policy replaced the last good one")
		}
		if err := c.SetTrafficPolicy(ctx, TrafficPolicy{}); err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if cfg := parse(p); len(cfg.DestinationRules) != 0 || len(cfg.VirtualServices) != 0 {
				t.Errorf("%s: traffic policy still there after SetTrafficPolicy(empty)", filepath.Base(p))
			}
		}
	}
}

func TestSetTrafficPolicyControlPlane(t *testing.T) {
	c := testConfigCluster(t)
	c.istiod = &Istiod{}
	if err := c.SetTrafficPolicy(context.Background(), canaryPolicy()); err == nil || !strings.Contains(err.Error(), "ControlPlane") {
		t.Errorf("SetTrafficPolicy with the fake istiod = %v, want an error naming Config.ControlPlane", err)
	}
}
