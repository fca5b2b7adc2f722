package authz

import (
	"net/netip"

	"github.com/ztunnel-go/ztunnel/workload"
)

// Matches reports whether policy p matches connection c, ignoring p's action and dry-run flag.
//
// Structure: the rules are ORed and an empty rule list never matches; the clauses of a rule
// are ANDed and a rule with no clauses matches; the matches of a clause are ORed, a clause
// with no matches is true, and a Match with no conditions at all is skipped (it never makes
// its clause true). Within a Match every field kind must pass, where a kind passes when its
// positive list is empty or has a hit, and its negative list is empty or has no hit.
//
// Fields:
//   - DestinationIPs / SourceIPs: the address is inside the CIDR. IPv4-mapped IPv6 addresses
//     (and IPv4-mapped prefixes of length >= 96) compare as IPv4; an IPv6 prefix such as ::/0
//     never contains an IPv4 address. Zones are ignored.
//   - DestinationPorts: equal to the destination port.
//   - ServiceAccounts: the peer identity's namespace and service account are both equal.
//     A plaintext peer (no identity) hits nothing: the positive list fails, the negative
//     list passes.
//   - Principals: the StringMatch is applied to the identity without "spiffe://", i.e.
//     "td/ns/NS/sa/SA". A plaintext peer hits nothing, not even Presence or Prefix "".
//   - Namespaces: the StringMatch is applied to the identity's namespace, which is "" for a
//     plaintext peer (so Exact "", Prefix "" and Suffix "" hit, Presence does not).
//
// StringMatch kinds: Exact, Prefix, Suffix, Presence (non-empty); an unknown kind hits
// nothing. A nil policy never matches.
func Matches(p *workload.Policy, c Conn) bool {
	if p == nil {
		return false
	}
	m := newMatcher(&c)
	return m.policy(p)
}

// matcher holds what the field checks read from one connection, computed once per
// Evaluate or Matches call. It is built on the stack and never escapes.
type matcher struct {
	src, dst netip.Addr // unmapped, zone-free
	port     uint16
	id       *Identity      // nil for plaintext
	ns       string         // id.Namespace, or "" for plaintext
	pp       principalParts // id's principal; zero for plaintext
}

func newMatcher(c *Conn) matcher {
	m := matcher{
		src:  canonAddr(c.Src.Addr()),
		dst:  canonAddr(c.Dst.Addr()),
		port: c.Dst.Port(),
		id:   c.SrcIdentity,
	}
	if m.id != nil {
		m.ns = m.id.Namespace
		m.pp = newPrincipalParts(m.id)
	}
	return m
}

// policy implements Matches for one policy.
func (m *matcher) policy(p *workload.Policy) bool {
	for _, rule := range p.Rules {
		if m.rule(rule) {
			return true
		}
	}
	return false
}

// rule reports whether every clause of the rule holds (true for no clauses).
func (m *matcher) rule(clauses [][]workload.Match) bool {
	for _, clause := range clauses {
		if !m.clause(clause) {
			return false
		}
	}
	return true
}

// clause reports whether any non-empty match holds; a clause with no matches holds.
func (m *matcher) clause(matches []workload.Match) bool {
	if len(matches) == 0 {
		return true
	}
	for i := range matches {
		mt := &matches[i]
		if !mt.IsEmpty() && m.match(mt) {
			return true
		}
	}
	return false
}

// match reports whether every field kind of mt passes.
func (m *matcher) match(mt *workload.Match) bool {
	return m.ipsPass(mt.DestinationIPs, mt.NotDestinationIPs, m.dst) &&
		m.ipsPass(mt.SourceIPs, mt.NotSourceIPs, m.src) &&
		m.portsPass(mt.DestinationPorts, mt.NotDestinationPorts) &&
		m.serviceAccountsPass(mt.ServiceAccounts, mt.NotServiceAccounts) &&
		m.principalsPass(mt.Principals, mt.NotPrincipals) &&
		m.namespacesPass(mt.Namespaces, mt.NotNamespaces)
}

// The xxxPass helpers apply "(positive empty or any hit) and (negative empty or no hit)".
// An empty list has no hit, so "negative empty or no hit" is just "no hit".

func (m *matcher) ipsPass(pos, neg []netip.Prefix, addr netip.Addr) bool {
	hit := func(list []netip.Prefix) bool {
		for _, p := range list {
			if canonPrefix(p).Contains(addr) {
				return true
			}
		}
		return false
	}
	return (len(pos) == 0 || hit(pos)) && !hit(neg)
}

func (m *matcher) portsPass(pos, neg []uint16) bool {
	hit := func(list []uint16) bool {
		for _, p := range list {
			if p == m.port {
				return true
			}
		}
		return false
	}
	return (len(pos) == 0 || hit(pos)) && !hit(neg)
}

func (m *matcher) serviceAccountsPass(pos, neg []workload.ServiceAccountMatch) bool {
	hit := func(list []workload.ServiceAccountMatch) bool {
		if m.id == nil {
			return false // no identity matches no service account
		}
		for _, sa := range list {
			if sa.Namespace == m.id.Namespace && sa.ServiceAccount == m.id.ServiceAccount {
				return true
			}
		}
		return false
	}
	return (len(pos) == 0 || hit(pos)) && !hit(neg)
}

func (m *matcher) principalsPass(pos, neg []workload.StringMatch) bool {
	hit := func(list []workload.StringMatch) bool {
		if m.id == nil {
			// The reference strips "spiffe://" from the (empty) identity string and
			// fails every match when the prefix is absent.
			return false
		}
		for _, sm := range list {
			if m.pp.matches(sm) {
				return true
			}
		}
		return false
	}
	return (len(pos) == 0 || hit(pos)) && !hit(neg)
}

func (m *matcher) namespacesPass(pos, neg []workload.StringMatch) bool {
	hit := func(list []workload.StringMatch) bool {
		for _, sm := range list {
			if sm.Matches(m.ns) {
				return true
			}
		}
		return false
	}
	return (len(pos) == 0 || hit(pos)) && !hit(neg)
}

// canonAddr makes an address comparable with the policy prefixes: IPv4-mapped IPv6 becomes
// IPv4 and any zone is dropped (netip.Prefix.Contains never matches a zoned address).
func canonAddr(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// canonPrefix turns an IPv4-mapped prefix (::ffff:a.b.c.d/96+n) into a.b.c.d/n so it
// contains the unmapped addresses; any other prefix is returned as is.
func canonPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}
