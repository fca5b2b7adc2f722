package workload

import (
	"errors"
	"fmt"
	"net/netip"

	"istio.io/istio/pkg/workloadapi/security"
)

// convertAuthorization converts an istio.security.Authorization (ztunnel-behavior.md §3.2;
// reference: TryFrom<XdsRbac> in rbac.rs). Groups become rules, Rules become clauses:
// Policy.Rules[group][rules][match].
//
// Deviation from the reference, which silently drops them: a StringMatch with no match type,
// an IP of the wrong length, a prefix length beyond the address size and a port above 65535
// are errors, so that a policy is never applied with fewer conditions than it was sent with
// (dropping a condition can widen an ALLOW or narrow a DENY).
func convertAuthorization(x *security.Authorization) (*Policy, error) {
	if x == nil {
		return nil, errors.New("authorization is empty")
	}
	if x.GetName() == "" || x.GetNamespace() == "" {
		return nil, errors.New("authorization name and namespace must be set")
	}
	p := &Policy{Name: x.GetName(), Namespace: x.GetNamespace(), DryRun: x.GetDryRun()}
	switch sc := x.GetScope(); sc {
	case security.Scope_GLOBAL:
		p.Scope = PolicyScopeGlobal
	case security.Scope_NAMESPACE:
		p.Scope = PolicyScopeNamespace
	case security.Scope_WORKLOAD_SELECTOR:
		p.Scope = PolicyScopeWorkloadSelector
	default:
		return nil, fmt.Errorf("unknown scope %d", sc)
	}
	switch a := x.GetAction(); a {
	case security.Action_ALLOW:
		p.Action = PolicyActionAllow
	case security.Action_DENY:
		p.Action = PolicyActionDeny
	default:
		return nil, fmt.Errorf("unknown action %d", a)
	}
	if len(x.GetGroups()) > 0 {
		p.Rules = make([][][]Match, len(x.GetGroups()))
	}
	for i, g := range x.GetGroups() {
		clauses := make([][]Match, len(g.GetRules()))
		for j, r := range g.GetRules() {
			matches := make([]Match, len(r.GetMatches()))
			for k, m := range r.GetMatches() {
				var err error
				if matches[k], err = convertMatch(m); err != nil {
					return nil, fmt.Errorf("rules[%d][%d][%d]: %w", i, j, k, err)
				}
			}
			clauses[j] = matches
		}
		p.Rules[i] = clauses
	}
	return p, nil
}

func convertMatch(x *security.Match) (Match, error) {
	var m Match
	var err error
	for _, f := range []struct {
		name string
		in   []*security.StringMatch
		out  *[]StringMatch
	}{
		{"namespaces", x.GetNamespaces(), &m.Namespaces},
		{"not namespaces", x.GetNotNamespaces(), &m.NotNamespaces},
		{"principals", x.GetPrincipals(), &m.Principals},
		{"not principals", x.GetNotPrincipals(), &m.NotPrincipals},
	} {
		if *f.out, err = convertStringMatches(f.in); err != nil {
			return Match{}, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	for _, f := range []struct {
		name string
		in   []*security.Address
		out  *[]netip.Prefix
	}{
		{"source IPs", x.GetSourceIps(), &m.SourceIPs},
		{"not source IPs", x.GetNotSourceIps(), &m.NotSourceIPs},
		{"destination IPs", x.GetDestinationIps(), &m.DestinationIPs},
		{"not destination IPs", x.GetNotDestinationIps(), &m.NotDestinationIPs},
	} {
		if *f.out, err = convertCIDRs(f.in); err != nil {
			return Match{}, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if m.DestinationPorts, err = convertPortList(x.GetDestinationPorts()); err != nil {
		return Match{}, fmt.Errorf("destination ports: %w", err)
	}
	if m.NotDestinationPorts, err = convertPortList(x.GetNotDestinationPorts()); err != nil {
		return Match{}, fmt.Errorf("not destination ports: %w", err)
	}
	m.ServiceAccounts = convertServiceAccounts(x.GetServiceAccounts())
	m.NotServiceAccounts = convertServiceAccounts(x.GetNotServiceAccounts())
	return m, nil
}

func convertStringMatches(in []*security.StringMatch) ([]StringMatch, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]StringMatch, len(in))
	for i, sm := range in {
		switch t := sm.GetMatchType().(type) {
		case *security.StringMatch_Exact:
			out[i] = StringMatch{Kind: StringMatchExact, Value: t.Exact}
		case *security.StringMatch_Prefix:
			out[i] = StringMatch{Kind: StringMatchPrefix, Value: t.Prefix}
		case *security.StringMatch_Suffix:
			out[i] = StringMatch{Kind: StringMatchSuffix, Value: t.Suffix}
		case *security.StringMatch_Presence:
			out[i] = StringMatch{Kind: StringMatchPresence}
		default:
			return nil, fmt.Errorf("[%d]: string match has no match type", i)
		}
	}
	return out, nil
}

// convertCIDRs converts addresses with prefix lengths; host bits are kept as sent (matching
// masks them).
func convertCIDRs(in []*security.Address) ([]netip.Prefix, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, len(in))
	for i, a := range in {
		ip, err := ipFromBytes(a.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		if a.GetLength() > uint32(ip.BitLen()) {
			return nil, fmt.Errorf("[%d]: invalid CIDR %s/%d", i, ip, a.GetLength())
		}
		out[i] = netip.PrefixFrom(ip, int(a.GetLength()))
	}
	return out, nil
}

func convertPortList(in []uint32) ([]uint16, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]uint16, len(in))
	for i, p := range in {
		var err error
		if out[i], err = port16(p); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
	}
	return out, nil
}

func convertServiceAccounts(in []*security.ServiceAccountMatch) []ServiceAccountMatch {
	if len(in) == 0 {
		return nil
	}
	out := make([]ServiceAccountMatch, len(in))
	for i, sa := range in {
		out[i] = ServiceAccountMatch{Namespace: sa.GetNamespace(), ServiceAccount: sa.GetServiceAccount()}
	}
	return out
}
