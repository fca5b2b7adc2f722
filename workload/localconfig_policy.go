package workload

import (
	"fmt"
	"net/netip"

	"go.yaml.in/yaml/v3"
)

// policy decodes policies[i].
func (d *decoder) policy(i int, n *yaml.Node) (*Policy, error) {
	d.entry = fmt.Sprintf("policies[%d]", i)
	ns, name := scalarValue(n, "namespace"), scalarValue(n, "name")
	if ns != "" && name != "" {
		d.entry += fmt.Sprintf(" (policy %q)", ns+"/"+name)
	}
	defer func() { d.entry = "" }()

	p := &Policy{}
	err := d.mapping(n, "", map[string]handler{
		"name":      d.setStr(&p.Name),
		"namespace": d.setStr(&p.Namespace),
		"scope":     enum(d, &p.Scope, ParsePolicyScope),
		"action":    enum(d, &p.Action, ParsePolicyAction),
		"dryRun":    d.setBool(&p.DryRun),
		"rules": func(v *yaml.Node, f string) error {
			p.Rules = [][][]Match{}
			return d.seq(v, f, func(rule *yaml.Node, f string) error {
				clauses := [][]Match{}
				err := d.seq(rule, f, func(clause *yaml.Node, f string) error {
					matches := []Match{}
					err := d.seq(clause, f, func(m *yaml.Node, f string) error {
						match, err := d.match(m, f)
						matches = append(matches, match)
						return err
					})
					clauses = append(clauses, matches)
					return err
				})
				p.Rules = append(p.Rules, clauses)
				return err
			})
		},
	}, "name", "namespace", "scope", "action")
	if err == nil {
		err = d.nonEmpty(n, "name", p.Name, "namespace", p.Namespace)
	}
	return p, err
}

// match decodes one authorization Match.
func (d *decoder) match(n *yaml.Node, field string) (Match, error) {
	var m Match
	err := d.mapping(n, field, map[string]handler{
		"namespaces":          d.setStringMatches(&m.Namespaces),
		"notNamespaces":       d.setStringMatches(&m.NotNamespaces),
		"principals":          d.setStringMatches(&m.Principals),
		"notPrincipals":       d.setStringMatches(&m.NotPrincipals),
		"sourceIps":           d.setCIDRs(&m.SourceIPs),
		"notSourceIps":        d.setCIDRs(&m.NotSourceIPs),
		"destinationIps":      d.setCIDRs(&m.DestinationIPs),
		"notDestinationIps":   d.setCIDRs(&m.NotDestinationIPs),
		"destinationPorts":    d.setPorts(&m.DestinationPorts),
		"notDestinationPorts": d.setPorts(&m.NotDestinationPorts),
		"serviceAccounts":     d.setServiceAccounts(&m.ServiceAccounts),
		"notServiceAccounts":  d.setServiceAccounts(&m.NotServiceAccounts),
	})
	return m, err
}

func (d *decoder) setCIDRs(dst *[]netip.Prefix) handler {
	return func(v *yaml.Node, f string) error {
		return d.seq(v, f, func(item *yaml.Node, f string) error {
			p, err := d.cidr(item, f)
			*dst = append(*dst, p)
			return err
		})
	}
}

func (d *decoder) setPorts(dst *[]uint16) handler {
	return func(v *yaml.Node, f string) error {
		return d.seq(v, f, func(item *yaml.Node, f string) error {
			p, err := d.port(item, f, false)
			*dst = append(*dst, p)
			return err
		})
	}
}

func (d *decoder) setServiceAccounts(dst *[]ServiceAccountMatch) handler {
	return func(v *yaml.Node, f string) error {
		return d.seq(v, f, func(item *yaml.Node, f string) error {
			var sa ServiceAccountMatch
			err := d.mapping(item, f, map[string]handler{
				"namespace":      d.setStr(&sa.Namespace),
				"serviceAccount": d.setStr(&sa.ServiceAccount),
			}, "namespace", "serviceAccount")
			*dst = append(*dst, sa)
			return err
		})
	}
}

// setStringMatches decodes a list of {Exact: s} | {Prefix: s} | {Suffix: s} | {Presence: []}.
func (d *decoder) setStringMatches(dst *[]StringMatch) handler {
	return func(v *yaml.Node, f string) error {
		return d.seq(v, f, func(item *yaml.Node, f string) error {
			sm, err := d.stringMatch(item, f)
			*dst = append(*dst, sm)
			return err
		})
	}
}

func (d *decoder) stringMatch(n *yaml.Node, field string) (StringMatch, error) {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		return StringMatch{}, d.fail(n, field, "want exactly one of {Exact: s}, {Prefix: s}, {Suffix: s}, {Presence: []}")
	}
	kn := n.Content[0]
	f := join(field, kn.Value)
	kind, err := ParseStringMatchKind(kn.Value)
	if kn.Kind != yaml.ScalarNode || err != nil {
		return StringMatch{}, d.fail(kn, f, "unknown string match (want Exact, Prefix, Suffix or Presence)")
	}
	v, err := d.resolve(n.Content[1], f)
	if err != nil {
		return StringMatch{}, err
	}
	if kind == StringMatchPresence {
		if !isNull(v) && !(v.Kind != yaml.ScalarNode && len(v.Content) == 0) {
			return StringMatch{}, d.fail(v, f, "want an empty value ([] or null), got %s", kindName(v))
		}
		return StringMatch{Kind: kind}, nil
	}
	s, err := d.str(v, f)
	return StringMatch{Kind: kind, Value: s}, err
}
