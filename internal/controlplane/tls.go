package controlplane

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// SystemRoots is the RootCAFile value that selects the operating system's roots.
const SystemRoots = "SYSTEM"

// transportCredentials returns plaintext credentials for http:// and TLS 1.2+ credentials that
// verify the server against cfg.RootCAFile and cfg.AltHostname (or the address host) for https://.
func transportCredentials(a Address, cfg DialConfig) (credentials.TransportCredentials, error) {
	if !a.TLS {
		return insecure.NewCredentials(), nil
	}
	roots, err := LoadRoots(cfg.RootCAFile)
	if err != nil {
		return nil, err
	}
	name := a.Host
	if cfg.AltHostname != "" {
		name = cfg.AltHostname
	}
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots, // nil: the OS roots
		ServerName: name,
	}), nil
}

// LoadRoots reads the roots that verify a control plane server: "SYSTEM" for the OS roots
// (returned as a nil pool with a nil error), inline PEM if src starts with "-----BEGIN", else
// the path of a PEM file. Every PEM block must be a CERTIFICATE and at least one is required.
func LoadRoots(src string) (*x509.CertPool, error) {
	if src == SystemRoots {
		if _, err := x509.SystemCertPool(); err != nil {
			return nil, fmt.Errorf("root CA %s: load OS roots: %w", SystemRoots, err)
		}
		return nil, nil
	}
	var data []byte
	what := "inline CA root PEM"
	if strings.HasPrefix(strings.TrimSpace(src), "-----BEGIN") {
		data = []byte(src)
	} else {
		what = fmt.Sprintf("CA root file %q", src)
		var err error
		if data, err = os.ReadFile(src); err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ParseCertificatesPEM parses every CERTIFICATE block in data, in order. Other block types are
// an error, as is data with no certificate or with trailing non-PEM bytes.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data that is not PEM")
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE block found")
	}
	return certs, nil
}
