package authz

import (
	"net/netip"
	"testing"

	"github.com/ztunnel-go/ztunnel/workload"
)

// Connections of the reference's rbac.rs tests, plus address-family variants.
var (
	idTLS = &Identity{TrustDomain: "td", Namespace: "namespace", ServiceAccount: "account"}
	idAlt = &Identity{TrustDomain: "td-alt", Namespace: "ns-alt", ServiceAccount: "sa=alt"}

	conns = map[string]Conn{
		"plain":  {Src: ap("127.0.0.1:1234"), Dst: ap("127.0.0.2:8080")},
		"tls":    {Src: ap("127.0.0.1:1234"), Dst: ap("127.0.0.2:8080"), SrcIdentity: idTLS},
		"alt":    {Src: ap("127.0.0.3:1234"), Dst: ap("127.0.0.4:9090"), SrcIdentity: idAlt},
		"v6":     {Src: ap("[2001:db8::1]:1234"), Dst: ap("[2001:db8::2]:8080"), SrcIdentity: idTLS},
		"mapped": {Src: ap("[::ffff:127.0.0.1]:1234"), Dst: ap("[::ffff:127.0.0.2]:8080"), SrcIdentity: idTLS},
		"zoned":  {Src: ap("[fe80::1%eth0]:1234"), Dst: ap("[fe80::2%eth0]:8080")},
		"empty":  {}, // invalid addresses, port 0
	}
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func pfx(s string) netip.Prefix  { return netip.MustParsePrefix(s) }

func exact(v string) workload.StringMatch {
	return workload.StringMatch{Kind: workload.StringMatchExact, Value: v}
}
func prefix(v string) workload.StringMatch {
	return workload.StringMatch{Kind: workload.StringMatchPrefix, Value: v}
}
func suffix(v string) workload.StringMatch {
	return workload.StringMatch{Kind: workload.StringMatchSuffix, Value: v}
}

var presence = workload.StringMatch{Kind: workload.StringMatchPresence}

func sms(m ...workload.StringMatch) []workload.StringMatch { return m }
func cidrs(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, pfx(p))
	}
	return out
}

var saAccount = []workload.ServiceAccountMatch{{Namespace: "namespace", ServiceAccount: "account"}}

// onePolicy wraps a single Match into an ALLOW policy, like the reference's rbac_test! macro.
func onePolicy(m workload.Match) *workload.Policy {
	return &workload.Policy{Name: "p", Namespace: "namespace", Rules: [][][]workload.Match{{{m}}}}
}

// TestMatchesFields checks every match field, positive and negative, for plaintext and
// mTLS peers, each StringMatch kind, and CIDR edge cases. want maps a conns key to the
// expected Matches result.
func TestMatchesFields(t *testing.T) {
	tests := []struct {
		name string
		m    workload.Match
		want map[string]bool
	}{
		// Ported from rbac.rs (namespaces .. not_destination_ports, cidr_range).
		{"namespaces", workload.Match{Namespaces: sms(exact("namespace"))},
			map[string]bool{"plain": false, "tls": true, "alt": false}},
		{"not_namespaces", workload.Match{NotNamespaces: sms(exact("namespace"))},
			map[string]bool{"plain": true, "tls": false, "alt": true}},
		{"service_accounts", workload.Match{ServiceAccounts: saAccount},
			map[string]bool{"plain": false, "tls": true, "alt": false}},
		{"not_service_accounts", workload.Match{NotServiceAccounts: saAccount},
			map[string]bool{"plain": true, "tls": false, "alt": true}},
		{"principals", workload.Match{Principals: sms(exact("td/ns/namespace/sa/account"))},
			map[string]bool{"plain": false, "tls": true, "alt": false}},
		{"not_principals", workload.Match{NotPrincipals: sms(exact("td/ns/namespace/sa/account"))},
			map[string]bool{"plain": true, "tls": false, "alt": true}},
		{"source_ips", workload.Match{SourceIPs: cidrs("127.0.0.1/32")},
			map[string]bool{"plain": true, "tls": true, "alt": false}},
		{"not_source_ips", workload.Match{NotSourceIPs: cidrs("127.0.0.1/32")},
			map[string]bool{"plain": false, "tls": false, "alt": true}},
		{"destination_ips", workload.Match{DestinationIPs: cidrs("127.0.0.2/32")},
			map[string]bool{"plain": true, "tls": true, "alt": false}},
		{"not_destination_ips", workload.Match{NotDestinationIPs: cidrs("127.0.0.2/32")},
			map[string]bool{"plain": false, "tls": false, "alt": true}},
		{"cidr_range", workload.Match{DestinationIPs: cidrs("127.0.0.1/24")},
			map[string]bool{"plain": true, "tls": true, "alt": true}},
		{"destination_ports", workload.Match{DestinationPorts: []uint16{8080}},
			map[string]bool{"plain": true, "tls": true, "alt": false}},
		{"not_destination_ports", workload.Match{NotDestinationPorts: []uint16{8080}},
			map[string]bool{"plain": false, "tls": false, "alt": true}},

		// Namespaces: every StringMatch kind; plaintext is the namespace "".
		{"namespaces prefix", workload.Match{Namespaces: sms(prefix("name"))},
			map[string]bool{"plain": false, "tls": true, "alt": false}},
		{"namespaces suffix", workload.Match{Namespaces: sms(suffix("space"))},
			map[string]bool{"plain": false, "tls": true, "alt": false}},
		{"namespaces presence", workload.Match{Namespaces: sms(presence)},
			map[string]bool{"plain": false, "tls": true, "alt": true}},
		{"not_namespaces presence", workload.Match{NotNamespaces: sms(presence)},
			map[string]bool{"plain": true, "tls": false, "alt": false}},
		{"namespaces exact empty hits plaintext", workload.Match{Namespaces: sms(exact(""))},
			map[string]bool{"plain": true, "tls": false}},
		{"namespaces prefix empty hits all", workload.Match{Namespaces: sms(prefix(""))},
			map[string]bool{"plain": true, "tls": true}},
		{"not_namespaces suffix empty denies all", workload.Match{NotNamespaces: sms(suffix(""))},
			map[string]bool{"plain": false, "tls": false}},
		{"namespaces any of list", workload.Match{Namespaces: sms(exact("x"), exact("ns-alt"))},
			map[string]bool{"plain": false, "tls": false, "alt": true}},
		{"namespaces unknown kind", workload.Match{Namespaces: sms(workload.StringMatch{Kind: 9, Value: "namespace"})},
			map[string]bool{"plain": false, "tls": false}},
		{"not_namespaces unknown kind", workload.Match{NotNamespaces: sms(workload.StringMatch{Kind: 9})},
			map[string]bool{"plain": true, "tls": true}},

		// Principals: matched without "spiffe://"; plaintext hits nothing.
		{"principals exact with scheme", workload.Match{Principals: sms(exact("spiffe://td/ns/namespace/sa/account"))},
			map[string]bool{"tls": false}},
		{"principals exact too short", workload.Match{Principals: sms(exact("td/ns/namespace/sa/accoun"))},
			map[string]bool{"tls": false}},
		{"principals exact too long", workload.Match{Principals: sms(exact("td/ns/namespace/sa/accounts"))},
			map[string]bool{"tls": false}},
		{"principals exact empty", workload.Match{Principals: sms(exact(""))},
			map[string]bool{"plain": false, "tls": false}},
		{"principals exact alt", workload.Match{Principals: sms(exact("td-alt/ns/ns-alt/sa/sa=alt"))},
			map[string]bool{"tls": false, "alt": true}},
		{"principals prefix", workload.Match{Principals: sms(prefix("td/ns/"))},
			map[string]bool{"plain": false, "tls": true, "alt": false}},
		{"principals prefix inside a part", workload.Match{Principals: sms(prefix("td/ns/name"))},
			map[string]bool{"tls": true, "alt": false}},
		{"principals prefix whole", workload.Match{Principals: sms(prefix("td/ns/namespace/sa/account"))},
			map[string]bool{"tls": true}},
		{"principals prefix longer", workload.Match{Principals: sms(prefix("td/ns/namespace/sa/accountX"))},
			map[string]bool{"tls": false}},
		{"principals prefix mismatch late", workload.Match{Principals: sms(prefix("td/ns/namespace/sb"))},
			map[string]bool{"tls": false}},
		{"principals prefix empty", workload.Match{Principals: sms(prefix(""))},
			map[string]bool{"plain": false, "tls": true}},
		{"principals suffix", workload.Match{Principals: sms(suffix("/sa/account"))},
			map[string]bool{"plain": false, "tls": true, "alt": false}},
		{"principals suffix across parts", workload.Match{Principals: sms(suffix("space/sa/account"))},
			map[string]bool{"tls": true}},
		{"principals suffix whole", workload.Match{Principals: sms(suffix("td/ns/namespace/sa/account"))},
			map[string]bool{"tls": true}},
		{"principals suffix longer", workload.Match{Principals: sms(suffix("xtd/ns/namespace/sa/account"))},
			map[string]bool{"tls": false}},
		{"principals suffix mismatch early", workload.Match{Principals: sms(suffix("ud/ns/namespace/sa/account"))},
			map[string]bool{"tls": false}},
		{"principals suffix empty", workload.Match{Principals: sms(suffix(""))},
			map[string]bool{"plain": false, "tls": true}},
		{"principals presence", workload.Match{Principals: sms(presence)},
			map[string]bool{"plain": false, "tls": true, "alt": true}},
		{"not_principals presence", workload.Match{NotPrincipals: sms(presence)},
			map[string]bool{"plain": true, "tls": false, "alt": false}},
		{"not_principals prefix empty", workload.Match{NotPrincipals: sms(prefix(""))},
			map[string]bool{"plain": true, "tls": false}},
		{"principals unknown kind", workload.Match{Principals: sms(workload.StringMatch{Kind: 9})},
			map[string]bool{"tls": false}},

		// Service accounts: both parts must be equal; trust domain is ignored.
		{"service_accounts sa differs", workload.Match{ServiceAccounts: []workload.ServiceAccountMatch{{Namespace: "namespace", ServiceAccount: "other"}}},
			map[string]bool{"tls": false}},
		{"service_accounts ns differs", workload.Match{ServiceAccounts: []workload.ServiceAccountMatch{{Namespace: "other", ServiceAccount: "account"}}},
			map[string]bool{"tls": false}},
		{"service_accounts any of list", workload.Match{ServiceAccounts: []workload.ServiceAccountMatch{{Namespace: "x", ServiceAccount: "y"}, {Namespace: "ns-alt", ServiceAccount: "sa=alt"}}},
			map[string]bool{"plain": false, "tls": false, "alt": true}},
		{"service_accounts empty pair", workload.Match{ServiceAccounts: []workload.ServiceAccountMatch{{}}},
			map[string]bool{"plain": false, "tls": false}},

		// CIDRs.
		{"dst /0 v4", workload.Match{DestinationIPs: cidrs("0.0.0.0/0")},
			map[string]bool{"plain": true, "mapped": true, "v6": false, "zoned": false, "empty": false}},
		{"dst /0 v6", workload.Match{DestinationIPs: cidrs("::/0")},
			map[string]bool{"plain": false, "mapped": false, "v6": true, "zoned": true, "empty": false}},
		{"not dst /0 v6", workload.Match{NotDestinationIPs: cidrs("::/0")},
			map[string]bool{"plain": true, "v6": false, "empty": true}},
		{"dst /32 mapped conn", workload.Match{DestinationIPs: cidrs("127.0.0.2/32")},
			map[string]bool{"mapped": true, "v6": false}},
		{"src /32 mapped conn", workload.Match{SourceIPs: cidrs("127.0.0.1/32")},
			map[string]bool{"mapped": true}},
		{"dst mapped /104", workload.Match{DestinationIPs: cidrs("::ffff:127.0.0.0/104")},
			map[string]bool{"plain": true, "mapped": true, "alt": true, "v6": false}},
		{"dst mapped /128", workload.Match{DestinationIPs: cidrs("::ffff:127.0.0.2/128")},
			map[string]bool{"plain": true, "mapped": true, "alt": false}},
		{"not src mapped /128", workload.Match{NotSourceIPs: cidrs("::ffff:127.0.0.1/128")},
			map[string]bool{"plain": false, "mapped": false, "alt": true}},
		{"dst v6 /32", workload.Match{DestinationIPs: cidrs("2001:db8::/32")},
			map[string]bool{"v6": true, "plain": false}},
		{"dst v6 /128", workload.Match{DestinationIPs: cidrs("2001:db8::2/128")},
			map[string]bool{"v6": true}},
		{"src v6 /128 other", workload.Match{SourceIPs: cidrs("2001:db8::2/128")},
			map[string]bool{"v6": false}},
		{"zoned addresses ignore zone", workload.Match{DestinationIPs: cidrs("fe80::/10"), SourceIPs: cidrs("fe80::1/128")},
			map[string]bool{"zoned": true}},
		{"invalid prefix never hits", workload.Match{DestinationIPs: []netip.Prefix{{}}},
			map[string]bool{"plain": false, "empty": false}},
		{"not invalid prefix passes", workload.Match{NotDestinationIPs: []netip.Prefix{{}}},
			map[string]bool{"plain": true, "empty": true}},
		{"dst any of list", workload.Match{DestinationIPs: cidrs("10.0.0.0/8", "127.0.0.4/32")},
			map[string]bool{"plain": false, "alt": true}},
		{"positive and negative of one kind", workload.Match{DestinationIPs: cidrs("127.0.0.0/8"), NotDestinationIPs: cidrs("127.0.0.4/32")},
			map[string]bool{"plain": true, "alt": false}},

		// Ports.
		{"destination_ports any of list", workload.Match{DestinationPorts: []uint16{1, 9090}},
			map[string]bool{"plain": false, "alt": true}},
		{"port 0", workload.Match{DestinationPorts: []uint16{0}},
			map[string]bool{"plain": false, "empty": true}},

		// Field kinds are ANDed.
		{"namespace and port", workload.Match{Namespaces: sms(exact("namespace")), DestinationPorts: []uint16{8080}},
			map[string]bool{"plain": false, "tls": true, "alt": false}},
		{"namespace and wrong port", workload.Match{Namespaces: sms(exact("namespace")), DestinationPorts: []uint16{9090}},
			map[string]bool{"tls": false}},
		{"every field passes", workload.Match{
			Namespaces: sms(exact("namespace")), NotNamespaces: sms(exact("x")),
			Principals: sms(suffix("/sa/account")), NotPrincipals: sms(exact("x")),
			SourceIPs: cidrs("127.0.0.0/8"), NotSourceIPs: cidrs("10.0.0.0/8"),
			DestinationIPs: cidrs("127.0.0.2/32"), NotDestinationIPs: cidrs("127.0.0.3/32"),
			DestinationPorts: []uint16{8080}, NotDestinationPorts: []uint16{80},
			ServiceAccounts: saAccount, NotServiceAccounts: []workload.ServiceAccountMatch{{Namespace: "x", ServiceAccount: "y"}},
		}, map[string]bool{"plain": false, "tls": true, "mapped": true, "alt": false}},
	}
	for _, tt := range tests {
		p := onePolicy(tt.m)
		for conn, want := range tt.want {
			c, ok := conns[conn]
			if !ok {
				t.Fatalf("%s: unknown conn %q", tt.name, conn)
			}
			if got := Matches(p, c); got != want {
				t.Errorf("%s: Matches(%s) = %v, want %v", tt.name, conn, got, want)
			}
		}
	}
}

// TestMatchesStructure checks how rules, clauses and matches combine.
func TestMatchesStructure(t *testing.T) {
	nsA := workload.Match{Namespaces: sms(exact("a"))}
	nsB := workload.Match{Namespaces: sms(exact("b"))}
	port80 := workload.Match{DestinationPorts: []uint16{80}}
	from := func(ns string, port uint16) Conn {
		return Conn{
			Src:         ap("127.0.0.1:1234"),
			Dst:         netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port),
			SrcIdentity: &Identity{TrustDomain: "td", Namespace: ns, ServiceAccount: "account"},
		}
	}
	tests := []struct {
		name  string
		rules [][][]workload.Match
		conn  Conn
		want  bool
	}{
		// rbac_empty_policy
		{"no rules", nil, conns["plain"], false},
		{"empty rule list", [][][]workload.Match{}, conns["plain"], false},
		{"rule without clauses", [][][]workload.Match{{}}, conns["plain"], true},
		{"clause without matches", [][][]workload.Match{{{}}}, conns["plain"], true},
		{"only an empty match", [][][]workload.Match{{{{}}}}, conns["plain"], false},
		{"empty match is skipped, next hits", [][][]workload.Match{{{{}, nsA}}}, from("a", 1), true},
		{"empty match is skipped, next misses", [][][]workload.Match{{{{}, nsA}}}, from("b", 1), false},
		{"empty clause ANDed with failing clause", [][][]workload.Match{{{}, {nsA}}}, from("b", 1), false},
		{"empty clause ANDed with passing clause", [][][]workload.Match{{{}, {nsA}}}, from("a", 1), true},
		{"empty rule ORed with failing rule", [][][]workload.Match{{{nsA}}, {}}, from("b", 1), true},
		// rbac_nesting: (ns a OR ns b) AND port 80
		{"nesting ns a", [][][]workload.Match{{{nsA, nsB}, {port80}}}, from("a", 80), true},
		{"nesting ns b", [][][]workload.Match{{{nsA, nsB}, {port80}}}, from("b", 80), true},
		{"nesting wrong ns", [][][]workload.Match{{{nsA, nsB}, {port80}}}, from("bad", 80), false},
		{"nesting wrong port", [][][]workload.Match{{{nsA, nsB}, {port80}}}, from("b", 12345), false},
		// rbac_multi_rule: rule(ns a) OR rule(ns b)
		{"multi rule a", [][][]workload.Match{{{nsA}}, {{nsB}}}, from("a", 80), true},
		{"multi rule b", [][][]workload.Match{{{nsA}}, {{nsB}}}, from("b", 80), true},
		{"multi rule wrong ns", [][][]workload.Match{{{nsA}}, {{nsB}}}, from("bad", 80), false},
	}
	for _, tt := range tests {
		for _, action := range []workload.PolicyAction{workload.PolicyActionAllow, workload.PolicyActionDeny} {
			for _, dry := range []bool{false, true} {
				p := &workload.Policy{Name: "p", Namespace: "ns", Action: action, DryRun: dry, Rules: tt.rules}
				if got := Matches(p, tt.conn); got != tt.want {
					t.Errorf("%s (action %v, dry-run %v): Matches = %v, want %v", tt.name, action, dry, got, tt.want)
				}
			}
		}
	}
	if Matches(nil, conns["tls"]) {
		t.Error("Matches(nil policy) = true, want false")
	}
}

// TestPrincipalMatchesAgreesWithString checks the allocation-free principal matcher
// against workload.StringMatch.Matches on the built string.
func TestPrincipalMatchesAgreesWithString(t *testing.T) {
	ids := []Identity{*idTLS, *idAlt, {}, {TrustDomain: "a/ns/b", Namespace: "/sa/", ServiceAccount: ""}}
	values := []string{"", "t", "td", "td/", "td/ns/namespace/sa/account", "/sa/account", "account",
		"ns/", "/ns/", "/ns//sa/", "a/ns/b/ns//sa//sa/", "td/ns/namespace/sa/accountx", "xtd/ns/namespace/sa/account"}
	for _, id := range ids {
		s := id.principal()
		pp := newPrincipalParts(&id)
		values := append(values, s, s[:len(s)/2], s[len(s)/2:])
		for _, v := range values {
			for kind := range workload.StringMatchKind(6) {
				sm := workload.StringMatch{Kind: kind, Value: v}
				if got, want := pp.matches(sm), sm.Matches(s); got != want {
					t.Errorf("principalParts.matches(%v %q, %q) = %v, want %v", kind, v, s, got, want)
				}
			}
		}
	}
}

func TestIdentityString(t *testing.T) {
	if got, want := idTLS.String(), "spiffe://td/ns/namespace/sa/account"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
