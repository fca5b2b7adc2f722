package workload

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protojson"
	networking "istio.io/api/networking/v1alpha3"
)

// drSpec parses a DestinationRule spec from protojson.
func drSpec(t testing.TB, js string) *networking.DestinationRule {
	t.Helper()
	var s networking.DestinationRule
	if err := protojson.Unmarshal([]byte(js), &s); err != nil {
		t.Fatalf("spec %s: %v", js, err)
	}
	return &s
}

// vsSpec parses a VirtualService spec from protojson.
func vsSpec(t testing.TB, js string) *networking.VirtualService {
	t.Helper()
	var s networking.VirtualService
	if err := protojson.Unmarshal([]byte(js), &s); err != nil {
		t.Fatalf("spec %s: %v", js, err)
	}
	return &s
}

func namedDR(t testing.TB, name, js string) *NamedDestinationRule {
	return &NamedDestinationRule{Name: name, Namespace: "default", Spec: drSpec(t, js)}
}

func namedVS(t testing.TB, name, js string) *NamedVirtualService {
	return &NamedVirtualService{Name: name, Namespace: "default", Spec: vsSpec(t, js)}
}

// cmpTraffic compares compiled policies, without the sources.
var cmpTraffic = cmp.Options{
	cmpopts.IgnoreFields(DestinationPolicy{}, "Source"),
	cmpopts.IgnoreFields(RoutePolicy{}, "Source"),
	cmpopts.EquateEmpty(),
}

// defaultOutlier is outlierDetection: {} compiled.
func defaultOutlier() *OutlierPolicy {
	return &OutlierPolicy{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second,
		MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 10}
}

func TestCompileOutlierDetection(t *testing.T) {
	tests := []struct {
		name, od string
		want     func(o *OutlierPolicy)
	}{
		{"all defaults", `{}`, func(o *OutlierPolicy) {}},
		{"consecutive5xxErrors", `{"consecutive5xxErrors": 1}`, func(o *OutlierPolicy) { o.Consecutive5xx = 1 }},
		{"consecutive5xxErrors 0 is off", `{"consecutive5xxErrors": 0}`, func(o *OutlierPolicy) { o.Consecutive5xx = 0 }},
		{"deprecated consecutiveErrors", `{"consecutiveErrors": 3}`, func(o *OutlierPolicy) { o.Consecutive5xx = 3 }},
		{"consecutive5xxErrors wins over consecutiveErrors", `{"consecutiveErrors": 3, "consecutive5xxErrors": 2}`,
			func(o *OutlierPolicy) { o.Consecutive5xx = 2 }},
		{"consecutiveGatewayErrors", `{"consecutiveGatewayErrors": 2}`, func(o *OutlierPolicy) { o.ConsecutiveGateway = 2 }},
		{"split, local origin default", `{"splitExternalLocalOriginErrors": true}`,
			func(o *OutlierPolicy) { o.SplitLocalOrigin, o.ConsecutiveLocalOrigin = true, 5 }},
		{"split, local origin set", `{"splitExternalLocalOriginErrors": true, "consecutiveLocalOriginFailures": 2}`,
			func(o *OutlierPolicy) { o.SplitLocalOrigin, o.ConsecutiveLocalOrigin = true, 2 }},
		{"split, local origin 0 is off", `{"splitExternalLocalOriginErrors": true, "consecutiveLocalOriginFailures": 0}`,
			func(o *OutlierPolicy) { o.SplitLocalOrigin, o.ConsecutiveLocalOrigin = true, 0 }},
		{"local origin without split has no effect", `{"consecutiveLocalOriginFailures": 2}`, func(o *OutlierPolicy) {}},
		{"interval", `{"interval": "1s"}`, func(o *OutlierPolicy) { o.Interval = time.Second }},
		{"base ejection time below 300s", `{"baseEjectionTime": "60s"}`, func(o *OutlierPolicy) { o.BaseEjectionTime = time.Minute }},
		{"base ejection time above 300s raises the max", `{"baseEjectionTime": "600s"}`,
			func(o *OutlierPolicy) { o.BaseEjectionTime, o.MaxEjectionTime = 10*time.Minute, 10*time.Minute }},
		{"maxEjectionPercent", `{"maxEjectionPercent": 100}`, func(o *OutlierPolicy) { o.MaxEjectionPercent = 100 }},
		{"maxEjectionPercent 0 is 10", `{"maxEjectionPercent": 0}`, func(o *OutlierPolicy) {}},
		{"minHealthPercent", `{"minHealthPercent": 50}`, func(o *OutlierPolicy) { o.MinHealthPercent = 50 }},
		{"http error codes ignored", `{"outlierDetectionHttpErrorCodes": [500]}`, func(o *OutlierPolicy) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds, _, err := CompileTraffic([]*NamedDestinationRule{namedDR(t, "r", `{"host": "reviews", "trafficPolicy": {"outlierDetection": `+tc.od+`}}`)}, nil, TrafficOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := defaultOutlier()
			tc.want(want)
			if diff := cmp.Diff(want, ds[0].Policy.Outlier); diff != "" {
				t.Errorf("outlier (-want +got):\n%s", diff)
			}
		})
	}
	ds, _, err := CompileTraffic([]*NamedDestinationRule{namedDR(t, "r", `{"host": "reviews"}`)}, nil, TrafficOptions{})
	if err != nil || ds[0].Policy.Outlier != nil || ds[0].Policy.Locality != nil {
		t.Errorf("no trafficPolicy: %+v, %v; want no outlier detection and no locality settings", ds, err)
	}
}

func TestCompileLocality(t *testing.T) {
	tests := []struct {
		name, lb string
		want     *LocalityPolicy
	}{
		{"empty is enabled", `{}`, &LocalityPolicy{Enabled: true}},
		{"disabled", `{"enabled": false}`, &LocalityPolicy{}},
		{"explicitly enabled", `{"enabled": true}`, &LocalityPolicy{Enabled: true}},
		{"distribute", `{"distribute": [{"from": "hangzhou/*", "to": {"shanghai/*": 10, "hangzhou/*": 90}}, {"from": "shanghai", "to": {"shanghai/z1/s1": 100}}]}`,
			&LocalityPolicy{Enabled: true, Distribute: []LocalityDistribution{
				{From: "hangzhou/*", To: []LocalityWeight{{"hangzhou/*", 90}, {"shanghai/*", 10}}},
				{From: "shanghai", To: []LocalityWeight{{"shanghai/z1/s1", 100}}},
			}}},
		{"distribute with a zero weight", `{"distribute": [{"from": "*", "to": {"a": 100, "b": 0}}]}`,
			&LocalityPolicy{Enabled: true, Distribute: []LocalityDistribution{{From: "*", To: []LocalityWeight{{"a", 100}, {"b", 0}}}}}},
		{"failover", `{"failover": [{"from": "hangzhou", "to": "shanghai"}, {"from": "shanghai", "to": "hangzhou"}]}`,
			&LocalityPolicy{Enabled: true, Failover: []LocalityFailover{{"hangzhou", "shanghai"}, {"shanghai", "hangzhou"}}}},
		{"failoverPriority", `{"failoverPriority": ["topology.istio.io/network", "topology.istio.io/cluster=cluster1", "topology.kubernetes.io/region"]}`,
			&LocalityPolicy{Enabled: true, FailoverPriority: []string{"topology.istio.io/network", "topology.istio.io/cluster=cluster1", "topology.kubernetes.io/region"}}},
		{"failover with non-topology failoverPriority", `{"failover": [{"from": "a", "to": "b"}], "failoverPriority": ["topology.istio.io/cluster"]}`,
			&LocalityPolicy{Enabled: true, Failover: []LocalityFailover{{"a", "b"}}, FailoverPriority: []string{"topology.istio.io/cluster"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds, _, err := CompileTraffic([]*NamedDestinationRule{namedDR(t, "r",
				`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": `+tc.lb+`}}}`)}, nil, TrafficOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, ds[0].Policy.Locality, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("locality (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCompileHosts(t *testing.T) {
	tests := []struct{ host, opts, want string }{
		{"reviews", "", "reviews.default.svc.cluster.local"},
		{"reviews", "example.net", "reviews.default.svc.example.net"},
		{"reviews.other", "", "reviews.other"}, // a dot: taken as written, as Istio does
		{"reviews.other.svc.cluster.local", "", "reviews.other.svc.cluster.local"},
		{"10.0.0.1", "", "10.0.0.1"},
		{"fd00::1", "", "fd00::1"},
	}
	for _, tc := range tests {
		opts := TrafficOptions{DomainSuffix: tc.opts}
		ds, rs, err := CompileTraffic([]*NamedDestinationRule{namedDR(t, "r", `{"host": "`+tc.host+`"}`)},
			[]*NamedVirtualService{namedVS(t, "v", `{"hosts": ["`+tc.host+`"], "tcp": [{"route": [{"destination": {"host": "`+tc.host+`"}}]}]}`)}, opts)
		if err != nil {
			t.Errorf("%q: %v", tc.host, err)
			continue
		}
		if ds[0].Host != tc.want || rs[0].Hosts[0] != tc.want || rs[0].TCP[0].Destinations[0].Host != tc.want {
			t.Errorf("%q (suffix %q): rule host %q, service host %q, destination %q; want %q", tc.host, tc.opts,
				ds[0].Host, rs[0].Hosts[0], rs[0].TCP[0].Destinations[0].Host, tc.want)
		}
	}
}

func TestCompileSubsets(t *testing.T) {
	ruleOutlier := &OutlierPolicy{Consecutive5xx: 1, Interval: time.Second, BaseEjectionTime: time.Minute, MaxEjectionTime: 5 * time.Minute, MaxEjectionPercent: 10}
	subsetOutlier := defaultOutlier()
	subsetOutlier.Consecutive5xx = 7
	ruleLocality := &LocalityPolicy{Enabled: true, FailoverPriority: []string{"topology.istio.io/cluster"}}
	ds, _, err := CompileTraffic([]*NamedDestinationRule{namedDR(t, "r", `{
		"host": "reviews",
		"trafficPolicy": {
			"outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "60s"},
			"loadBalancer": {"localityLbSetting": {"failoverPriority": ["topology.istio.io/cluster"]}}
		},
		"subsets": [
			{"name": "v1", "labels": {"version": "v1"}},
			{"name": "v2", "labels": {"version": "v2", "app": "reviews"}, "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 7}}},
			{"name": "v3", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}},
			{"name": "v4", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"enabled": false}}, "connectionPool": {"tcp": {"maxConnections": 1}}}}
		]}`)}, nil, TrafficOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := &DestinationPolicy{Name: "r", Namespace: "default", Host: "reviews.default.svc.cluster.local",
		Policy: TrafficSettings{Outlier: ruleOutlier, Locality: ruleLocality},
		Subsets: []*Subset{
			// Nothing of its own: the rule's settings.
			{Name: "v1", Labels: map[string]string{"version": "v1"}, Policy: TrafficSettings{Outlier: ruleOutlier, Locality: ruleLocality}},
			// Its own outlier detection replaces the rule's whole (defaults, not the rule's fields).
			{Name: "v2", Labels: map[string]string{"version": "v2", "app": "reviews"}, Policy: TrafficSettings{Outlier: subsetOutlier, Locality: ruleLocality}},
			// A loadBalancer without localityLbSetting replaces the rule's loadBalancer: nothing said.
			{Name: "v3", Policy: TrafficSettings{Outlier: ruleOutlier}},
			{Name: "v4", Policy: TrafficSettings{Outlier: ruleOutlier, Locality: &LocalityPolicy{}}},
		}}
	if diff := cmp.Diff(want, ds[0], cmpTraffic); diff != "" {
		t.Errorf("compiled rule (-want +got):\n%s", diff)
	}
	if ds[0].Source == nil {
		t.Error("Source not set")
	}
}

func TestCompileVirtualService(t *testing.T) {
	dr := namedDR(t, "reviews", `{"host": "reviews", "subsets": [{"name": "v3", "labels": {"version": "v3"}}, {"name": "v4", "labels": {"version": "v4"}}]}`)
	const host = "reviews.default.svc.cluster.local"
	tests := []struct {
		name, vs string
		want     *RoutePolicy // nil: ignored
	}{
		{"canary 90/10", `{"hosts": ["reviews"], "tcp": [{"match": [{"port": 9080}], "route": [
			{"destination": {"host": "reviews", "subset": "v3"}, "weight": 90},
			{"destination": {"host": "reviews", "subset": "v4", "port": {"number": 9081}}, "weight": 10}]}]}`,
			&RoutePolicy{Name: "v", Namespace: "default", Hosts: []string{host}, TCP: []*TCPRoute{{Ports: []uint16{9080},
				Destinations: []RouteDestination{{Host: host, Subset: "v3", Weight: 90}, {Host: host, Subset: "v4", Port: 9081, Weight: 10}}}}}},
		{"single destination without weight", `{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`,
			&RoutePolicy{Name: "v", Namespace: "default", Hosts: []string{host}, TCP: []*TCPRoute{{Destinations: []RouteDestination{{Host: host, Weight: 100}}}}}},
		{"single destination with any weight gets all", `{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews"}, "weight": 30}]}]}`,
			&RoutePolicy{Name: "v", Namespace: "default", Hosts: []string{host}, TCP: []*TCPRoute{{Destinations: []RouteDestination{{Host: host, Weight: 100}}}}}},
		{"zero weight among several", `{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews", "subset": "v3"}, "weight": 100}, {"destination": {"host": "reviews", "subset": "v4"}}]}]}`,
			&RoutePolicy{Name: "v", Namespace: "default", Hosts: []string{host}, TCP: []*TCPRoute{{
				Destinations: []RouteDestination{{Host: host, Subset: "v3", Weight: 100}, {Host: host, Subset: "v4"}}}}}},
		{"several ports, several routes", `{"hosts": ["reviews", "other.example.com"], "tcp": [
			{"match": [{"port": 1}, {"port": 2}, {"port": 1}], "route": [{"destination": {"host": "reviews"}}]},
			{"route": [{"destination": {"host": "other.example.com"}}]}]}`,
			&RoutePolicy{Name: "v", Namespace: "default", Hosts: []string{host, "other.example.com"}, TCP: []*TCPRoute{
				{Ports: []uint16{1, 2}, Destinations: []RouteDestination{{Host: host, Weight: 100}}},
				{Destinations: []RouteDestination{{Host: "other.example.com", Weight: 100}}}}}},
		{"a match without port matches any port", `{"hosts": ["reviews"], "tcp": [{"match": [{"port": 1}, {}], "route": [{"destination": {"host": "reviews"}}]}]}`,
			&RoutePolicy{Name: "v", Namespace: "default", Hosts: []string{host}, TCP: []*TCPRoute{{Destinations: []RouteDestination{{Host: host, Weight: 100}}}}}},
		{"mesh among gateways", `{"hosts": ["reviews"], "gateways": ["gw", "mesh"], "tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`,
			&RoutePolicy{Name: "v", Namespace: "default", Hosts: []string{host}, TCP: []*TCPRoute{{Destinations: []RouteDestination{{Host: host, Weight: 100}}}}}},
		{"http only: ignored", `{"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v9"}}]}]}`, nil},
		{"tls only: ignored", `{"hosts": ["reviews"], "tls": [{"match": [{"sniHosts": ["a"]}], "route": [{"destination": {"host": "reviews"}}]}]}`, nil},
		{"gateways only: ignored", `{"hosts": ["reviews"], "gateways": ["istio-system/gw"], "tcp": [{"route": [{"destination": {"host": "reviews", "subset": "v9"}}]}]}`, nil},
		{"http routes beside tcp ones are ignored", `{"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "x", "subset": "v9"}, "weight": 3}]}],
			"tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`,
			&RoutePolicy{Name: "v", Namespace: "default", Hosts: []string{host}, TCP: []*TCPRoute{{Destinations: []RouteDestination{{Host: host, Weight: 100}}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, rs, err := CompileTraffic([]*NamedDestinationRule{dr}, []*NamedVirtualService{namedVS(t, "v", tc.vs)}, TrafficOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var got *RoutePolicy
			if len(rs) > 0 {
				got = rs[0]
			}
			if diff := cmp.Diff(tc.want, got, cmpTraffic); diff != "" {
				t.Errorf("compiled service (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCompileTrafficErrors: every refusal names the object, the field and the value.
func TestCompileTrafficErrors(t *testing.T) {
	const good = `{"host": "reviews", "subsets": [{"name": "v3", "labels": {"version": "v3"}}]}`
	tests := []struct {
		name     string
		drs, vss []string
		kind     string // of the error's object
		field    string
		msg      string
	}{
		// Destination rules.
		{"empty host", []string{`{"subsets": []}`}, nil, kindDestinationRule, "host", "empty host"},
		{"wildcard host", []string{`{"host": "*.example.com"}`}, nil, kindDestinationRule, "host", `wildcard host "*.example.com" is not supported`},
		{"bare wildcard host", []string{`{"host": "*"}`}, nil, kindDestinationRule, "host", `wildcard host "*"`},
		{"host with a slash", []string{`{"host": "ns/reviews"}`}, nil, kindDestinationRule, "host", `invalid host "ns/reviews"`},
		{"workload selector", []string{`{"host": "reviews", "workloadSelector": {"matchLabels": {"a": "b"}}}`}, nil, kindDestinationRule, "workloadSelector", "not supported"},
		{"port-level outlier", []string{`{"host": "reviews", "trafficPolicy": {"portLevelSettings": [{"port": {"number": 80}, "outlierDetection": {}}]}}`}, nil,
			kindDestinationRule, "trafficPolicy.portLevelSettings[0].outlierDetection", "per-port outlier detection is not supported"},
		{"port-level locality in a subset", []string{`{"host": "reviews", "subsets": [{"name": "a", "trafficPolicy": {"portLevelSettings": [{"loadBalancer": {"localityLbSetting": {}}}]}}]}`}, nil,
			kindDestinationRule, "subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.localityLbSetting", "per-port locality settings"},
		{"subset without name", []string{`{"host": "reviews", "subsets": [{"labels": {"version": "v1"}}]}`}, nil, kindDestinationRule, "subsets[0].name", "missing subset name"},
		{"duplicate subset", []string{`{"host": "reviews", "subsets": [{"name": "v1"}, {"name": "v2"}, {"name": "v1"}]}`}, nil,
			kindDestinationRule, "subsets[2].name", `duplicate subset name "v1" (also subsets[0])`},
		{"empty label key", []string{`{"host": "reviews", "subsets": [{"name": "v1", "labels": {"": "x"}}]}`}, nil, kindDestinationRule, "subsets[0].labels", "empty label key"},
		{"unknown subset label", []string{`{"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1", "tier": "gold"}}]}`}, nil,
			kindDestinationRule, "subsets[0].labels.tier", `unknown label "tier"`},
		{"unknown label with a dotted key", []string{`{"host": "reviews", "subsets": [{"name": "v1", "labels": {"example.com/tier": "gold"}}]}`}, nil,
			kindDestinationRule, `subsets[0].labels["example.com/tier"]`, `unknown label "example.com/tier"`},
		{"unknown failoverPriority label", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failoverPriority": ["topology.istio.io/cluster", "rack=r1"]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[1]", `unknown label "rack"`},
		{"unknown failoverPriority label in a subset", []string{`{"host": "reviews", "subsets": [{"name": "a", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failoverPriority": ["rack"]}}}}]}`}, nil,
			kindDestinationRule, "subsets[0].trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[0]", `unknown label "rack"`},
		{"empty failoverPriority label", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failoverPriority": ["=x"]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[0]", `invalid label "=x"`},
		{"two rules for one host", []string{good, `{"host": "reviews.default.svc.cluster.local"}`}, nil,
			kindDestinationRule, "host", `host "reviews.default.svc.cluster.local" already has destination rule default/r0`},
		{"negative consecutiveErrors", []string{`{"host": "reviews", "trafficPolicy": {"outlierDetection": {"consecutiveErrors": -1}}}`}, nil,
			kindDestinationRule, "trafficPolicy.outlierDetection.consecutiveErrors", "negative value -1"},
		{"interval too short", []string{`{"host": "reviews", "trafficPolicy": {"outlierDetection": {"interval": "0s"}}}`}, nil,
			kindDestinationRule, "trafficPolicy.outlierDetection.interval", "too short"},
		{"negative base ejection time", []string{`{"host": "reviews", "trafficPolicy": {"outlierDetection": {"baseEjectionTime": "-1s"}}}`}, nil,
			kindDestinationRule, "trafficPolicy.outlierDetection.baseEjectionTime", "too short"},
		{"maxEjectionPercent over 100", []string{`{"host": "reviews", "trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 101}}}`}, nil,
			kindDestinationRule, "trafficPolicy.outlierDetection.maxEjectionPercent", "101 is not a percentage"},
		{"negative minHealthPercent", []string{`{"host": "reviews", "trafficPolicy": {"outlierDetection": {"minHealthPercent": -5}}}`}, nil,
			kindDestinationRule, "trafficPolicy.outlierDetection.minHealthPercent", "-5 is not a percentage"},
		{"distribute and failover", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a", "to": {"a": 100}}], "failover": [{"from": "a", "to": "b"}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting", "distribute and failover cannot both be set"},
		{"distribute weights not 100", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a/*", "to": {"a/*": 80, "b/*": 10}}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "weights sum to 90, want 100"},
		{"distribute weights overflow", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a/*", "to": {"a/*": 4294967295, "b/*": 101}}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "weights sum to 4294967396, want 100"},
		{"distribute to nothing", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a"}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "no localities"},
		{"distribute bad from", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a/*/b", "to": {"a": 100}}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from", `invalid locality "a/*/b"`},
		{"distribute partial wildcard", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "us-*", "to": {"a": 100}}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from", `invalid locality "us-*"`},
		{"distribute empty from", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"to": {"a": 100}}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from", `invalid locality ""`},
		{"distribute too deep", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a", "to": {"a/b/c/d": 100}}]}}}}`}, nil,
			kindDestinationRule, `trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to["a/b/c/d"]`, `invalid locality "a/b/c/d"`},
		{"distribute overlapping from", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a/z1", "to": {"a": 100}}, {"from": "a/*", "to": {"a": 100}}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.distribute[1].from", `locality "a/*" overlaps distribute[0].from "a/z1"`},
		{"distribute overlapping to", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a", "to": {"a": 50, "a/z1": 50}}]}}}}`}, nil,
			kindDestinationRule, `trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to["a/z1"]`, `locality "a/z1" overlaps "a"`},
		{"failover to itself", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "a"}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.failover[0]", `from and to are the same region "a"`},
		{"failover to a zone", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "b/z1"}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.failover[0].to", `"b/z1" is not a region`},
		{"failover without from", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failover": [{"to": "b"}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.failover[0].from", "missing region"},
		{"failover from twice", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"}]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.failover[1].from", `region "a" already has a failover (failover[0])`},
		{"failover with a topology failoverPriority", []string{`{"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "b"}], "failoverPriority": ["topology.kubernetes.io/zone"]}}}}`}, nil,
			kindDestinationRule, "trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[0]", "cannot be used with failover"},

		// Virtual services.
		{"no hosts", []string{good}, []string{`{"tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`}, kindVirtualService, "hosts", "no hosts"},
		{"empty host in hosts", []string{good}, []string{`{"hosts": ["reviews", ""], "tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`},
			kindVirtualService, "hosts[1]", "empty host"},
		{"wildcard in hosts", []string{good}, []string{`{"hosts": ["*"], "tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`},
			kindVirtualService, "hosts[0]", "wildcard host"},
		{"host listed twice", []string{good}, []string{`{"hosts": ["reviews", "reviews.default.svc.cluster.local"], "tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`},
			kindVirtualService, "hosts[1]", `listed twice (also hosts[0])`},
		{"no route", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"match": [{"port": 80}]}]}`}, kindVirtualService, "tcp[0].route", "no destinations"},
		{"no destination", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"route": [{"weight": 100}]}]}`},
			kindVirtualService, "tcp[0].route[0].destination", "missing destination"},
		{"empty destination host", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"subset": "v3"}}]}]}`},
			kindVirtualService, "tcp[0].route[0].destination.host", "empty host"},
		{"weights under 100", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews"}, "weight": 60}, {"destination": {"host": "reviews", "subset": "v3"}, "weight": 30}]}]}`},
			kindVirtualService, "tcp[0].route", "weights sum to 90, want 100 (60 + 30)"},
		{"weights omitted among several", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews"}}, {"destination": {"host": "reviews", "subset": "v3"}}]}]}`},
			kindVirtualService, "tcp[0].route", "weights sum to 0, want 100 (0 + 0)"},
		{"negative weight", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews"}, "weight": 110}, {"destination": {"host": "reviews", "subset": "v3"}, "weight": -10}]}]}`},
			kindVirtualService, "tcp[0].route[1].weight", "negative weight -10"},
		{"negative weight of a single destination", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]}`},
			kindVirtualService, "tcp[0].route[0].weight", "negative weight -1"},
		{"port out of range", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"match": [{"port": 70000}], "route": [{"destination": {"host": "reviews"}}]}]}`},
			kindVirtualService, "tcp[0].match[0].port", "port 70000 out of range"},
		{"destination port out of range", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews", "port": {"number": 65536}}}]}]}`},
			kindVirtualService, "tcp[0].route[0].destination.port.number", "port 65536 out of range"},
		{"match on source labels", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"match": [{"sourceLabels": {"a": "b"}}], "route": [{"destination": {"host": "reviews"}}]}]}`},
			kindVirtualService, "tcp[0].match[0].sourceLabels", "not supported by the node proxy"},
		{"match on destination subnets", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"match": [{"port": 1, "destinationSubnets": ["10.0.0.0/8"]}], "route": [{"destination": {"host": "reviews"}}]}]}`},
			kindVirtualService, "tcp[0].match[0].destinationSubnets", "not supported"},
		{"match on source namespace", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"match": [{"sourceNamespace": "a"}], "route": [{"destination": {"host": "reviews"}}]}]}`},
			kindVirtualService, "tcp[0].match[0].sourceNamespace", "not supported"},
		{"unknown subset", []string{good}, []string{`{"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "reviews", "subset": "v3"}, "weight": 90}, {"destination": {"host": "reviews", "subset": "v5"}, "weight": 10}]}]}`},
			kindVirtualService, "tcp[0].route[1].destination.subset", `subset "v5" of host "reviews.default.svc.cluster.local" is not defined by destination rule default/r0 (it defines "v3")`},
		{"subset of a host without rule", []string{good}, []string{`{"hosts": ["ratings"], "tcp": [{"route": [{"destination": {"host": "ratings", "subset": "v1"}}]}]}`},
			kindVirtualService, "tcp[0].route[0].destination.subset", `subset "v1" of host "ratings.default.svc.cluster.local": no destination rule for that host defines subsets`},
		{"two services for one host", []string{good}, []string{`{"hosts": ["a.example.com"], "tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`,
			`{"hosts": ["b.example.com", "a.example.com"], "tcp": [{"route": [{"destination": {"host": "reviews"}}]}]}`},
			kindVirtualService, "hosts[1]", `host "a.example.com" is already routed by virtual service default/v0`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var drs []*NamedDestinationRule
			for i, js := range tc.drs {
				drs = append(drs, &NamedDestinationRule{Name: "r" + string(rune('0'+i)), Namespace: "default", Spec: drSpec(t, js)})
			}
			var vss []*NamedVirtualService
			for i, js := range tc.vss {
				vss = append(vss, &NamedVirtualService{Name: "v" + string(rune('0'+i)), Namespace: "default", Spec: vsSpec(t, js)})
			}
			ds, rs, err := CompileTraffic(drs, vss, TrafficOptions{})
			var te *TrafficError
			if !errors.As(err, &te) {
				t.Fatalf("error = %v, want a *TrafficError", err)
			}
			if te.Kind != tc.kind || te.Field != tc.field || !strings.Contains(te.Err.Error(), tc.msg) {
				t.Errorf("error %q: kind %q, field %q; want kind %q, field %q, message containing %q", err, te.Kind, te.Field, tc.kind, tc.field, tc.msg)
			}
			if want := te.Kind + " default/" + te.Name + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			// What is left always indexes.
			if _, err := NewTrafficIndex(ds, rs); err != nil {
				t.Errorf("the policies CompileTraffic kept do not index: %v", err)
			}
		})
	}
}

// A refused object does not take the others with it, except what depends on it; every problem
// is reported.
func TestCompileTrafficKeepsTheRest(t *testing.T) {
	drs := []*NamedDestinationRule{
		namedDR(t, "good", `{"host": "good", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}`),
		namedDR(t, "bad", `{"host": "bad", "subsets": [{"name": "v1", "labels": {"tier": "x"}}]}`),
		namedDR(t, "second", `{"host": "good"}`),
	}
	vss := []*NamedVirtualService{
		namedVS(t, "to-good", `{"hosts": ["good"], "tcp": [{"route": [{"destination": {"host": "good", "subset": "v1"}}]}]}`),
		namedVS(t, "to-bad", `{"hosts": ["bad"], "tcp": [{"route": [{"destination": {"host": "bad", "subset": "v1"}}]}]}`),
		namedVS(t, "weights", `{"hosts": ["w"], "tcp": [{"route": [{"destination": {"host": "w"}, "weight": 1}, {"destination": {"host": "w"}, "weight": 1}]}]}`),
	}
	ds, rs, err := CompileTraffic(drs, vss, TrafficOptions{})
	if len(ds) != 1 || ds[0].Name != "good" || len(rs) != 1 || rs[0].Name != "to-good" {
		t.Errorf("kept rules %v and services %v; want good and to-good", keys(ds), keys(rs))
	}
	for _, want := range []string{"destination rule default/bad: subsets[0].labels.tier: unknown label",
		"destination rule default/second: host:", "virtual service default/to-bad: tcp[0].route[0].destination.subset",
		"virtual service default/weights: tcp[0].route: weights sum to 2"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not report %q", err, want)
		}
	}
	if _, err := NewTrafficIndex(ds, rs); err != nil {
		t.Errorf("kept policies do not index: %v", err)
	}
	// With the label carried by a workload, the rule and its service are fine.
	opts := TrafficOptions{LabelKeys: func(k string) bool { return k == "tier" }}
	if ds, rs, _ := CompileTraffic(drs, vss, opts); len(ds) != 2 || len(rs) != 2 {
		t.Errorf("with label tier known: kept %v and %v, want good, bad and to-good, to-bad", keys(ds), keys(rs))
	}
}

func keys[T interface{ Key() string }](list []T) []string {
	var out []string
	for _, x := range list {
		out = append(out, x.Key())
	}
	return out
}

// knownLabelKeys (listed in errors) are exactly those Workload.Label answers.
func TestKnownLabelKeys(t *testing.T) {
	for _, k := range knownLabelKeys {
		if !KnownLabel(k) {
			t.Errorf("%q is listed as known but KnownLabel says no", k)
		}
	}
	for _, k := range []string{"tier", "topology.kubernetes.io/rack", "app.kubernetes.io/component", ""} {
		if KnownLabel(k) {
			t.Errorf("KnownLabel(%q) = true", k)
		}
	}
}
