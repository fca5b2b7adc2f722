package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

const (
	rootValidity = 10 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that peers with slightly slow clocks accept new certificates.
	clockSkew = time.Minute
)

// LocalCAConfig configures an in-process certificate authority.
type LocalCAConfig struct {
	// CertFile and KeyFile (CA_CERT / CA_KEY) locate the root certificate and its key, both PEM; the key
	// may be PKCS#8 (EC or RSA), SEC1 EC or PKCS#1 RSA. If both are set and both files exist they are
	// loaded. If both are set and neither exists, a root is generated and written to them (key mode
	// 0600) so that it persists and can be shared. Only one set, or only one of the files present, is
	// an error naming it. Neither set (the zero value): an in-memory root that lives as long as the CA.
	CertFile, KeyFile string
	// TrustDomain names the generated root (its Organization). Zero means DefaultTrustDomain. The local
	// CA signs identities of any trust domain; peers enforce trust domains.
	TrustDomain string
	// WorkloadTTL is the lifetime of issued certificates. Zero means 24h.
	WorkloadTTL time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

func (c LocalCAConfig) withDefaults() LocalCAConfig {
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.WorkloadTTL <= 0 {
		c.WorkloadTTL = 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// LocalCA is an in-process certificate authority with a single self-signed root. It implements
// [Issuer] through a real CSR round trip. It is immutable after NewLocalCA and safe for concurrent use.
type LocalCA struct {
	cfg  LocalCAConfig
	root *x509.Certificate
	key  crypto.Signer
}

var _ Issuer = (*LocalCA)(nil)

// NewLocalCA loads, generates (and possibly writes) the root described by cfg.
func NewLocalCA(cfg LocalCAConfig) (*LocalCA, error) {
	cfg = cfg.withDefaults()
	root, key, err := loadOrCreateRoot(cfg)
	if err != nil {
		return nil, err
	}
	return &LocalCA{cfg: cfg, root: root, key: key}, nil
}

// Issue generates a fresh P-256 key and CSR for id, checks the CSR and signs it with the root.
// The leaf has only the URI SAN id, KeyUsage digitalSignature|keyEncipherment, ExtKeyUsage
// serverAuth+clientAuth, a random 128-bit serial, NotBefore now-1m and NotAfter now+WorkloadTTL
// (capped at the root's expiry).
func (ca *LocalCA) Issue(ctx context.Context, id Identity) (*WorkloadCert, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	csrPEM, key, err := NewCSR(id)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	leaf, err := ca.sign(csrPEM, id)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	wc, err := NewWorkloadCert(key, []*x509.Certificate{leaf}, []*x509.Certificate{ca.root})
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	return wc, nil
}

// sign verifies csrPEM asks for exactly id and returns the signed leaf.
func (ca *LocalCA) sign(csrPEM []byte, id Identity) (*x509.Certificate, error) {
	csr, err := parseCSRFor(csrPEM, id)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := ca.cfg.Now()
	notAfter := now.Add(ca.cfg.WorkloadTTL)
	if notAfter.After(ca.root.NotAfter) {
		notAfter = ca.root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		URIs:                  csr.URIs,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse signed leaf: %w", err)
	}
	return leaf, nil
}

// Roots returns the CA's trust anchors (a fresh slice holding the single root).
func (ca *LocalCA) Roots() []*x509.Certificate { return []*x509.Certificate{ca.root} }

// RootPEM returns the root certificate, PEM encoded.
func (ca *LocalCA) RootPEM() []byte { return encodeCertsPEM(ca.Roots()) }

// newRoot generates a self-signed ECDSA P-256 CA valid for 10 years from now-1m.
func newRoot(trustDomain string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{trustDomain}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign CA: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA: %w", err)
	}
	return root, key, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	if n.Sign() == 0 {
		n.SetInt64(1)
	}
	return n, nil
}
