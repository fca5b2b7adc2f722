package ztunnel

import (
	"io"
	"log/slog"
	"sort"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// metricsConfig is a local config with a client and a server workload on two nodes, and a
// service in front of the server.
const metricsConfig = `
workloads:
- uid: c1//v1/Pod/ns1/client-abc
  name: client-abc
  namespace: ns1
  serviceAccount: client
  node: node1
  clusterId: c1
  workloadName: client
  canonicalName: client-app
  canonicalRevision: v1
  workloadIps: ["10.0.1.1"]
  protocol: HBONE
  locality: {region: r1, zone: z1}
- uid: c1//v1/Pod/ns2/server-xyz
  name: server-xyz
  namespace: ns2
  serviceAccount: server
  node: node2
  workloadName: server
  canonicalName: server-app
  canonicalRevision: v2
  workloadIps: ["10.0.2.1"]
  protocol: HBONE
  locality: {region: r1, zone: z2}
  services:
    "ns2/server.ns2.svc.cluster.local": {80: 8080}
    "ns2/named.ns2.svc.cluster.local": {81: 9090}
services:
- name: server
  namespace: ns2
  hostname: server.ns2.svc.cluster.local
  vips: ["/10.96.0.10"]
  ports: {80: 8080}
- name: named
  namespace: ns2
  hostname: named.ns2.svc.cluster.local
  vips: ["/10.96.0.11"]
  ports: {81: 0}
`

// newTestProxy builds a proxy from metricsConfig with the built-in CA. Nothing is started.
func newTestProxy(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	cfg.LocalXDS = metricsConfig
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// testPod is a pod proxy shell good enough for the metric calls of the data path.
func testPod(p *Proxy) *podProxy { return &podProxy{p: p, log: p.log} }

// sample is one gathered series.
type sample struct {
	Labels map[string]string
	Value  float64
}

// gather returns every series of the registry by metric name.
func gather(t *testing.T, reg *prometheus.Registry) map[string][]sample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string][]sample{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s := sample{Labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				s.Labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.Value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.Value = m.GetGauge().GetValue()
			case m.Untyped != nil:
				s.Value = m.GetUntyped().GetValue()
			}
			out[mf.GetName()] = append(out[mf.GetName()], s)
		}
	}
	return out
}

// seriesByFlag returns "reporter/response_flags=value" for every series of name, sorted: a
// compact view of the connection counters.
func seriesByFlag(got map[string][]sample, name string) []string {
	var out []string
	for _, s := range got[name] {
		out = append(out, s.Labels["reporter"]+"/"+s.Labels["response_flags"]+"="+strconv.FormatFloat(s.Value, 'f', -1, 64))
	}
	sort.Strings(out)
	return out
}
