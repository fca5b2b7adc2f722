package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// caAddress is a parsed CAClientConfig.Address.
type caAddress struct {
	tls      bool
	host     string // without port or brackets
	hostPort string
}

// parseCAAddress implements the Address rules documented on CAClientConfig.
func parseCAAddress(s string) (caAddress, error) {
	if s == "" {
		return caAddress{}, errNoAddress
	}
	raw := s
	if !strings.Contains(s, "://") {
		raw = "https://" + s
	}
	u, err := url.Parse(raw)
	if err != nil {
		return caAddress{}, fmt.Errorf("CA client: address %q: %w", s, err)
	}
	var a caAddress
	port := ""
	switch u.Scheme {
	case "https":
		a.tls, port = true, "443"
	case "http":
		port = "80"
	default:
		return caAddress{}, fmt.Errorf("CA client: address %q: scheme %q not supported, want https or http", s, u.Scheme)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return caAddress{}, fmt.Errorf("CA client: address %q: want scheme://host:port with no user, path, query or fragment", s)
	}
	a.host = u.Hostname()
	if a.host == "" {
		return caAddress{}, fmt.Errorf("CA client: address %q: no host", s)
	}
	if p := u.Port(); p != "" {
		port = p
	} else if strings.HasSuffix(u.Host, ":") {
		return caAddress{}, fmt.Errorf("CA client: address %q: empty port", s)
	}
	a.hostPort = net.JoinHostPort(a.host, port)
	return a, nil
}

// caTransportCredentials returns plaintext credentials for http:// and TLS 1.2+ credentials that
// verify the CA against cfg.RootCAFile and cfg.AltHostname (or the address host) for https://.
func caTransportCredentials(a caAddress, cfg CAClientConfig) (credentials.TransportCredentials, error) {
	if !a.tls {
		return insecure.NewCredentials(), nil
	}
	roots, err := loadCARoots(cfg.RootCAFile)
	if err != nil {
		return nil, err
	}
	name := a.host
	if cfg.AltHostname != "" {
		name = cfg.AltHostname
	}
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots, // nil: the OS roots
		ServerName: name,
	}), nil
}

// loadCARoots implements the RootCAFile rules documented on CAClientConfig. A nil pool with a nil
// error means the OS roots.
func loadCARoots(src string) (*x509.CertPool, error) {
	if src == "SYSTEM" {
		if _, err := x509.SystemCertPool(); err != nil {
			return nil, fmt.Errorf("CA client: CA_ROOT_CA=SYSTEM: load OS roots: %w", err)
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
			return nil, fmt.Errorf("CA client: read %s: %w", what, err)
		}
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("CA client: %s: %w", what, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}
