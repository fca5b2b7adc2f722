package authz

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ztunnel-go/ztunnel/workload"
)

const (
	allow = workload.PolicyActionAllow
	deny  = workload.PolicyActionDeny
)

// principalPolicy returns a policy of ns1 matching the principal cluster.local/ns/default/sa/<sas[i]>
// for any i (one rule per account).
func principalPolicy(name string, action workload.PolicyAction, dryRun bool, sas ...string) *workload.Policy {
	p := &workload.Policy{Name: name, Namespace: "ns1", Scope: workload.PolicyScopeNamespace, Action: action, DryRun: dryRun}
	for _, sa := range sas {
		p.Rules = append(p.Rules, [][]workload.Match{{{Principals: sms(exact("cluster.local/ns/default/sa/" + sa))}}})
	}
	return p
}

// wildcard returns a policy matching every connection (a rule without clauses).
func wildcard(name string, action workload.PolicyAction, dryRun bool) *workload.Policy {
	return &workload.Policy{Name: name, Namespace: "ns1", Action: action, DryRun: dryRun, Rules: [][][]workload.Match{{}}}
}

func connFrom(sa string) Conn {
	return Conn{
		Src:         ap("10.0.0.1:40000"),
		Dst:         ap("10.0.0.2:8080"),
		SrcIdentity: &Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa},
	}
}

func TestEvaluate(t *testing.T) {
	var (
		allowDefault = principalPolicy("foo", allow, false, "defaultacct")
		denyDeny     = principalPolicy("deny", deny, false, "denyacct")
		denyAll      = wildcard("deny-all", deny, false)
		allowAll     = wildcard("allow-all", allow, false)
		dryAllowAll  = wildcard("dry-allow-all", allow, true)
		dryDenyAll   = wildcard("dry-deny-all", deny, true)
		dryAllowNone = &workload.Policy{Name: "dry-allow-none", Namespace: "ns1", DryRun: true} // no rules: never matches
		// state.rs assert_rbac_dry_run_with_real_policies
		realDeny    = principalPolicy("real-deny", deny, false, "denyacct")
		dryRunDeny  = principalPolicy("dry-run-deny", deny, true, "defaultacct", "denyacct")
		realAllow   = principalPolicy("real-allow", allow, false, "defaultacct")
		dryRunAllow = principalPolicy("dry-run-allow", allow, true, "defaultacct")
	)
	tests := []struct {
		name     string
		policies []*workload.Policy
		conn     Conn
		want     Decision
	}{
		{"no policies", nil, connFrom("x"),
			Decision{Allow: true, Reason: "no allow policies"}},
		{"non-matching deny only", []*workload.Policy{denyDeny}, connFrom("x"),
			Decision{Allow: true, Reason: "no allow policies"}},
		{"matching deny", []*workload.Policy{denyDeny}, connFrom("denyacct"),
			Decision{Policy: "ns1/deny", Reason: "explicitly denied by: ns1/deny"}},
		{"deny wins over an earlier matching allow", []*workload.Policy{allowAll, denyDeny}, connFrom("denyacct"),
			Decision{Policy: "ns1/deny", Reason: "explicitly denied by: ns1/deny"}},
		{"first matching deny decides", []*workload.Policy{allowAll, denyDeny, denyAll}, connFrom("denyacct"),
			Decision{Policy: "ns1/deny", Reason: "explicitly denied by: ns1/deny"}},
		{"matching allow", []*workload.Policy{denyDeny, allowDefault}, connFrom("defaultacct"),
			Decision{Allow: true, Policy: "ns1/foo", Reason: "allowed by: ns1/foo"}},
		{"first matching allow decides", []*workload.Policy{allowDefault, allowAll}, connFrom("defaultacct"),
			Decision{Allow: true, Policy: "ns1/foo", Reason: "allowed by: ns1/foo"}},
		{"allow policies exist, none match", []*workload.Policy{allowDefault, denyDeny}, connFrom("not-defaultacct"),
			Decision{Reason: "allow policies exist, but none allowed"}},
		{"allow with no rules denies everything", []*workload.Policy{{Name: "empty", Namespace: "ns1"}}, connFrom("defaultacct"),
			Decision{Reason: "allow policies exist, but none allowed"}},
		{"plaintext against principal allow", []*workload.Policy{allowDefault}, conns["plain"],
			Decision{Reason: "allow policies exist, but none allowed"}},
		{"unknown action counts as deny", []*workload.Policy{{Name: "odd", Namespace: "ns1", Action: 7, Rules: [][][]workload.Match{{}}}}, connFrom("x"),
			Decision{Policy: "ns1/odd", Reason: "explicitly denied by: ns1/odd"}},
		{"nil entries are skipped", []*workload.Policy{nil, allowDefault, nil}, connFrom("defaultacct"),
			Decision{Allow: true, Policy: "ns1/foo", Reason: "allowed by: ns1/foo"}},

		// Dry-run policies never decide; they are reported when they would flip the outcome.
		{"dry-run wildcards have no effect", []*workload.Policy{dryAllowAll, dryDenyAll, allowDefault, denyDeny}, connFrom("defaultacct"),
			Decision{Allow: true, Policy: "ns1/foo", Reason: "allowed by: ns1/foo",
				DryRun: []string{"ns1/dry-deny-all: would deny (deny policy matches)"}}},
		{"dry-run allow does not override a deny", []*workload.Policy{dryAllowAll, denyDeny}, connFrom("denyacct"),
			Decision{Policy: "ns1/deny", Reason: "explicitly denied by: ns1/deny"}},
		{"dry-run deny on an explicit deny is not reported", []*workload.Policy{dryDenyAll, denyDeny}, connFrom("denyacct"),
			Decision{Policy: "ns1/deny", Reason: "explicitly denied by: ns1/deny"}},
		{"dry-run deny on a none-allowed deny is not reported", []*workload.Policy{dryDenyAll, allowDefault}, connFrom("x"),
			Decision{Reason: "allow policies exist, but none allowed"}},
		{"dry-run allow matching when none allowed", []*workload.Policy{allowDefault, dryAllowAll, dryAllowNone}, connFrom("x"),
			Decision{Reason: "allow policies exist, but none allowed",
				DryRun: []string{"ns1/dry-allow-all: would allow (allow policy matches)"}}},
		{"dry-run allow not matching under default allow", []*workload.Policy{dryAllowNone, dryAllowAll}, connFrom("x"),
			Decision{Allow: true, Reason: "no allow policies",
				DryRun: []string{"ns1/dry-allow-none: would deny (allow policy does not match)"}}},
		{"dry-run allows when an enforced allow matched", []*workload.Policy{allowDefault, dryAllowNone, dryAllowAll}, connFrom("defaultacct"),
			Decision{Allow: true, Policy: "ns1/foo", Reason: "allowed by: ns1/foo"}},
		{"dry-run only, nothing would change", []*workload.Policy{dryAllowAll}, connFrom("x"),
			Decision{Allow: true, Reason: "no allow policies"}},
		{"real and dry-run policies, defaultacct", []*workload.Policy{realDeny, dryRunDeny, realAllow, dryRunAllow}, connFrom("defaultacct"),
			Decision{Allow: true, Policy: "ns1/real-allow", Reason: "allowed by: ns1/real-allow",
				DryRun: []string{"ns1/dry-run-deny: would deny (deny policy matches)"}}},
		{"real and dry-run policies, denyacct", []*workload.Policy{realDeny, dryRunDeny, realAllow, dryRunAllow}, connFrom("denyacct"),
			Decision{Policy: "ns1/real-deny", Reason: "explicitly denied by: ns1/real-deny"}},
		{"real and dry-run policies, other", []*workload.Policy{realDeny, dryRunDeny, realAllow, dryRunAllow}, connFrom("other"),
			Decision{Reason: "allow policies exist, but none allowed"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, Evaluate(tt.policies, tt.conn)); diff != "" {
			t.Errorf("%s: Evaluate mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

// TestEvaluateSnapshotPolicies combines global, namespace and workload-selector policies as
// the proxy does: Evaluate(snapshot.PoliciesFor(dst), conn).
func TestEvaluateSnapshotPolicies(t *testing.T) {
	policies := []*workload.Policy{
		{Name: "global-deny-9999", Namespace: "istio-system", Scope: workload.PolicyScopeGlobal, Action: deny,
			Rules: [][][]workload.Match{{{{DestinationPorts: []uint16{9999}}}}}},
		{Name: "allow-default", Namespace: "ns1", Scope: workload.PolicyScopeNamespace, Action: allow,
			Rules: [][][]workload.Match{{{{ServiceAccounts: []workload.ServiceAccountMatch{{Namespace: "default", ServiceAccount: "defaultacct"}}}}}}},
		{Name: "sel-allow-10", Namespace: "ns1", Scope: workload.PolicyScopeWorkloadSelector, Action: allow,
			Rules: [][][]workload.Match{{{{SourceIPs: cidrs("10.0.0.0/8")}}}}},
		{Name: "dry-deny-plaintext", Namespace: "ns2", Scope: workload.PolicyScopeNamespace, Action: deny, DryRun: true,
			Rules: [][][]workload.Match{{{{NotPrincipals: sms(presence)}}}}},
	}
	pod := func(ns, name string, ip string, pols ...string) *workload.Workload {
		return &workload.Workload{UID: "c1//Pod/" + ns + "/" + name, Name: name, Namespace: ns,
			IPs: []netip.Addr{netip.MustParseAddr(ip)}, AuthorizationPolicies: pols}
	}
	selected := pod("ns1", "selected", "10.1.0.1", "ns1/sel-allow-10", "ns1/missing")
	plain := pod("ns1", "plain", "10.1.0.2")
	other := pod("ns2", "other", "10.2.0.1")
	snap, err := workload.NewSnapshot([]*workload.Workload{selected, plain, other}, nil, policies)
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	conn := func(dst *workload.Workload, port uint16, src string, id *Identity) Conn {
		return Conn{Src: ap(src), Dst: netip.AddrPortFrom(dst.IPs[0], port), SrcIdentity: id}
	}
	defaultacct := &Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "defaultacct"}
	tests := []struct {
		name string
		dst  *workload.Workload
		conn Conn
		want Decision
	}{
		{"namespace allow", selected, conn(selected, 80, "192.168.0.1:1", defaultacct),
			Decision{Allow: true, Policy: "ns1/allow-default", Reason: "allowed by: ns1/allow-default"}},
		{"selector allow", selected, conn(selected, 80, "10.9.9.9:1", nil),
			Decision{Allow: true, Policy: "ns1/sel-allow-10", Reason: "allowed by: ns1/sel-allow-10"}},
		{"selector policy not applied to other pods", plain, conn(plain, 80, "10.9.9.9:1", nil),
			Decision{Reason: "allow policies exist, but none allowed"}},
		{"global deny beats namespace allow", selected, conn(selected, 9999, "192.168.0.1:1", defaultacct),
			Decision{Policy: "istio-system/global-deny-9999", Reason: "explicitly denied by: istio-system/global-deny-9999"}},
		{"global deny in another namespace", other, conn(other, 9999, "10.9.9.9:1", defaultacct),
			Decision{Policy: "istio-system/global-deny-9999", Reason: "explicitly denied by: istio-system/global-deny-9999"}},
		{"no allow policies in ns2", other, conn(other, 80, "10.9.9.9:1", defaultacct),
			Decision{Allow: true, Reason: "no allow policies"}},
		{"dry-run deny of plaintext in ns2", other, conn(other, 80, "10.9.9.9:1", nil),
			Decision{Allow: true, Reason: "no allow policies",
				DryRun: []string{"ns2/dry-deny-plaintext: would deny (deny policy matches)"}}},
	}
	for _, tt := range tests {
		got := Evaluate(snap.PoliciesFor(tt.dst), tt.conn)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: Evaluate mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

// TestEvaluateAllocs checks that Evaluate allocates nothing when no dry-run policy is
// reported, for every kind of decision, once the policies' strings are cached.
func TestEvaluateAllocs(t *testing.T) {
	policies := benchPolicies(20, 5)
	for _, tc := range []struct {
		name string
		conn Conn
	}{
		{"deny", benchConn(benchDenyPort, "sa-0")},
		{"allow", benchConn(8080, "sa-allowed")},
		{"none allowed", benchConn(8080, "sa-nobody")},
		{"plaintext", Conn{Src: ap("10.0.0.1:1"), Dst: ap("10.0.0.2:8080")}},
	} {
		Evaluate(policies, tc.conn) // warm the strings cache
		if n := testing.AllocsPerRun(50, func() { Evaluate(policies, tc.conn) }); n != 0 {
			t.Errorf("%s: Evaluate allocates %v times per call, want 0", tc.name, n)
		}
	}
	noAllow := []*workload.Policy{principalPolicy("d", deny, false, "x")}
	c := connFrom("y")
	if n := testing.AllocsPerRun(50, func() { Evaluate(noAllow, c) }); n != 0 {
		t.Errorf("default allow: Evaluate allocates %v times per call, want 0", n)
	}
}

// TestNamesCacheBounded checks that the decision-string cache is emptied when full and keeps
// producing correct strings.
func TestNamesCacheBounded(t *testing.T) {
	for i := range maxNamesCached + 10 {
		p := &workload.Policy{Name: "n" + strconv.Itoa(i), Namespace: "ns"}
		if got, want := stringsFor(p).key, p.Key(); got != want {
			t.Fatalf("stringsFor(%s).key = %q", want, got)
		}
	}
	names.mu.RLock()
	n := len(names.m)
	names.mu.RUnlock()
	if n > maxNamesCached {
		t.Errorf("cache holds %d entries, want at most %d", n, maxNamesCached)
	}
}
