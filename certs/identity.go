package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// DefaultTrustDomain is the trust domain used when none is configured.
const DefaultTrustDomain = "cluster.local"

const spiffeScheme = "spiffe://"

// Identity is an Istio SPIFFE identity: spiffe://<TrustDomain>/ns/<Namespace>/sa/<ServiceAccount>.
// The zero value is not a valid identity.
type Identity struct {
	TrustDomain, Namespace, ServiceAccount string
}

// String returns the SPIFFE ID, "spiffe://td/ns/NS/sa/SA".
func (i Identity) String() string {
	return spiffeScheme + i.TrustDomain + "/ns/" + i.Namespace + "/sa/" + i.ServiceAccount
}

// ParseIdentity parses exactly spiffe://<td>/ns/<ns>/sa/<sa>. Each of td, ns and sa must be non-empty,
// may contain only ASCII letters, digits, '.', '-' and '_', and must not be "." or "..". Comparison is
// exact (case-sensitive), so String of the result returns s.
func ParseIdentity(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, spiffeScheme)
	if !ok {
		return Identity{}, fmt.Errorf("parse identity %q: must start with %q", s, spiffeScheme)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 {
		return Identity{}, fmt.Errorf("parse identity %q: want spiffe://<trust domain>/ns/<namespace>/sa/<service account>, got %d path segments", s, len(parts)-1)
	}
	if parts[1] != "ns" {
		return Identity{}, fmt.Errorf("parse identity %q: second segment is %q, want \"ns\"", s, parts[1])
	}
	if parts[3] != "sa" {
		return Identity{}, fmt.Errorf("parse identity %q: fourth segment is %q, want \"sa\"", s, parts[3])
	}
	id := Identity{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}
	if err := id.validate(); err != nil {
		return Identity{}, fmt.Errorf("parse identity %q: %w", s, err)
	}
	return id, nil
}

// validate checks the three parts with the rules documented on ParseIdentity.
func (i Identity) validate() error {
	for _, p := range [...]struct{ name, v string }{
		{"trust domain", i.TrustDomain},
		{"namespace", i.Namespace},
		{"service account", i.ServiceAccount},
	} {
		if err := checkPart(p.v); err != nil {
			return fmt.Errorf("%s %q: %w", p.name, p.v, err)
		}
	}
	return nil
}

func checkPart(s string) error {
	switch s {
	case "":
		return errors.New("empty")
	case ".", "..":
		return errors.New("dot segment not allowed")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '-', c == '_':
		default:
			return fmt.Errorf("invalid character %q at offset %d", c, i)
		}
	}
	return nil
}

// leafIdentity returns the SPIFFE identity of an X.509-SVID leaf. The SPIFFE X.509-SVID
// specification allows exactly one URI SAN in a leaf SVID, and it must be the SPIFFE ID; a leaf with
// none, with several (even if all are SPIFFE IDs) or with one that is not an Istio SPIFFE identity is
// refused. Checking one SAN and authorizing another would let a certificate pass as two identities.
// what names the certificate in the error, e.g. "client certificate".
func leafIdentity(leaf *x509.Certificate, what string) (Identity, error) {
	switch n := len(leaf.URIs); {
	case n == 0:
		return Identity{}, fmt.Errorf("%s has no URI SAN; an X.509-SVID must have exactly one, the SPIFFE ID", what)
	case n > 1:
		return Identity{}, fmt.Errorf("%s has %d URI SANs %q; an X.509-SVID must have exactly one", what, n, uriStrings(leaf))
	}
	if leaf.URIs[0] == nil {
		return Identity{}, fmt.Errorf("%s has an empty URI SAN", what)
	}
	id, err := ParseIdentity(leaf.URIs[0].String())
	if err != nil {
		return Identity{}, fmt.Errorf("%s URI SAN is not a SPIFFE identity: %w", what, err)
	}
	return id, nil
}

// uriStrings returns the URI SANs of cert as strings, for error messages.
func uriStrings(cert *x509.Certificate) []string {
	s := make([]string, 0, len(cert.URIs))
	for _, u := range cert.URIs {
		if u != nil {
			s = append(s, u.String())
		}
	}
	return s
}
