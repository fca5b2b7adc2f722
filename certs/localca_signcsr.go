package certs

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// SignCSR signs a certificate signing request received from someone else, as the Istio CA does with
// the CSR of a CreateCertificate call. csrPEM must be a PEM "CERTIFICATE REQUEST" with a valid
// signature, an ECDSA P-256 key and, as its only SAN, one URI that is an Istio SPIFFE identity (see
// ParseIdentity); the leaf is issued for that identity. ttl is the requested lifetime; zero or
// negative means the CA's WorkloadTTL, and the lifetime is capped at the root's expiry. The leaf has
// the same form as the ones Issue makes.
//
// chainPEM is what CreateCertificate returns: the leaf, then the root, each PEM encoded. The caller
// decides whether the requester may have that identity; SignCSR checks only the request itself.
func (ca *LocalCA) SignCSR(csrPEM []byte, ttl time.Duration) (chainPEM []string, err error) {
	id, err := csrIdentity(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("sign CSR: %w", err)
	}
	signer := ca
	if ttl > 0 {
		// LocalCA is immutable; a copy with another lifetime shares the root and key.
		c := *ca
		c.cfg.WorkloadTTL = ttl
		signer = &c
	}
	leaf, err := signer.sign(csrPEM, id)
	if err != nil {
		return nil, fmt.Errorf("sign CSR for %s: %w", id, err)
	}
	return []string{string(encodeCertsPEM([]*x509.Certificate{leaf})), string(ca.RootPEM())}, nil
}

// csrIdentity returns the identity a PEM CSR asks for: its single URI SAN, parsed. It does not
// verify the signature (sign does).
func csrIdentity(csrPEM []byte) (Identity, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return Identity{}, errors.New("CSR is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return Identity{}, fmt.Errorf("parse CSR: %w", err)
	}
	if len(csr.URIs) != 1 {
		return Identity{}, fmt.Errorf("CSR has %d URI SANs, want exactly one SPIFFE identity", len(csr.URIs))
	}
	id, err := ParseIdentity(csr.URIs[0].String())
	if err != nil {
		return Identity{}, fmt.Errorf("CSR URI SAN: %w", err)
	}
	return id, nil
}
