package workload

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// StringMatch compares a string (a namespace or principal) with Value.
type StringMatch struct {
	Kind  StringMatchKind
	Value string // unused for StringMatchPresence
}

// Matches reports whether s satisfies the match.
func (m StringMatch) Matches(s string) bool {
	switch m.Kind {
	case StringMatchExact:
		return s == m.Value
	case StringMatchPrefix:
		return strings.HasPrefix(s, m.Value)
	case StringMatchSuffix:
		return strings.HasSuffix(s, m.Value)
	case StringMatchPresence:
		return s != ""
	}
	return false
}

// ServiceAccountMatch matches a peer identity's namespace and service account exactly.
type ServiceAccountMatch struct{ Namespace, ServiceAccount string }

// Match is one L4 match of an authorization clause. Within a Match every non-empty field
// must pass; a field passes when (its positive list is empty or has a hit) and (its negative
// list is empty or has no hit). An all-empty Match matches nothing (ztunnel-behavior.md §8).
type Match struct {
	Namespaces, NotNamespaces, Principals, NotPrincipals       []StringMatch
	SourceIPs, NotSourceIPs, DestinationIPs, NotDestinationIPs []netip.Prefix
	DestinationPorts, NotDestinationPorts                      []uint16
	ServiceAccounts, NotServiceAccounts                        []ServiceAccountMatch
}

// IsEmpty reports whether the match has no conditions at all.
func (m *Match) IsEmpty() bool {
	return len(m.Namespaces)+len(m.NotNamespaces)+len(m.Principals)+len(m.NotPrincipals)+
		len(m.SourceIPs)+len(m.NotSourceIPs)+len(m.DestinationIPs)+len(m.NotDestinationIPs)+
		len(m.DestinationPorts)+len(m.NotDestinationPorts)+
		len(m.ServiceAccounts)+len(m.NotServiceAccounts) == 0
}

// Policy is an L4 authorization policy. Rules are ORed; the clauses of a rule are ANDed; the
// matches of a clause are ORed: Rules[rule][clause][match].
type Policy struct {
	Name, Namespace string
	Scope           PolicyScope
	Action          PolicyAction
	DryRun          bool
	Rules           [][][]Match
}

// Key returns "namespace/name".
func (p *Policy) Key() string { return p.Namespace + "/" + p.Name }

// validate checks what NewSnapshot needs from a policy.
func (p *Policy) validate() error {
	if p.Name == "" {
		return errors.New("name is empty")
	}
	if p.Namespace == "" {
		return errors.New("namespace is empty")
	}
	if int(p.Scope) >= len(policyScopeNames) {
		return fmt.Errorf("invalid scope %d", p.Scope)
	}
	if int(p.Action) >= len(policyActionNames) {
		return fmt.Errorf("invalid action %d", p.Action)
	}
	for i, rule := range p.Rules {
		for j, clause := range rule {
			for k := range clause {
				if err := clause[k].validate(); err != nil {
					return fmt.Errorf("rules[%d][%d][%d]: %w", i, j, k, err)
				}
			}
		}
	}
	return nil
}

func (m *Match) validate() error {
	for _, l := range [][]StringMatch{m.Namespaces, m.NotNamespaces, m.Principals, m.NotPrincipals} {
		for _, sm := range l {
			if int(sm.Kind) >= len(stringMatchNames) {
				return fmt.Errorf("invalid string match kind %d", sm.Kind)
			}
		}
	}
	for _, l := range [][]netip.Prefix{m.SourceIPs, m.NotSourceIPs, m.DestinationIPs, m.NotDestinationIPs} {
		for _, p := range l {
			if !p.IsValid() {
				return fmt.Errorf("invalid CIDR %s", p)
			}
		}
	}
	return nil
}
