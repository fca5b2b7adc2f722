package authz

import (
	"net/netip"

	"github.com/ztunnel-go/ztunnel/workload"
)

// Conn is what is known about one inbound connection.
type Conn struct {
	Src         netip.AddrPort // peer address
	Dst         netip.AddrPort // destination pod IP + final target port (not 15008)
	SrcIdentity *Identity      // nil for plaintext; else from the mTLS peer certificate
}

// Decision is the outcome of Evaluate.
type Decision struct {
	Allow bool
	// Policy is the "ns/name" of the deciding policy: the matching DENY or ALLOW policy.
	// It is "" when no single policy decided (no ALLOW policies, or none matched).
	Policy string
	// Reason says why, e.g. "explicitly denied by: ns/name", "allowed by: ns/name",
	// "no allow policies", "allow policies exist, but none allowed". The deny texts are the
	// reference's, which its access log prints after "connection closed due to policy
	// rejection: ".
	Reason string
	// DryRun lists, for the log, each dry-run policy that would have flipped Allow had it
	// been enforced (on its own, together with the enforced policies), as
	// "ns/name: would deny (deny policy matches)",
	// "ns/name: would deny (allow policy does not match)" or
	// "ns/name: would allow (allow policy matches)". It is nil when there are none.
	DryRun []string
}

// Evaluate applies policies, the destination workload's set (workload.Snapshot.PoliciesFor),
// to c, in Istio's order: dry-run policies never decide (they are only reported in
// Decision.DryRun); the first matching DENY policy denies; with no ALLOW policies the
// connection is allowed; the first matching ALLOW policy allows; otherwise it is denied.
// A policy whose action is not ALLOW counts as DENY, and nil entries are skipped.
//
// Evaluate does not allocate unless some dry-run policy is reported (after the first
// decision naming a given policy, whose strings are then cached).
func Evaluate(policies []*workload.Policy, c Conn) Decision {
	m := newMatcher(&c)
	var hasAllow, hasDryRun bool
	for _, p := range policies {
		switch {
		case p == nil:
		case p.DryRun:
			hasDryRun = true
		case p.Action == workload.PolicyActionAllow:
			hasAllow = true
		}
	}
	d := m.enforce(policies, hasAllow)
	if hasDryRun {
		d.DryRun = m.dryRun(policies, d, hasAllow)
	}
	return d
}

// enforce decides with the enforced (not dry-run) policies.
func (m *matcher) enforce(policies []*workload.Policy, hasAllow bool) Decision {
	for _, p := range policies {
		if p != nil && !p.DryRun && p.Action != workload.PolicyActionAllow && m.policy(p) {
			s := stringsFor(p)
			return Decision{Allow: false, Policy: s.key, Reason: s.denied}
		}
	}
	if !hasAllow {
		return Decision{Allow: true, Reason: reasonNoAllow}
	}
	for _, p := range policies {
		if p != nil && !p.DryRun && p.Action == workload.PolicyActionAllow && m.policy(p) {
			s := stringsFor(p)
			return Decision{Allow: true, Policy: s.key, Reason: s.allowed}
		}
	}
	return Decision{Allow: false, Reason: reasonNoneAllowed}
}

// dryRun lists the dry-run policies that, each enforced on its own alongside the enforced
// ones, would flip d.Allow. hasAllow reports whether an enforced ALLOW policy exists.
func (m *matcher) dryRun(policies []*workload.Policy, d Decision, hasAllow bool) []string {
	var (
		out          []string
		defaultAllow = d.Allow && !hasAllow                   // allowed because no ALLOW policy exists
		noneAllowed  = !d.Allow && d.Policy == "" && hasAllow // denied because no ALLOW matched
	)
	for _, p := range policies {
		if p == nil || !p.DryRun {
			continue
		}
		switch {
		case p.Action != workload.PolicyActionAllow:
			// A DENY can only flip an allow; an explicit deny outranks every ALLOW.
			if d.Allow && m.policy(p) {
				out = append(out, stringsFor(p).key+": would deny (deny policy matches)")
			}
		case defaultAllow:
			// Enforcing it would make "ALLOW policies exist", so it must match.
			if !m.policy(p) {
				out = append(out, stringsFor(p).key+": would deny (allow policy does not match)")
			}
		case noneAllowed:
			if m.policy(p) {
				out = append(out, stringsFor(p).key+": would allow (allow policy matches)")
			}
		}
	}
	return out
}
