package certs

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// certFromCAResponse checks a CreateCertificate cert_chain and builds the WorkloadCert for key and id.
//
// Every element is PEM and may hold several certificates. The elements before the last are the leaf
// (first) and any intermediates; the last element holds the root or roots, which all become trust
// anchors. The leaf must carry id as its only URI SAN (an X.509-SVID) and key's public key, and must verify
// through the intermediates to one of the roots for both server and client authentication. Validity
// is checked at now, or at the leaf's NotBefore if that is later, so that a CA whose clock runs
// slightly ahead of ours is tolerated; an expired chain is rejected.
func certFromCAResponse(chainPEM []string, key crypto.Signer, id Identity, now time.Time) (*WorkloadCert, error) {
	if len(chainPEM) == 0 {
		return nil, errors.New("empty certificate chain in response")
	}
	if len(chainPEM) == 1 {
		return nil, errors.New("certificate chain in response has 1 element, want the leaf followed by the root(s)")
	}
	var chain []*x509.Certificate
	for i, p := range chainPEM[:len(chainPEM)-1] {
		certs, err := ParseCertificatesPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("cert_chain[%d]: %w", i, err)
		}
		chain = append(chain, certs...)
	}
	last := len(chainPEM) - 1
	roots, err := ParseCertificatesPEM([]byte(chainPEM[last]))
	if err != nil {
		return nil, fmt.Errorf("cert_chain[%d] (roots): %w", last, err)
	}

	leaf := chain[0]
	got, err := leafIdentity(leaf, "CA-issued certificate")
	if err != nil {
		return nil, fmt.Errorf("%w (want %s)", err, id)
	}
	if got != id {
		return nil, fmt.Errorf("CA returned certificate for %s, want %s", got, id)
	}
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		return nil, errors.New("CA returned certificate for a different public key than the one in our CSR")
	}
	if err := verifyIssuedChain(chain, roots, now); err != nil {
		return nil, err
	}
	return NewWorkloadCert(key, chain, roots)
}

// verifyIssuedChain verifies chain[0] through chain[1:] to roots, once for each usage HBONE needs.
func verifyIssuedChain(chain, roots []*x509.Certificate, now time.Time) error {
	leaf := chain[0]
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	at := now
	if leaf.NotBefore.After(at) {
		at = leaf.NotBefore
	}
	for _, u := range [...]struct {
		name  string
		usage x509.ExtKeyUsage
	}{
		{"server", x509.ExtKeyUsageServerAuth},
		{"client", x509.ExtKeyUsageClientAuth},
	} {
		_, err := leaf.Verify(x509.VerifyOptions{
			Roots:         rootPool,
			Intermediates: inter,
			CurrentTime:   at,
			KeyUsages:     []x509.ExtKeyUsage{u.usage},
		})
		if err != nil {
			return fmt.Errorf("verify returned chain against the returned roots for %s authentication: %w", u.name, err)
		}
	}
	return nil
}
