package workload

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// trafficYAML is a config in the shape of scenarios S3, S4 and S5: reviews in two regions
// (hangzhou, shanghai) with a 90/10 distribution, failover between them and outlier detection
// after 1 error (1 s interval, 1 min ejection); helloworld in two clusters with failoverPriority
// on the cluster; subsets v3/v4 of reviews by version with a 90/10 tcp route.
const trafficYAML = `workloads:
- uid: c1//v1/Pod/default/reviews-v3
  name: reviews-v3
  namespace: default
  workloadIps: ["10.0.1.3"]
  canonicalName: reviews
  canonicalRevision: v3
  locality: {region: hangzhou, zone: z1}
  labels: {version: v3, team: books}
- uid: c1//v1/Pod/default/reviews-v4
  name: reviews-v4
  namespace: default
  workloadIps: ["10.0.2.4"]
  locality: {region: shanghai, zone: z1}
  labels: {version: v4, team: books}
destinationRules:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: reviews, namespace: default}
  spec:
    host: reviews
    trafficPolicy:
      outlierDetection:
        consecutive5xxErrors: 1
        interval: 1s
        baseEjectionTime: 1m
        maxEjectionPercent: 100
      loadBalancer:
        localityLbSetting:
          distribute:
          - from: hangzhou/*
            to:
              "hangzhou/*": 90
              "shanghai/*": 10
    subsets:
    - name: v3
      labels: {version: v3}
    - name: v4
      labels: {version: v4, team: books}
      trafficPolicy:
        loadBalancer:
          localityLbSetting:
            failover:
            - {from: hangzhou, to: shanghai}
            - {from: shanghai, to: hangzhou}
- metadata: {name: helloworld, namespace: sample}
  spec:
    host: helloworld.sample.svc.cluster.local
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}
      loadBalancer:
        simple: ROUND_ROBIN
        localityLbSetting:
          enabled: true
          failoverPriority: [topology.istio.io/cluster]
virtualServices:
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: reviews, namespace: default}
  spec:
    hosts: [reviews]
    tcp:
    - match: [{port: 9080}]
      route:
      - destination: {host: reviews, subset: v3}
        weight: 90
      - destination: {host: reviews, subset: v4}
        weight: 10
    http:
    - route: [{destination: {host: reviews, subset: v3}}]
- metadata: {name: http-only, namespace: default}
  spec:
    hosts: [ratings]
    http: [{route: [{destination: {host: ratings}}]}]
`

func TestParseLocalConfigTrafficRoundTrip(t *testing.T) {
	cfg := mustParse(t, trafficYAML)
	outlier := &OutlierPolicy{Consecutive5xx: 1, Interval: time.Second, BaseEjectionTime: time.Minute,
		MaxEjectionTime: 5 * time.Minute, MaxEjectionPercent: 100}
	distribute := &LocalityPolicy{Enabled: true, Distribute: []LocalityDistribution{{From: "hangzhou/*",
		To: []LocalityWeight{{"hangzhou/*", 90}, {"shanghai/*", 10}}}}}
	const reviews = "reviews.default.svc.cluster.local"
	wantDests := []*DestinationPolicy{{
		Name: "reviews", Namespace: "default", Host: reviews,
		Policy: TrafficSettings{Outlier: outlier, Locality: distribute},
		Subsets: []*Subset{
			{Name: "v3", Labels: map[string]string{"version": "v3"}, Policy: TrafficSettings{Outlier: outlier, Locality: distribute}},
			{Name: "v4", Labels: map[string]string{"version": "v4", "team": "books"}, Policy: TrafficSettings{Outlier: outlier,
				Locality: &LocalityPolicy{Enabled: true, Failover: []LocalityFailover{{"hangzhou", "shanghai"}, {"shanghai", "hangzhou"}}}}},
		},
	}, {
		Name: "helloworld", Namespace: "sample", Host: "helloworld.sample.svc.cluster.local",
		Policy: TrafficSettings{Outlier: &OutlierPolicy{Consecutive5xx: 1, Interval: time.Second, BaseEjectionTime: time.Minute,
			MaxEjectionTime: 5 * time.Minute, MaxEjectionPercent: 10},
			Locality: &LocalityPolicy{Enabled: true, FailoverPriority: []string{"topology.istio.io/cluster"}}},
	}}
	wantRoutes := []*RoutePolicy{{
		Name: "reviews", Namespace: "default", Hosts: []string{reviews},
		TCP: []*TCPRoute{{Ports: []uint16{9080}, Destinations: []RouteDestination{
			{Host: reviews, Subset: "v3", Weight: 90}, {Host: reviews, Subset: "v4", Weight: 10}}}},
	}}
	if diff := cmp.Diff(wantDests, cfg.DestinationRules, cmpTraffic); diff != "" {
		t.Errorf("destination rules (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantRoutes, cfg.VirtualServices, cmpTraffic); diff != "" {
		t.Errorf("virtual services (-want +got):\n%s", diff)
	}
	if src, ok := cfg.DestinationRules[0].Source.(*networking.DestinationRule); !ok || src.GetHost() != "reviews" {
		t.Errorf("Source = %T %v, want the spec as written", cfg.DestinationRules[0].Source, cfg.DestinationRules[0].Source)
	}
	if got := cfg.Workloads[0].Labels; !cmp.Equal(got, map[string]string{"version": "v3", "team": "books"}) {
		t.Errorf("workload labels = %v", got)
	}

	snap, err := cfg.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	ti := snap.Traffic()
	d := ti.Destination(reviews)
	if d == nil || ti.Route(reviews) == nil || ti.Destination("helloworld.sample.svc.cluster.local") == nil || ti.Route("ratings.default.svc.cluster.local") != nil {
		t.Fatalf("index lookups: rule %v, route %v; want both for reviews, a rule for helloworld, no route for the http-only ratings", d, ti.Route(reviews))
	}
	for _, tc := range []struct {
		subset, uid string
		match       bool
	}{
		{"v3", "c1//v1/Pod/default/reviews-v3", true},
		{"v3", "c1//v1/Pod/default/reviews-v4", false},
		{"v4", "c1//v1/Pod/default/reviews-v4", true},
	} {
		if got := d.Subset(tc.subset).Matches(snap.WorkloadByUID(tc.uid)); got != tc.match {
			t.Errorf("subset %s matches %s: %v, want %v", tc.subset, tc.uid, got, tc.match)
		}
	}
}

// Durations are read as Kubernetes reads them ("1m", "1h30m") and as protojson does ("90s").
func TestParseLocalConfigTrafficDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"1m": time.Minute, "1h30m": 90 * time.Minute, "90s": 90 * time.Second,
		"1.5s": 1500 * time.Millisecond, "250ms": 250 * time.Millisecond, `"2s"`: 2 * time.Second} {
		cfg := mustParse(t, drYAML("    trafficPolicy: {outlierDetection: {baseEjectionTime: "+in+"}}\n"))
		if got := cfg.DestinationRules[0].Policy.Outlier.BaseEjectionTime; got != want {
			t.Errorf("baseEjectionTime %s = %v, want %v", in, got, want)
		}
	}
}

// drYAML is a valid destination rule entry (default/reviews) followed by extra spec lines.
func drYAML(extra string) string {
	return "destinationRules:\n- metadata: {name: reviews, namespace: default}\n  spec:\n    host: reviews\n" + extra
}

// vsYAML is a valid virtual service entry (default/reviews) whose spec is the extra lines.
func vsYAML(extra string) string {
	return "virtualServices:\n- metadata: {name: reviews, namespace: default}\n  spec:\n" + extra
}

const (
	drEntry = `destinationRules[0] (destination rule "default/reviews")`
	vsEntry = `virtualServices[0] (virtual service "default/reviews")`
)

func TestParseLocalConfigTrafficErrors(t *testing.T) {
	subsets := drYAML("    subsets: [{name: v3, labels: {version: v3}}]\n")
	tests := []struct {
		name, yaml   string
		entry, field string
		line         int
		msg          string
	}{
		// Entries.
		{"missing spec", "destinationRules:\n- metadata: {name: a, namespace: b}\n", `destinationRules[0] (destination rule "b/a")`, "spec", 2, "missing required field"},
		{"missing metadata", "destinationRules:\n- spec: {host: a}\n", "destinationRules[0]", "metadata", 2, "missing required field"},
		{"missing namespace", "virtualServices:\n- metadata: {name: a}\n  spec: {}\n", "virtualServices[0]", "metadata.namespace", 2, "missing required field"},
		{"empty name", "virtualServices:\n- metadata: {name: \"\", namespace: a}\n  spec: {}\n", "virtualServices[0]", "metadata", 2, "empty name or namespace"},
		{"unknown metadata field", "destinationRules:\n- metadata: {name: a, namespace: b, labels: {}}\n  spec: {host: a}\n", `destinationRules[0] (destination rule "b/a")`, "metadata.labels", 2, "unknown field"},
		{"wrong kind", "destinationRules:\n- kind: VirtualService\n  metadata: {name: a, namespace: b}\n  spec: {host: a}\n", `destinationRules[0] (destination rule "b/a")`, "kind", 2, `invalid kind "VirtualService" (want one of DestinationRule)`},
		{"wrong apiVersion", "virtualServices:\n- apiVersion: v1\n  metadata: {name: a, namespace: b}\n  spec: {}\n", `virtualServices[0] (virtual service "b/a")`, "apiVersion", 2, `invalid apiVersion "v1"`},
		{"spec is a list", "destinationRules:\n- metadata: {name: a, namespace: b}\n  spec: [1]\n", `destinationRules[0] (destination rule "b/a")`, "spec", 3, "want a mapping, got a list"},
		{"duplicate name", drYAML("") + "- metadata: {name: reviews, namespace: default}\n  spec: {host: other}\n",
			`destinationRules[1] (destination rule "default/reviews")`, "metadata.name", 5, `duplicate name "default/reviews" (first in destinationRules[0])`},
		{"duplicate virtual service name, the first ignored", vsYAML("    hosts: [a]\n    http: [{route: [{destination: {host: a}}]}]\n") +
			"- metadata: {name: reviews, namespace: default}\n  spec: {hosts: [a], tcp: [{route: [{destination: {host: a}}]}]}\n",
			`virtualServices[1] (virtual service "default/reviews")`, "metadata.name", 6, `duplicate name "default/reviews" (first in virtualServices[0])`},

		// protojson's findings, at the line of the field.
		{"unknown spec field", drYAML("    trafficPolicy:\n      outlierDetection:\n        interval: 1s\n        consecutive5xxErorrs: 1\n"),
			drEntry, "spec.trafficPolicy.outlierDetection.consecutive5xxErorrs", 8, "unknown field"},
		{"unknown field differing in case", drYAML("    trafficpolicy: {}\n"), drEntry, "spec.trafficpolicy", 5, `unknown field (did you mean "trafficPolicy"?)`},
		{"unknown field under a map", drYAML("    subsets: [{name: a, labels: {x: {y: 1}}}]\n"), drEntry, "spec.subsets[0].labels.x", 5, "want a string, got a mapping"},
		{"string for a number", drYAML("    trafficPolicy: {outlierDetection: {consecutive5xxErrors: five}}\n"),
			drEntry, "spec.trafficPolicy.outlierDetection.consecutive5xxErrors", 5, `want a non-negative integer, got "five"`},
		{"negative locality weight", drYAML("    trafficPolicy:\n      loadBalancer:\n        localityLbSetting:\n          distribute:\n          - from: a\n            to: {a: 110, b: -10}\n"),
			drEntry, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to.b", 10, `want a non-negative integer, got "-10"`},
		{"bad duration", drYAML("    trafficPolicy: {outlierDetection: {interval: 10 seconds}}\n"),
			drEntry, "spec.trafficPolicy.outlierDetection.interval", 5, `invalid google.protobuf.Duration value "10 seconds"`},
		{"list for a mapping", drYAML("    trafficPolicy: [a]\n"), drEntry, "spec.trafficPolicy", 5, "wrong type: got a list"},
		{"mapping for a list", vsYAML("    hosts: {a: b}\n"), vsEntry, "spec.hosts", 4, "wrong type: got a mapping"},
		{"bool for a string", drYAML("    subsets: [{name: a, labels: {canary: true}}]\n"), drEntry, "spec.subsets[0].labels.canary", 5, "want a string, got true"},
		{"bad enum", drYAML("    trafficPolicy: {loadBalancer: {simple: FASTEST}}\n"), drEntry, "spec.trafficPolicy.loadBalancer.simple", 5, `invalid value for enum field simple: "FASTEST"`},
		{"field twice", drYAML("    host: again\n"), drEntry, "spec.host", 5, `duplicate field "host"`},
		{"negative route weight", vsYAML("    hosts: [reviews]\n    tcp:\n    - route:\n      - destination: {host: reviews}\n        weight: -1\n"),
			vsEntry, "spec.tcp[0].route[0].weight", 8, "negative weight -1"},

		// Compile errors, at the line of the field.
		{"wildcard host", "destinationRules:\n- metadata: {name: reviews, namespace: default}\n  spec:\n    host: \"*.example.com\"\n",
			drEntry, "spec.host", 4, `wildcard host "*.example.com" is not supported`},
		{"duplicate subset", drYAML("    subsets:\n    - name: v1\n    - name: v2\n    - name: v1\n"), drEntry, "spec.subsets[2].name", 8, `duplicate subset name "v1" (also subsets[0])`},
		{"weights not 100", vsYAML("    hosts: [reviews]\n    tcp:\n    - match: [{port: 80}]\n      route:\n      - destination: {host: a}\n        weight: 80\n      - destination: {host: b}\n        weight: 10\n"),
			vsEntry, "spec.tcp[0].route", 7, "weights sum to 90, want 100 (80 + 10)"},
		{"distribute weights not 100", drYAML("    trafficPolicy:\n      loadBalancer:\n        localityLbSetting:\n          distribute:\n          - from: a\n            to: {a: 10}\n"),
			drEntry, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", 10, "weights sum to 10, want 100"},
		{"unsupported match", vsYAML("    hosts: [reviews]\n    tcp:\n    - match:\n      - sourceLabels: {app: a}\n      route: [{destination: {host: a}}]\n"),
			vsEntry, "spec.tcp[0].match[0].sourceLabels", 7, "not supported by the node proxy"},
		{"base ejection time too short", drYAML("    trafficPolicy:\n      outlierDetection:\n        baseEjectionTime: 0s\n"),
			drEntry, "spec.trafficPolicy.outlierDetection.baseEjectionTime", 7, "too short"},

		// Cross-object errors, at the line of the field.
		{"unknown subset label", drYAML("    subsets:\n    - name: v1\n      labels:\n        version: v1\n        tier: gold\n"),
			drEntry, "spec.subsets[0].labels.tier", 9, `unknown label "tier"`},
		{"unknown dotted subset label", drYAML("    subsets:\n    - name: v1\n      labels:\n        example.com/tier: gold\n"),
			drEntry, `spec.subsets[0].labels["example.com/tier"]`, 8, `unknown label "example.com/tier"`},
		{"unknown failoverPriority label", drYAML("    trafficPolicy:\n      loadBalancer:\n        localityLbSetting:\n          failoverPriority:\n          - topology.istio.io/cluster\n          - rack\n"),
			drEntry, "spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[1]", 10, `unknown label "rack"`},
		{"unknown subset", subsets + vsYAML("    hosts: [reviews]\n    tcp:\n    - route:\n      - destination: {host: reviews, subset: v3}\n        weight: 90\n      - destination:\n          host: reviews\n          subset: v5\n        weight: 10\n"),
			vsEntry, "spec.tcp[0].route[1].destination.subset", 16, `subset "v5" of host "reviews.default.svc.cluster.local" is not defined by destination rule default/reviews (it defines "v3")`},
		{"two rules for one host", drYAML("") + "- metadata: {name: other, namespace: default}\n  spec:\n    host: reviews.default.svc.cluster.local\n",
			`destinationRules[1] (destination rule "default/other")`, "spec.host", 7, `already has destination rule default/reviews`},
		{"two services for one host", vsYAML("    hosts: [a.example.com]\n    tcp: [{route: [{destination: {host: a}}]}]\n") +
			"- metadata: {name: other, namespace: default}\n  spec:\n    hosts:\n    - b.example.com\n    - a.example.com\n    tcp: [{route: [{destination: {host: a}}]}]\n",
			`virtualServices[1] (virtual service "default/other")`, "spec.hosts[1]", 10, `already routed by virtual service default/reviews`},
		{"bad workload labels", wl("  labels: [version]\n"), wlEntry, "labels", 6, "want a mapping of label to value, got a list"},
		{"empty workload label key", wl("  labels: {\"\": a}\n"), wlEntry, "labels", 6, `invalid label key ""`},
		{"workload label twice", wl("  labels: {a: b, \"a\": c}\n"), wlEntry, "labels.a", 6, "label set twice"},
		{"workload label value a list", wl("  labels: {a: [b]}\n"), wlEntry, "labels.a", 6, "want a string, got a list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLocalConfig("test.yaml", []byte(tc.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error = %v, want a *ConfigError", err)
			}
			if ce.Entry != tc.entry || ce.Field != tc.field || ce.Line != tc.line || !strings.Contains(ce.Err.Error(), tc.msg) {
				t.Errorf("error %q:\n entry %q, field %q, line %d\nwant entry %q, field %q, line %d, message containing %q",
					err, ce.Entry, ce.Field, ce.Line, tc.entry, tc.field, tc.line, tc.msg)
			}
		})
	}
}

// A label some workload of the config carries is known to subset selectors; the replicas of a
// deployment share one label map.
func TestParseLocalConfigWorkloadLabels(t *testing.T) {
	data := "workloads:\n" +
		"- {uid: a, name: a, namespace: ns, workloadIps: [\"10.0.0.1\"], labels: {tier: gold, version: v1}}\n" +
		"- {uid: b, name: b, namespace: ns, workloadIps: [\"10.0.0.2\"], labels: {version: v1, tier: gold}}\n" +
		"- {uid: c, name: c, namespace: ns, workloadIps: [\"10.0.0.3\"], labels: {tier: silver, release: 3}}\n" +
		"destinationRules:\n- metadata: {name: r, namespace: ns}\n  spec: {host: svc, subsets: [{name: gold, labels: {tier: gold}}]}\n"
	cfg := mustParse(t, data)
	a, b, c := cfg.Workloads[0], cfg.Workloads[1], cfg.Workloads[2]
	if !samePtr(a.Labels, b.Labels) {
		t.Error("equal label maps are not shared")
	}
	if c.Labels["release"] != "3" {
		t.Errorf("label release = %q, want \"3\"", c.Labels["release"])
	}
	s := cfg.DestinationRules[0].Subset("gold")
	if !s.Matches(a) || s.Matches(c) {
		t.Errorf("subset gold matches a: %v, c: %v; want true, false", s.Matches(a), s.Matches(c))
	}
}

// The policies of a config parsed in pieces are those of the whole parse, and a large config of
// them is cut into pieces.
func TestParseSplitTraffic(t *testing.T) {
	if !checkSplitMatchesWhole(t, []byte(trafficYAML)) {
		t.Error("the traffic config was not parsed in pieces")
	}
	data := bigTrafficConfig(300)
	if len(data) < minSplitSize {
		t.Fatalf("test config of %d bytes is below the split size", len(data))
	}
	pieces, ok := splitConfig(data, splitChunk)
	if !ok || len(pieces) < 3 {
		t.Fatalf("splitConfig: ok=%v, %d pieces; want it split", ok, len(pieces))
	}
	cfg, _, err := parseLocalConfig("big.yaml", data, limitsFor(0))
	if err != nil || len(cfg.DestinationRules) != 300 || len(cfg.VirtualServices) != 300 {
		t.Fatalf("parse: %v", err)
	}
	// An error in a late entry is reported with its index and line in the whole file.
	bad := strings.Replace(string(data), "weight: 10\n", "weight: 11\n", 1)
	bad = strings.Replace(string(data), "hosts: [svc-250]", "hosts: [svc-250]\n    gatways: [mesh]", 1)
	line := strings.Count(bad[:strings.Index(bad, "gatways")], "\n") + 1
	_, err = ParseLocalConfig("big.yaml", []byte(bad))
	want := fmt.Sprintf(`big.yaml: virtualServices[250] (virtual service "ns/r250"): spec.gatways: unknown field (did you mean "gateways"?) (line %d)`, line)
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
}

// bigTrafficConfig renders n destination rules and n virtual services like those of S3 and S4.
func bigTrafficConfig(n int) []byte {
	var b strings.Builder
	b.WriteString("destinationRules:\n")
	for i := range n {
		fmt.Fprintf(&b, `- metadata: {name: r%d, namespace: ns}
  spec:
    host: svc-%d
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}
      loadBalancer:
        localityLbSetting:
          distribute:
          - from: hangzhou/*
            to: {"hangzhou/*": 90, "shanghai/*": 10}
    subsets:
    - name: v3
      labels: {version: v3}
    - name: v4
      labels: {version: v4}
`, i, i)
	}
	b.WriteString("virtualServices:\n")
	for i := range n {
		fmt.Fprintf(&b, `- metadata: {name: r%d, namespace: ns}
  spec:
    hosts: [svc-%d]
    tcp:
    - match: [{port: 9080}]
      route:
      - destination: {host: svc-%d, subset: v3}
        weight: 90
      - destination: {host: svc-%d, subset: v4}
        weight: 10
`, i, i, i, i)
	}
	return []byte(b.String())
}

// Every node of a spec is charged trafficNodeCost units, so that a config made of policies,
// which cost more per node than workloads, is bounded by the decoding budget too.
func TestTrafficDecodingIsCharged(t *testing.T) {
	data := bigTrafficConfig(50)
	root, err := parseDocument(data)
	if err != nil {
		t.Fatal(err)
	}
	specNodes := 0
	for _, list := range []*yaml.Node{mappingValue(root.Content[0], "destinationRules"), mappingValue(root.Content[0], "virtualServices")} {
		for _, item := range list.Content {
			specNodes += countNodes(mappingValue(item, "spec"))
		}
	}
	lim := limitsFor(0)
	c := newConfigDecoder("t", lim)
	if err := c.d.mapping(root.Content[0], "", c.handlers()); err != nil {
		t.Fatal(err)
	}
	spent := lim.decodeBudget - c.d.budget
	if want := 100*entryCost + specNodes*trafficNodeCost; spent < want {
		t.Errorf("decoding 100 entries with %d spec nodes charged %d units, want at least %d", specNodes, spent, want)
	}
	// The budget stops decoding such a config.
	lim.decodeBudget = spent - 1
	_, _, err = parseLocalConfig("t", data, lim)
	if err == nil || !strings.Contains(err.Error(), "document too large: more than") {
		t.Errorf("parse with one unit too few: %v, want the decoding budget's error", err)
	}
}
