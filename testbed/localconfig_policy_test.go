package testbed

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ztunnel-go/ztunnel/workload"
)

// TestRenderPoliciesParse checks the policies and policy references of the rendered local config
// against the proxy's own local config parser.
func TestRenderPoliciesParse(t *testing.T) {
	pods, svcs, pols, nets := testTopology(t)
	data, err := renderConfig(pods, svcs, pols, nets)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := workload.ParseLocalConfig("rendered", data)
	if err != nil {
		t.Fatalf("ParseLocalConfig: %v\n%s", err, data)
	}
	refs := map[string][]string{}
	for _, w := range cfg.Workloads {
		if len(w.AuthorizationPolicies) > 0 {
			refs[w.Name] = w.AuthorizationPolicies
		}
	}
	if diff := cmp.Diff(map[string][]string{"hello-w1": {"sample/only-sleep"}}, refs); diff != "" {
		t.Errorf("workload policy references (-want +got):\n%s", diff)
	}
	exact := func(s string) workload.StringMatch {
		return workload.StringMatch{Kind: workload.StringMatchExact, Value: s}
	}
	want := []*workload.Policy{
		{Name: "allow-all", Namespace: "default", Scope: workload.PolicyScopeNamespace, Action: workload.PolicyActionAllow,
			Rules: [][][]workload.Match{{}}},
		{Name: "deny-evil", Namespace: "istio-system", Scope: workload.PolicyScopeGlobal, Action: workload.PolicyActionDeny,
			Rules: [][][]workload.Match{{{{NotPrincipals: []workload.StringMatch{exact("cluster.local/ns/good/sa/a"), exact("cluster.local/ns/good/sa/b")}}}}}},
		{Name: "allow-none", Namespace: "other", Scope: workload.PolicyScopeNamespace, Action: workload.PolicyActionAllow,
			Rules: [][][]workload.Match{}},
		{Name: "only-sleep", Namespace: "sample", Scope: workload.PolicyScopeWorkloadSelector, Action: workload.PolicyActionAllow,
			Rules: [][][]workload.Match{
				{{{Principals: []workload.StringMatch{exact("cluster.local/ns/sample/sa/sleep")}}}, {{DestinationPorts: []uint16{5000}}}},
				{{{Namespaces: []workload.StringMatch{exact("trusted")},
					SourceIPs: []netip.Prefix{netip.MustParsePrefix("10.40.0.0/16"), netip.MustParsePrefix("10.40.1.9/32")}}}},
			}},
	}
	if diff := cmp.Diff(want, cfg.Policies, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("parsed policies (-want +got):\n%s\n%s", diff, data)
	}
}

// TestSetPolicyLocalConfig checks SetPolicy and DeletePolicy in local config mode: the policy is
// written to the config file in the proxy's schema, and removed.
func TestSetPolicyLocalConfig(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, Config{Nodes: []NodeSpec{{Name: "node1"}}, StateRoot: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Istiod() != nil {
		t.Error("Istiod() is set in local config mode")
	}
	if _, err := c.AddPod(ctx, PodSpec{Name: "a", Node: "node1", Policies: []string{"default/sel"}}); err != nil {
		t.Fatal(err)
	}
	spec := PolicySpec{Name: "sel", Namespace: "default", Scope: "WorkloadSelector", Action: "Deny",
		Rules: [][]Match{{{SourceIPs: []string{"10.40.0.0/16"}}, {DestinationPorts: []uint16{80}}}}}
	if err := c.SetPolicy(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPolicy(ctx, PolicySpec{Name: "bad", Namespace: "default", Scope: "Pod"}); err == nil {
		t.Error("SetPolicy accepted scope Pod")
	}
	parse := func() *workload.LocalConfig {
		data, err := os.ReadFile(c.ConfigPath())
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := workload.ParseLocalConfig(c.ConfigPath(), data)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := parse()
	if len(cfg.Policies) != 1 || cfg.Policies[0].Key() != "default/sel" || cfg.Policies[0].Action != workload.PolicyActionDeny ||
		len(cfg.Policies[0].Rules) != 1 || len(cfg.Policies[0].Rules[0]) != 2 {
		t.Errorf("policies in the config file: %+v", cfg.Policies)
	}
	if len(cfg.Workloads) != 1 || !slices.Equal(cfg.Workloads[0].AuthorizationPolicies, []string{"default/sel"}) {
		t.Errorf("workloads in the config file: %+v", cfg.Workloads)
	}
	if err := c.DeletePolicy(ctx, "default", "sel"); err != nil {
		t.Fatal(err)
	}
	if cfg := parse(); len(cfg.Policies) != 0 {
		t.Errorf("policies after DeletePolicy: %+v", cfg.Policies)
	}
	if err := c.DeletePolicy(ctx, "default", "sel"); err == nil {
		t.Error("DeletePolicy of a missing policy succeeded")
	}
}
