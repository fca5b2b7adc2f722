package authz

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/ztunnel-go/ztunnel/workload"
)

// benchDenyPort is denied by the last DENY policy of benchPolicies.
const benchDenyPort = 6666

// benchPolicies returns n policies (even indexes DENY, odd ALLOW) of `rules` rules each.
// Each rule has two clauses of realistic matches that a benchConn never satisfies, so a
// decision scans them all. In addition, the last DENY policy denies benchDenyPort and the
// last ALLOW policy allows the principal cluster.local/ns/default/sa/sa-allowed.
func benchPolicies(n, rules int) []*workload.Policy {
	ps := make([]*workload.Policy, 0, n)
	for i := range n {
		p := &workload.Policy{Name: fmt.Sprintf("p%d", i), Namespace: "bench", Action: workload.PolicyActionAllow}
		if i%2 == 0 {
			p.Action = workload.PolicyActionDeny
		}
		for j := range rules {
			p.Rules = append(p.Rules, [][]workload.Match{
				{
					{Principals: sms(exact(fmt.Sprintf("cluster.local/ns/default/sa/never-%d-%d", i, j)))},
					{Namespaces: sms(prefix("team-")), NotSourceIPs: cidrs("192.168.0.0/16")},
				},
				{
					{DestinationPorts: []uint16{8080, uint16(9000 + j)}, DestinationIPs: cidrs("10.0.0.0/8")},
				},
			})
		}
		ps = append(ps, p)
	}
	lastDeny, lastAllow := ps[(n-1)&^1], ps[n-1]
	if n%2 == 1 {
		lastAllow = ps[n-2]
	}
	lastDeny.Rules = append(lastDeny.Rules, [][]workload.Match{{{DestinationPorts: []uint16{benchDenyPort}}}})
	lastAllow.Rules = append(lastAllow.Rules, [][]workload.Match{{{Principals: sms(exact("cluster.local/ns/default/sa/sa-allowed"))}}})
	return ps
}

// benchConn is an mTLS connection from cluster.local/ns/default/sa/<sa> to 10.0.0.2:port.
func benchConn(port uint16, sa string) Conn {
	return Conn{
		Src:         ap("10.0.0.1:40000"),
		Dst:         netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port),
		SrcIdentity: &Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa},
	}
}

// BenchmarkEvaluate evaluates 100 policies of 10 rules each.
func BenchmarkEvaluate(b *testing.B) {
	policies := benchPolicies(100, 10)
	dryRun := append(benchPolicies(100, 10), &workload.Policy{Name: "dry", Namespace: "bench",
		Action: workload.PolicyActionDeny, DryRun: true, Rules: [][][]workload.Match{{}}})
	for _, bc := range []struct {
		name      string
		policies  []*workload.Policy
		conn      Conn
		wantAllow bool
	}{
		{"none-allowed", policies, benchConn(8080, "sa-nobody"), false},
		{"allow", policies, benchConn(8080, "sa-allowed"), true},
		{"deny", policies, benchConn(benchDenyPort, "sa-allowed"), false},
		{"dry-run-reported", dryRun, benchConn(8080, "sa-allowed"), true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if d := Evaluate(bc.policies, bc.conn); d.Allow != bc.wantAllow {
				b.Fatalf("Evaluate = %+v, want Allow=%v", d, bc.wantAllow)
			}
			b.ReportAllocs()
			for b.Loop() {
				Evaluate(bc.policies, bc.conn)
			}
		})
	}
}
