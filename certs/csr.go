package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
)

// NewCSR generates a fresh ECDSA P-256 key and a PEM "CERTIFICATE REQUEST" for id, signed with
// SHA-256, with an empty subject and the SPIFFE ID as its only SAN (a URI). This is the request the
// Istio CA expects (ztunnel tls/csr.rs).
func NewCSR(id Identity) (csrPEM []byte, key *ecdsa.PrivateKey, err error) {
	if err := id.validate(); err != nil {
		return nil, nil, fmt.Errorf("create CSR for %s: %w", id, err)
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR for %s: generate key: %w", id, err)
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR for %s: %w", id, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		SignatureAlgorithm: x509.ECDSAWithSHA256,
		URIs:               []*url.URL{u},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key, nil
}

// parseCSRFor decodes a PEM CSR, verifies its signature, and checks that it asks for exactly id: a
// single URI SAN equal to id and no DNS, IP or e-mail SANs. The key must be ECDSA P-256.
func parseCSRFor(csrPEM []byte, id Identity) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("CSR is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
		return nil, fmt.Errorf("CSR has DNS/IP/e-mail SANs, want only the URI %s", id)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() {
		var got []string
		for _, u := range csr.URIs {
			got = append(got, u.String())
		}
		return nil, fmt.Errorf("CSR URI SANs %q, want exactly [%s]", got, id)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("CSR key is %T, want ECDSA P-256", csr.PublicKey)
	}
	return csr, nil
}
