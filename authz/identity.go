package authz

import (
	"strings"

	"github.com/ztunnel-go/ztunnel/workload"
)

// Identity is a peer's SPIFFE identity, spiffe://TrustDomain/ns/Namespace/sa/ServiceAccount,
// as taken from its mTLS certificate.
type Identity struct{ TrustDomain, Namespace, ServiceAccount string }

// String returns "spiffe://td/ns/NS/sa/SA".
func (i Identity) String() string {
	return "spiffe://" + i.principal()
}

// principal returns the identity as policies' principals name it: without "spiffe://".
func (i Identity) principal() string {
	return i.TrustDomain + "/ns/" + i.Namespace + "/sa/" + i.ServiceAccount
}

// principalParts is an identity's principal ("td/ns/NS/sa/SA") as the pieces whose
// concatenation it is, so matches can be checked without building the string.
type principalParts struct {
	parts [5]string
	n     int // total length
}

func newPrincipalParts(i *Identity) principalParts {
	pp := principalParts{parts: [5]string{i.TrustDomain, "/ns/", i.Namespace, "/sa/", i.ServiceAccount}}
	for _, p := range pp.parts {
		pp.n += len(p)
	}
	return pp
}

// matches reports whether sm matches the principal. It is equivalent to
// sm.Matches(principal) but does not allocate.
func (pp *principalParts) matches(sm workload.StringMatch) bool {
	switch sm.Kind {
	case workload.StringMatchExact:
		return pp.n == len(sm.Value) && partsHavePrefix(pp.parts[:], sm.Value)
	case workload.StringMatchPrefix:
		return len(sm.Value) <= pp.n && partsHavePrefix(pp.parts[:], sm.Value)
	case workload.StringMatchSuffix:
		return len(sm.Value) <= pp.n && partsHaveSuffix(pp.parts[:], sm.Value)
	case workload.StringMatchPresence:
		return pp.n > 0
	}
	return false
}

// partsHavePrefix reports whether strings.Join(parts, "") starts with v.
func partsHavePrefix(parts []string, v string) bool {
	for _, p := range parts {
		if len(v) <= len(p) {
			return strings.HasPrefix(p, v)
		}
		if v[:len(p)] != p {
			return false
		}
		v = v[len(p):]
	}
	return v == ""
}

// partsHaveSuffix reports whether strings.Join(parts, "") ends with v.
func partsHaveSuffix(parts []string, v string) bool {
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		if len(v) <= len(p) {
			return strings.HasSuffix(p, v)
		}
		if v[len(v)-len(p):] != p {
			return false
		}
		v = v[:len(v)-len(p)]
	}
	return v == ""
}
