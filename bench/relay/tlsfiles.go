package relay

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/internal/controlplane"
)

// Files locates one side's certificate material, all PEM.
type Files struct {
	// Cert is the certificate chain, leaf first.
	Cert string
	// Key is the leaf's private key (PKCS#8 "PRIVATE KEY").
	Key string
	// CA is the root certificate(s) the peer's chain must verify against.
	CA string
}

// WriteFiles writes wc's chain, key and roots into dir as <name>-cert.pem, <name>-key.pem (mode
// 0600) and <name>-ca.pem.
func WriteFiles(dir, name string, wc *certs.WorkloadCert) (Files, error) {
	if wc == nil {
		return Files{}, errors.New("write certificate files: no certificate")
	}
	f := Files{
		Cert: filepath.Join(dir, name+"-cert.pem"),
		Key:  filepath.Join(dir, name+"-key.pem"),
		CA:   filepath.Join(dir, name+"-ca.pem"),
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(wc.TLS.PrivateKey)
	if err != nil {
		return Files{}, fmt.Errorf("write certificate files for %s: marshal key: %w", name, err)
	}
	var chain, roots []byte
	for _, c := range wc.Chain {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	for _, c := range wc.Roots {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.Cert, chain, 0o644},
		{f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{f.CA, roots, 0o644},
	} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return Files{}, fmt.Errorf("write certificate files for %s: %w", name, err)
		}
	}
	return f, nil
}

// load reads the key pair and the root pool.
func (f Files) load() (tls.Certificate, *x509.CertPool, error) {
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load key pair %s, %s: %w", f.Cert, f.Key, err)
	}
	pool, err := controlplane.LoadRoots(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load CA: %w", err)
	}
	return pair, pool, nil
}

// baseConfig is what both sides share: TLS 1.3 only and full-size records from the first byte.
func baseConfig(pair tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		Certificates:                []tls.Certificate{pair},
		DynamicRecordSizingDisabled: true,
		SessionTicketsDisabled:      true,
	}
}

// ServerTLS returns the accepting side's config: it presents f's chain and requires a client
// certificate that verifies against f.CA.
func ServerTLS(f Files) (*tls.Config, error) {
	pair, pool, err := f.load()
	if err != nil {
		return nil, fmt.Errorf("relay server TLS: %w", err)
	}
	c := baseConfig(pair)
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.ClientCAs = pool
	return c, nil
}

// ClientTLS returns the dialing side's config: it presents f's chain and accepts a server whose
// chain verifies against f.CA and whose certificate has the URI SAN peer (e.g. a SPIFFE ID).
// Workload certificates have no DNS names, so the URI SAN takes the place of the host name check.
func ClientTLS(f Files, peer string) (*tls.Config, error) {
	if peer == "" {
		return nil, errors.New("relay client TLS: no peer identity")
	}
	pair, pool, err := f.load()
	if err != nil {
		return nil, fmt.Errorf("relay client TLS: %w", err)
	}
	c := baseConfig(pair)
	c.InsecureSkipVerify = true // replaced by VerifyConnection below
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("verify relay server: no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("verify relay server: %w", err)
		}
		var uris []string
		for _, u := range leaf.URIs {
			uris = append(uris, u.String())
		}
		if !slices.Contains(uris, peer) {
			return fmt.Errorf("verify relay server: identity %q, want %q", uris, peer)
		}
		return nil
	}
	return c, nil
}
