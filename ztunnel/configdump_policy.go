package ztunnel

import (
	"encoding/json"
	"net/netip"

	"github.com/ztunnel-go/ztunnel/workload"
)

// policyJSON is an authorization policy in /config_dump: rules[rule][clause][match].
type policyJSON struct {
	Name      string          `json:"name"`
	Namespace string          `json:"namespace"`
	Scope     string          `json:"scope"`
	Action    string          `json:"action"`
	Rules     [][][]matchJSON `json:"rules"`
	DryRun    bool            `json:"dryRun"`
}

// matchJSON is one match; empty lists are left out, as the reference does.
type matchJSON struct {
	Namespaces          []stringMatchJSON `json:"namespaces,omitempty"`
	NotNamespaces       []stringMatchJSON `json:"notNamespaces,omitempty"`
	ServiceAccounts     []saMatchJSON     `json:"serviceAccounts,omitempty"`
	NotServiceAccounts  []saMatchJSON     `json:"notServiceAccounts,omitempty"`
	Principals          []stringMatchJSON `json:"principals,omitempty"`
	NotPrincipals       []stringMatchJSON `json:"notPrincipals,omitempty"`
	SourceIPs           []string          `json:"sourceIps,omitempty"`
	NotSourceIPs        []string          `json:"notSourceIps,omitempty"`
	DestinationIPs      []string          `json:"destinationIps,omitempty"`
	NotDestinationIPs   []string          `json:"notDestinationIps,omitempty"`
	DestinationPorts    []uint16          `json:"destinationPorts,omitempty"`
	NotDestinationPorts []uint16          `json:"notDestinationPorts,omitempty"`
}

type saMatchJSON struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// stringMatchJSON marshals as an object with one key naming the kind: {"Exact": "ns"},
// {"Prefix": "kube-"}, {"Suffix": "-system"} or {"Presence": []}.
type stringMatchJSON workload.StringMatch

func (m stringMatchJSON) MarshalJSON() ([]byte, error) {
	kind := m.Kind
	if kind == workload.StringMatchPresence {
		return json.Marshal(map[string][]string{kind.String(): {}})
	}
	return json.Marshal(map[string]string{kind.String(): m.Value})
}

func dumpPolicy(p *workload.Policy) policyJSON {
	out := policyJSON{
		Name:      p.Name,
		Namespace: p.Namespace,
		Scope:     p.Scope.String(),
		Action:    p.Action.String(),
		Rules:     make([][][]matchJSON, 0, len(p.Rules)),
		DryRun:    p.DryRun,
	}
	for _, rule := range p.Rules {
		clauses := make([][]matchJSON, 0, len(rule))
		for _, clause := range rule {
			matches := make([]matchJSON, 0, len(clause))
			for i := range clause {
				matches = append(matches, dumpMatch(&clause[i]))
			}
			clauses = append(clauses, matches)
		}
		out.Rules = append(out.Rules, clauses)
	}
	return out
}

func dumpMatch(m *workload.Match) matchJSON {
	return matchJSON{
		Namespaces:          dumpStringMatches(m.Namespaces),
		NotNamespaces:       dumpStringMatches(m.NotNamespaces),
		ServiceAccounts:     dumpSAMatches(m.ServiceAccounts),
		NotServiceAccounts:  dumpSAMatches(m.NotServiceAccounts),
		Principals:          dumpStringMatches(m.Principals),
		NotPrincipals:       dumpStringMatches(m.NotPrincipals),
		SourceIPs:           dumpPrefixes(m.SourceIPs),
		NotSourceIPs:        dumpPrefixes(m.NotSourceIPs),
		DestinationIPs:      dumpPrefixes(m.DestinationIPs),
		NotDestinationIPs:   dumpPrefixes(m.NotDestinationIPs),
		DestinationPorts:    m.DestinationPorts,
		NotDestinationPorts: m.NotDestinationPorts,
	}
}

func dumpStringMatches(ms []workload.StringMatch) []stringMatchJSON {
	if len(ms) == 0 {
		return nil
	}
	out := make([]stringMatchJSON, len(ms))
	for i, m := range ms {
		out[i] = stringMatchJSON(m)
	}
	return out
}

func dumpSAMatches(ms []workload.ServiceAccountMatch) []saMatchJSON {
	if len(ms) == 0 {
		return nil
	}
	out := make([]saMatchJSON, len(ms))
	for i, m := range ms {
		out[i] = saMatchJSON{Namespace: m.Namespace, ServiceAccount: m.ServiceAccount}
	}
	return out
}

// dumpPrefixes spells CIDRs as "10.0.0.0/8"; a single address is "10.1.2.3/32".
func dumpPrefixes(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
