package authz

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/ztunnel-go/ztunnel/workload"
)

// fuzzReader turns fuzz bytes into choices; past the end it yields zeros.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// pick returns an element of pool chosen by the next byte.
func pick[T any](r *fuzzReader, pool []T) T { return pool[int(r.byte())%len(pool)] }

// Pools the fuzzer draws from: overlapping values so that hits and misses both happen.
var (
	fuzzStrings = []string{"", "a", "ns", "default", "td", "td/ns/a/sa/b", "td/ns/", "/sa/b", "b", "a/sa/b", "spiffe://td/ns/a/sa/b"}
	fuzzAddrs   = []netip.Addr{{}, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fe80::1%eth0"),
		netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::")}
	fuzzPrefixes = []netip.Prefix{{}, pfx("10.0.0.0/8"), pfx("10.0.0.1/32"), pfx("0.0.0.0/0"), pfx("::/0"),
		pfx("::ffff:10.0.0.0/104"), pfx("::ffff:10.0.0.2/128"), pfx("2001:db8::/32"), pfx("fe80::/10"),
		netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 40), pfx("::ffff:0.0.0.0/90")}
	fuzzPorts = []uint16{0, 80, 8080, 15008, 65535}
	fuzzIDs   = []*Identity{nil, {TrustDomain: "td", Namespace: "a", ServiceAccount: "b"},
		{TrustDomain: "td", Namespace: "ns", ServiceAccount: "default"}, {}, {Namespace: "a"}}
)

func fuzzStringMatches(r *fuzzReader) []workload.StringMatch {
	var out []workload.StringMatch
	for range r.byte() % 3 {
		out = append(out, workload.StringMatch{Kind: workload.StringMatchKind(r.byte() % 5), Value: pick(r, fuzzStrings)})
	}
	return out
}

func fuzzList[T any](r *fuzzReader, pool []T) []T {
	var out []T
	for range r.byte() % 3 {
		out = append(out, pick(r, pool))
	}
	return out
}

func fuzzSAs(r *fuzzReader) []workload.ServiceAccountMatch {
	var out []workload.ServiceAccountMatch
	for range r.byte() % 3 {
		out = append(out, workload.ServiceAccountMatch{Namespace: pick(r, fuzzStrings), ServiceAccount: pick(r, fuzzStrings)})
	}
	return out
}

func fuzzMatch(r *fuzzReader) workload.Match {
	var m workload.Match
	fields := uint16(r.byte()) | uint16(r.byte())<<8
	set := func(bit uint) bool { return fields&(1<<bit) != 0 }
	if set(0) {
		m.Namespaces = fuzzStringMatches(r)
	}
	if set(1) {
		m.NotNamespaces = fuzzStringMatches(r)
	}
	if set(2) {
		m.Principals = fuzzStringMatches(r)
	}
	if set(3) {
		m.NotPrincipals = fuzzStringMatches(r)
	}
	if set(4) {
		m.SourceIPs = fuzzList(r, fuzzPrefixes)
	}
	if set(5) {
		m.NotSourceIPs = fuzzList(r, fuzzPrefixes)
	}
	if set(6) {
		m.DestinationIPs = fuzzList(r, fuzzPrefixes)
	}
	if set(7) {
		m.NotDestinationIPs = fuzzList(r, fuzzPrefixes)
	}
	if set(8) {
		m.DestinationPorts = fuzzList(r, fuzzPorts)
	}
	if set(9) {
		m.NotDestinationPorts = fuzzList(r, fuzzPorts)
	}
	if set(10) {
		m.ServiceAccounts = fuzzSAs(r)
	}
	if set(11) {
		m.NotServiceAccounts = fuzzSAs(r)
	}
	return m
}

func fuzzPolicies(r *fuzzReader) []*workload.Policy {
	var ps []*workload.Policy
	for i := range r.byte() % 6 {
		flags := r.byte()
		if flags&0x80 != 0 {
			ps = append(ps, nil)
			continue
		}
		p := &workload.Policy{Name: pick(r, fuzzStrings) + string(rune('0'+i)), Namespace: pick(r, fuzzStrings),
			Action: workload.PolicyAction(flags % 3), DryRun: flags&0x40 != 0}
		if flags&0x20 != 0 {
			p.Rules = [][][]workload.Match{} // empty, not nil
		}
		for range r.byte() % 3 {
			var rule [][]workload.Match
			for range r.byte() % 3 {
				var clause []workload.Match
				for range r.byte() % 3 {
					clause = append(clause, fuzzMatch(r))
				}
				rule = append(rule, clause)
			}
			p.Rules = append(p.Rules, rule)
		}
		ps = append(ps, p)
	}
	return ps
}

func fuzzConn(r *fuzzReader) Conn {
	return Conn{
		Src:         netip.AddrPortFrom(pick(r, fuzzAddrs), pick(r, fuzzPorts)),
		Dst:         netip.AddrPortFrom(pick(r, fuzzAddrs), pick(r, fuzzPorts)),
		SrcIdentity: pick(r, fuzzIDs),
	}
}

// FuzzEvaluate builds random policies and connections and checks that Evaluate and Matches
// never panic and agree with naiveMatches, a direct transcription of the reference rules.
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 0, 1, 1, 1, 1, 1, 0xff, 0x0f, 2, 1, 4, 2, 0, 5})
	f.Add([]byte{5, 0x41, 2, 1, 1, 2, 1, 1, 0x04, 0, 1, 3, 0, 1, 1, 1, 0x10, 0, 1, 1, 1, 2, 1})
	f.Add([]byte("the quick brown fox jumps over the lazy dog, repeatedly and with feeling"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &fuzzReader{b: data}
		policies := fuzzPolicies(r)
		c := fuzzConn(r)

		d := Evaluate(policies, c)
		want := naiveEvaluate(policies, c)
		if d.Allow != want.Allow || d.Policy != want.Policy {
			t.Fatalf("Evaluate = %+v, naive = %+v\npolicies: %s\nconn: %+v", d, want, dumpPolicies(policies), c)
		}
		for _, p := range policies {
			if got, want := Matches(p, c), p != nil && naiveMatches(p, c); got != want {
				t.Fatalf("Matches = %v, naive = %v\npolicy: %s\nconn: %+v", got, want, dumpPolicies([]*workload.Policy{p}), c)
			}
		}
		hasDryRun := false
		for _, p := range policies {
			hasDryRun = hasDryRun || (p != nil && p.DryRun)
		}
		if !hasDryRun && d.DryRun != nil {
			t.Fatalf("DryRun = %q without dry-run policies", d.DryRun)
		}
	})
}

// naiveEvaluate is the reference's assert_rbac, partitioning first and building strings.
func naiveEvaluate(policies []*workload.Policy, c Conn) Decision {
	var allows, denies []*workload.Policy
	for _, p := range policies {
		switch {
		case p == nil || p.DryRun:
		case p.Action == workload.PolicyActionAllow:
			allows = append(allows, p)
		default:
			denies = append(denies, p)
		}
	}
	for _, p := range denies {
		if naiveMatches(p, c) {
			return Decision{Policy: p.Key()}
		}
	}
	if len(allows) == 0 {
		return Decision{Allow: true}
	}
	for _, p := range allows {
		if naiveMatches(p, c) {
			return Decision{Allow: true, Policy: p.Key()}
		}
	}
	return Decision{}
}

// naiveMatches is rbac.rs Authorization::matches over strings.
func naiveMatches(p *workload.Policy, c Conn) bool {
	id, ns := "", ""
	if c.SrcIdentity != nil {
		id, ns = c.SrcIdentity.String(), c.SrcIdentity.Namespace
	}
	unmap := func(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }
	inCIDR := func(pr netip.Prefix, a netip.Addr) bool {
		if pr.Addr().Is4In6() && pr.Bits() >= 96 {
			pr = netip.PrefixFrom(pr.Addr().Unmap(), pr.Bits()-96)
		}
		return pr.Contains(unmap(a))
	}
	if len(p.Rules) == 0 {
		return false
	}
	for _, rule := range p.Rules {
		ruleMatch := true
		for _, clause := range rule {
			clauseMatch := len(clause) == 0
			for _, m := range clause {
				if m.IsEmpty() {
					continue
				}
				ok := naiveKind(m.DestinationIPs, m.NotDestinationIPs, func(pr netip.Prefix) bool { return inCIDR(pr, c.Dst.Addr()) }) &&
					naiveKind(m.SourceIPs, m.NotSourceIPs, func(pr netip.Prefix) bool { return inCIDR(pr, c.Src.Addr()) }) &&
					naiveKind(m.DestinationPorts, m.NotDestinationPorts, func(port uint16) bool { return port == c.Dst.Port() }) &&
					naiveKind(m.ServiceAccounts, m.NotServiceAccounts, func(sa workload.ServiceAccountMatch) bool {
						return c.SrcIdentity != nil && sa.Namespace == c.SrcIdentity.Namespace && sa.ServiceAccount == c.SrcIdentity.ServiceAccount
					}) &&
					naiveKind(m.Principals, m.NotPrincipals, func(sm workload.StringMatch) bool {
						rest, ok := strings.CutPrefix(id, "spiffe://")
						return ok && sm.Matches(rest)
					}) &&
					naiveKind(m.Namespaces, m.NotNamespaces, func(sm workload.StringMatch) bool { return sm.Matches(ns) })
				if ok {
					clauseMatch = true
					break
				}
			}
			ruleMatch = ruleMatch && clauseMatch
		}
		if ruleMatch {
			return true
		}
	}
	return false
}

func naiveKind[T any](pos, neg []T, hit func(T) bool) bool {
	pm := len(pos) == 0
	for _, v := range pos {
		pm = pm || hit(v)
	}
	nm := true
	for _, v := range neg {
		nm = nm && !hit(v)
	}
	return pm && nm
}

func dumpPolicies(ps []*workload.Policy) string {
	var b strings.Builder
	for _, p := range ps {
		if p == nil {
			b.WriteString("\n  <nil>")
			continue
		}
		b.WriteString("\n  ")
		b.WriteString(p.Key())
		b.WriteString(" action=" + p.Action.String())
		if p.DryRun {
			b.WriteString(" dry-run")
		}
		for _, rule := range p.Rules {
			b.WriteString("\n    rule:")
			for _, clause := range rule {
				b.WriteString("\n      clause:")
				for _, m := range clause {
					b.WriteString("\n        ")
					fmt.Fprintf(&b, "%+v", m)
				}
			}
		}
	}
	return b.String()
}
