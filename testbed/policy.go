package testbed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// PolicySpec describes an L4 authorization policy (istio.security.Authorization). It covers the
// common cases only; tests needing more can push protos to the fake istiod themselves.
type PolicySpec struct {
	// Name and Namespace name the policy. Required.
	Name, Namespace string
	// Scope says which workloads the policy applies to: "Namespace" (the workloads of Namespace),
	// "Global" (every workload) or "WorkloadSelector" (the pods whose PodSpec.Policies name it as
	// "<namespace>/<name>"). Empty: "Namespace".
	Scope string
	// Action is "Allow" or "Deny". Empty: "Allow".
	Action string
	// Rules: a connection matches the policy if it matches any rule, and a rule if it matches every
	// Match of the rule (each Match is one clause of the rule). A rule without matches matches every
	// connection. Nil: no rules, which matches nothing (an Allow policy without rules allows nothing,
	// a Deny policy without rules denies nothing).
	Rules [][]Match
}

// Match is a condition on a connection: it holds if every non-empty field holds. A field holds if
// the connection has one of the listed values. At least one field must be set.
type Match struct {
	// Principals are source identities without "spiffe://", e.g. "cluster.local/ns/sample/sa/sleep"
	// (exact). A plaintext source has no identity and never matches.
	Principals []string
	// NotPrincipals: the source identity is none of these (exact, same form as Principals).
	NotPrincipals []string
	// Namespaces: the source identity's namespace is one of these (exact).
	Namespaces []string
	// DestinationPorts: the destination (target) port is one of these.
	DestinationPorts []uint16
	// SourceIPs: the source address is in one of these CIDRs; a bare address means /32 (/128).
	SourceIPs []string
}

// policyRecord is a validated PolicySpec.
type policyRecord struct {
	Name, Namespace string
	Scope, Action   string
	Rules           [][]matchRecord
}

// matchRecord is a validated Match.
type matchRecord struct {
	Principals, NotPrincipals, Namespaces []string
	DestinationPorts                      []uint16
	SourceIPs                             []netip.Prefix
}

// Key returns "<namespace>/<name>", the policy's resource name and its PodSpec.Policies form.
func (p policyRecord) Key() string { return p.Namespace + "/" + p.Name }

var (
	validScopes  = []string{"Namespace", "Global", "WorkloadSelector"}
	validActions = []string{"Allow", "Deny"}
)

// newPolicyRecord validates p and applies its defaults.
func newPolicyRecord(p PolicySpec) (policyRecord, error) {
	if err := checkName("policy name", p.Name); err != nil {
		return policyRecord{}, err
	}
	if err := checkName("policy namespace", p.Namespace); err != nil {
		return policyRecord{}, err
	}
	key := p.Namespace + "/" + p.Name
	r := policyRecord{Name: p.Name, Namespace: p.Namespace, Scope: cmp.Or(p.Scope, "Namespace"), Action: cmp.Or(p.Action, "Allow")}
	if !slices.Contains(validScopes, r.Scope) {
		return policyRecord{}, fmt.Errorf("policy %s: scope %q: want one of %s", key, p.Scope, strings.Join(validScopes, ", "))
	}
	if !slices.Contains(validActions, r.Action) {
		return policyRecord{}, fmt.Errorf("policy %s: action %q: want one of %s", key, p.Action, strings.Join(validActions, ", "))
	}
	for i, rule := range p.Rules {
		rr := []matchRecord{}
		for j, m := range rule {
			mr, err := newMatchRecord(m)
			if err != nil {
				return policyRecord{}, fmt.Errorf("policy %s: rules[%d][%d]: %w", key, i, j, err)
			}
			rr = append(rr, mr)
		}
		r.Rules = append(r.Rules, rr)
	}
	return r, nil
}

func newMatchRecord(m Match) (matchRecord, error) {
	if len(m.Principals)+len(m.NotPrincipals)+len(m.Namespaces)+len(m.DestinationPorts)+len(m.SourceIPs) == 0 {
		return matchRecord{}, errors.New("empty match (it would match nothing; a rule without matches matches everything)")
	}
	for _, list := range [][]string{m.Principals, m.NotPrincipals, m.Namespaces} {
		if slices.Contains(list, "") {
			return matchRecord{}, errors.New("empty principal or namespace")
		}
	}
	if slices.Contains(m.DestinationPorts, 0) {
		return matchRecord{}, errors.New("destination port 0")
	}
	r := matchRecord{
		Principals:       slices.Clone(m.Principals),
		NotPrincipals:    slices.Clone(m.NotPrincipals),
		Namespaces:       slices.Clone(m.Namespaces),
		DestinationPorts: slices.Clone(m.DestinationPorts),
	}
	for _, s := range m.SourceIPs {
		p, err := parseCIDR(s)
		if err != nil {
			return matchRecord{}, err
		}
		r.SourceIPs = append(r.SourceIPs, p)
	}
	return r, nil
}

// parseCIDR parses "addr/bits" or a bare address (a host prefix).
func parseCIDR(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("source IP %q: want an address or CIDR", s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("source IP %q: zones are not allowed", s)
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("source IP %q: IPv4-mapped prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// checkPolicyRefs validates PodSpec.Policies entries ("<namespace>/<name>").
func checkPolicyRefs(refs []string) error {
	for _, ref := range refs {
		ns, name, ok := strings.Cut(ref, "/")
		if !ok {
			return fmt.Errorf("policy reference %q: want <namespace>/<name>", ref)
		}
		if err := checkName("policy reference namespace", ns); err != nil {
			return err
		}
		if err := checkName("policy reference name", name); err != nil {
			return err
		}
	}
	return nil
}

// SetPolicy adds or replaces (by namespace and name) an authorization policy, pushes the config
// (the fake istiod's Authorization resources, or the local config's policies) and waits for the
// proxies to apply it.
func (c *Cluster) SetPolicy(ctx context.Context, p PolicySpec) error {
	rec, err := newPolicyRecord(p)
	if err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("set policy: cluster is closed")
	}
	c.policies[rec.Key()] = rec
	c.mu.Unlock()
	c.log.Info("setting policy", "policy", rec.Key(), "scope", rec.Scope, "action", rec.Action, "rules", len(rec.Rules))
	if err := c.WriteConfig(); err != nil {
		return fmt.Errorf("set policy %s: %w", rec.Key(), err)
	}
	if err := c.WaitConfigApplied(ctx); err != nil {
		return fmt.Errorf("set policy %s: %w", rec.Key(), err)
	}
	return nil
}

// DeletePolicy removes an authorization policy set with SetPolicy, pushes the config and waits for
// the proxies to apply it. A policy that does not exist is an error.
func (c *Cluster) DeletePolicy(ctx context.Context, namespace, name string) error {
	key := namespace + "/" + name
	c.mu.Lock()
	_, ok := c.policies[key]
	delete(c.policies, key)
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("delete policy %s: no such policy", key)
	}
	c.log.Info("deleting policy", "policy", key)
	if err := c.WriteConfig(); err != nil {
		return fmt.Errorf("delete policy %s: %w", key, err)
	}
	if err := c.WaitConfigApplied(ctx); err != nil {
		return fmt.Errorf("delete policy %s: %w", key, err)
	}
	return nil
}
