package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ztunnel-go/ztunnel/internal/controlplane"
)

// WorkloadCert is one issued certificate with its private key, chain and trust anchors.
// It is immutable once built; build it with [NewWorkloadCert] so that the fields agree.
type WorkloadCert struct {
	Identity            Identity
	TLS                 tls.Certificate     // chain (leaf first, roots excluded) + PrivateKey, Leaf set
	Chain               []*x509.Certificate // leaf first, roots excluded
	Roots               []*x509.Certificate // trust anchors that came with the certificate
	NotBefore, NotAfter time.Time           // validity of the leaf

	poolOnce sync.Once
	pool     *x509.CertPool
}

// RootPool returns a pool of c.Roots. It is built on first use and shared afterwards; callers must
// not modify it.
func (c *WorkloadCert) RootPool() *x509.CertPool {
	c.poolOnce.Do(func() {
		c.pool = x509.NewCertPool()
		for _, r := range c.Roots {
			c.pool.AddCert(r)
		}
	})
	return c.pool
}

// NewWorkloadCert assembles a WorkloadCert from a private key, the chain (leaf first, without roots)
// and the trust anchors. It checks that the key matches the leaf, that the leaf is an X.509-SVID (exactly
// one URI SAN, a SPIFFE identity, which becomes Identity: peers refuse anything else) and that at least
// one root is given. It does not verify the
// chain: that happens in every handshake.
func NewWorkloadCert(key crypto.Signer, chain, roots []*x509.Certificate) (*WorkloadCert, error) {
	if key == nil {
		return nil, errors.New("build workload certificate: no private key")
	}
	if len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("build workload certificate: empty certificate chain")
	}
	if len(roots) == 0 {
		return nil, errors.New("build workload certificate: no root certificates")
	}
	for i, c := range chain {
		if c == nil {
			return nil, fmt.Errorf("build workload certificate: chain[%d] is nil", i)
		}
	}
	for i, r := range roots {
		if r == nil {
			return nil, fmt.Errorf("build workload certificate: roots[%d] is nil", i)
		}
	}
	leaf := chain[0]
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		return nil, errors.New("build workload certificate: private key does not match the leaf certificate")
	}
	id, err := leafIdentity(leaf, "leaf certificate")
	if err != nil {
		return nil, fmt.Errorf("build workload certificate: %w", err)
	}
	der := make([][]byte, len(chain))
	for i, c := range chain {
		der[i] = c.Raw
	}
	return &WorkloadCert{
		Identity:  id,
		TLS:       tls.Certificate{Certificate: der, PrivateKey: key, Leaf: leaf},
		Chain:     append([]*x509.Certificate(nil), chain...),
		Roots:     append([]*x509.Certificate(nil), roots...),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
	}, nil
}

// publicKeysEqual reports whether a and b are the same public key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// ParseCertificatesPEM parses every CERTIFICATE block in data, in order. Other block types are an
// error, as is data with no certificate or with trailing non-PEM bytes.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	certs, err := controlplane.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("parse certificates: %w", err)
	}
	return certs, nil
}

// encodeCertsPEM returns the PEM encoding of certs, concatenated.
func encodeCertsPEM(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// Issuer obtains a certificate for an identity. It is implemented by *LocalCA and by the Istio CA
// client. Each call generates a fresh key; implementations must be safe for concurrent use.
type Issuer interface {
	Issue(ctx context.Context, id Identity) (*WorkloadCert, error)
}
