package testbed

import (
	"cmp"
	"slices"
)

// Local config form of policies (the "policies" list of the proxy's local config schema, as parsed
// by package workload). Each Match of a PolicySpec rule becomes a clause holding that one match.

type localPolicy struct {
	Name      string           `yaml:"name"`
	Namespace string           `yaml:"namespace"`
	Scope     string           `yaml:"scope"`
	Action    string           `yaml:"action"`
	Rules     [][][]localMatch `yaml:"rules"` // rules, clauses, matches
}

type localMatch struct {
	Principals       []localStringMatch `yaml:"principals,omitempty"`
	NotPrincipals    []localStringMatch `yaml:"notPrincipals,omitempty"`
	Namespaces       []localStringMatch `yaml:"namespaces,omitempty"`
	DestinationPorts []uint16           `yaml:"destinationPorts,omitempty,flow"`
	SourceIPs        []string           `yaml:"sourceIps,omitempty,flow"`
}

type localStringMatch struct {
	Exact string `yaml:"Exact"`
}

// renderPolicies converts policies to their local config form, sorted by namespace and name; nil
// for none (the list is then left out).
func renderPolicies(policies []policyRecord) []localPolicy {
	var out []localPolicy
	for _, p := range policies {
		lp := localPolicy{Name: p.Name, Namespace: p.Namespace, Scope: p.Scope, Action: p.Action, Rules: [][][]localMatch{}}
		for _, rule := range p.Rules {
			clauses := [][]localMatch{}
			for _, m := range rule {
				clauses = append(clauses, []localMatch{localMatchOf(m)})
			}
			lp.Rules = append(lp.Rules, clauses)
		}
		out = append(out, lp)
	}
	slices.SortFunc(out, func(a, b localPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func localMatchOf(m matchRecord) localMatch {
	exact := func(ss []string) []localStringMatch {
		var out []localStringMatch
		for _, s := range ss {
			out = append(out, localStringMatch{Exact: s})
		}
		return out
	}
	lm := localMatch{
		Principals:       exact(m.Principals),
		NotPrincipals:    exact(m.NotPrincipals),
		Namespaces:       exact(m.Namespaces),
		DestinationPorts: m.DestinationPorts,
	}
	for _, p := range m.SourceIPs {
		lm.SourceIPs = append(lm.SourceIPs, p.String())
	}
	return lm
}
