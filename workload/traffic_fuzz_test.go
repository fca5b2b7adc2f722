package workload

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	networking "istio.io/api/networking/v1alpha3"
)

// FuzzCompileTraffic: compiling any DestinationRule and VirtualService specs (protojson, as the
// Kubernetes source and the local config hand them over) never panics, every error is a
// *TrafficError chain naming an object, and what CompileTraffic keeps always indexes.
func FuzzCompileTraffic(f *testing.F) {
	f.Add(`{"host": "reviews", "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "60s"},
		"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "hangzhou/*", "to": {"hangzhou/*": 90, "shanghai/*": 10}}]}}},
		"subsets": [{"name": "v3", "labels": {"version": "v3"}}, {"name": "v4", "labels": {"version": "v4"}}]}`,
		`{"hosts": ["reviews"], "tcp": [{"match": [{"port": 9080}], "route": [{"destination": {"host": "reviews", "subset": "v3"}, "weight": 90},
		{"destination": {"host": "reviews", "subset": "v4"}, "weight": 10}]}]}`)
	f.Add(`{"host": "helloworld.sample.svc.cluster.local", "trafficPolicy": {"outlierDetection": {}, "loadBalancer": {"localityLbSetting": {"failoverPriority": ["topology.istio.io/cluster"]}}}}`,
		`{"hosts": ["a"], "gateways": ["gw"], "tcp": [{"route": [{"destination": {"host": "a"}}]}]}`)
	f.Add(`{"host": "r", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "b"}], "failoverPriority": ["x=y", "=", "topology.istio.io/network"]}},
		"portLevelSettings": [{"port": {"number": 1}, "connectionPool": {}}]}, "subsets": [{"name": "a", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]}`,
		`{"hosts": ["r", "*", ""], "tcp": [{"match": [{"port": 70000}, {"sourceLabels": {"a": "b"}}], "route": [{"weight": -1}, {"destination": {"host": "r", "subset": "a", "port": {"number": 99999}}, "weight": 101}]}]}`)
	f.Add(`{"host": "r", "subsets": [{"name": "a"}, {"name": "a"}, {"labels": {"": ""}}]}`, `{}`)
	f.Add(`{"host": "a/*/b"}`, `{"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}]}]}`)
	f.Fuzz(func(t *testing.T, drJSON, vsJSON string) {
		var dr networking.DestinationRule
		var vs networking.VirtualService
		if protojson.Unmarshal([]byte(drJSON), &dr) != nil || protojson.Unmarshal([]byte(vsJSON), &vs) != nil {
			return
		}
		drs := []*NamedDestinationRule{{Name: "r", Namespace: "ns", Spec: &dr}, {Name: "r2", Namespace: "other", Spec: &dr}}
		vss := []*NamedVirtualService{{Name: "v", Namespace: "ns", Spec: &vs}, {Name: "v2", Namespace: "ns", Spec: &vs}}
		for _, opts := range []TrafficOptions{{}, {LabelKeys: func(string) bool { return true }}} {
			ds, rs, err := CompileTraffic(drs, vss, opts)
			if err != nil && !strings.HasPrefix(err.Error(), kindDestinationRule+" ") && !strings.HasPrefix(err.Error(), kindVirtualService+" ") {
				t.Errorf("error %q does not name its object", err)
			}
			if _, err := NewTrafficIndex(ds, rs); err != nil {
				t.Errorf("CompileTraffic kept policies that do not index: %v", err)
			}
		}
	})
}

// FuzzParseLocalConfigTraffic is FuzzParseLocalConfig seeded with the traffic keys: parsing
// never panics, errors name the source, and whatever parses also indexes, traffic policy
// included.
func FuzzParseLocalConfigTraffic(f *testing.F) {
	f.Add([]byte(trafficYAML))
	f.Add([]byte(drYAML("    trafficPolicy: {outlierDetection: {interval: 1m30s, maxEjectionPercent: 50}}\n    subsets: [{name: v3, labels: {version: v3}}]\n") +
		vsYAML("    hosts: [reviews]\n    tcp: [{route: [{destination: {host: reviews, subset: v3}}]}]\n")))
	f.Add([]byte(drYAML("    subsets: &s [{name: a, labels: &l {version: x}}, {name: b, labels: *l}]\n") +
		"- metadata: {name: r2, namespace: default}\n  spec: {host: r2, subsets: *s}\n"))
	f.Add([]byte(wl("  labels: {tier: gold}\n") + drYAML("    subsets: [{name: g, labels: {tier: gold}}]\n")))
	f.Add([]byte(vsYAML("    hosts: [a]\n    tcp:\n    - match: [{port: 1}]\n      route:\n      - {destination: {host: a}, weight: 50}\n      - {destination: {host: b}, weight: 50}\n")))
	f.Add([]byte("destinationRules:\n- {metadata: {name: a, namespace: b}, spec: {host: \"\\u0000\", trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: .inf, to: {a: 1e2}}]}}}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseLocalConfig("fuzz", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz: ") {
				t.Errorf("error %q does not start with the source", err)
			}
			return
		}
		if _, err := cfg.Snapshot(); err != nil {
			t.Errorf("parsed config does not index: %v", err)
		}
	})
}
