package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// baseTLSConfig holds what both HBONE sides share (ztunnel-behavior §2.4): TLS 1.3 only, ALPN h2, no
// session tickets. (Go does not allow restricting the TLS 1.3 cipher suites; ztunnel offers only the
// AES-GCM ones.)
func baseTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		NextProtos:             []string{"h2"},
		SessionTicketsDisabled: true,
	}
}

// ClientTLSConfig returns the HBONE client configuration for a connection made on behalf of src to a
// server that must prove one of the expected identities. It always presents src's chain and sends no
// SNI when used with tls.Client (ServerName stays empty). Go's hostname verification is replaced by
// VerifyConnection: the server chain must verify against src.RootPool() (intermediates taken from the
// peer's chain, ExtKeyUsage serverAuth), then the leaf must be an X.509-SVID (exactly one URI SAN,
// a SPIFFE identity; see leafIdentity) whose identity is one of expected; DNS and IP SANs are ignored.
// An empty expected list accepts no server. No session cache is set, so sessions are never resumed.
func ClientTLSConfig(src *WorkloadCert, expected []Identity) *tls.Config {
	cfg := baseTLSConfig()
	want := slices.Clone(expected)
	// Verification happens in VerifyConnection; there is no hostname to check against.
	cfg.InsecureSkipVerify = true
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if src == nil {
			return nil, errors.New("hbone client: no source certificate")
		}
		return &src.TLS, nil
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if src == nil {
			return errors.New("hbone client: no source certificate")
		}
		leaf, err := verifyPeerChain(cs, src.RootPool(), x509.ExtKeyUsageServerAuth)
		if err != nil {
			return fmt.Errorf("verify server certificate: %w", err)
		}
		got, err := leafIdentity(leaf, "server certificate")
		if err != nil {
			return fmt.Errorf("verify server certificate: %w", err)
		}
		if !slices.Contains(want, got) {
			return fmt.Errorf("verify server certificate: identity mismatch: server has %q, expected one of %q",
				got.String(), identityStrings(want))
		}
		return nil
	}
	return cfg
}

// ServerTLSConfig returns the HBONE server configuration. For every handshake it calls get with the
// handshake's context for the certificate to present. A client certificate is required; its chain must
// verify against the roots of the server's own certificate (ExtKeyUsage clientAuth), and its leaf must
// be an X.509-SVID (exactly one URI SAN, a SPIFFE identity; see leafIdentity) in the server
// certificate's trust domain. Which identities may connect is left to authorization, which reads the
// same identity through PeerIdentity.
func ServerTLSConfig(get func(ctx context.Context) (*WorkloadCert, error)) *tls.Config {
	cfg := baseTLSConfig()
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if get == nil {
			return nil, errors.New("hbone server: no certificate source")
		}
		wc, err := get(hello.Context())
		if err != nil {
			return nil, fmt.Errorf("hbone server: get certificate: %w", err)
		}
		if wc == nil {
			return nil, errors.New("hbone server: get certificate: no certificate")
		}
		c := baseTLSConfig()
		c.Certificates = []tls.Certificate{wc.TLS}
		// The chain is verified in VerifyConnection against the roots of wc, not a global pool.
		c.ClientAuth = tls.RequireAnyClientCert
		c.VerifyConnection = func(cs tls.ConnectionState) error { return verifyClient(wc, cs) }
		return c, nil
	}
	return cfg
}

// verifyClient checks the client chain and trust domain for a server presenting wc.
func verifyClient(wc *WorkloadCert, cs tls.ConnectionState) error {
	leaf, err := verifyPeerChain(cs, wc.RootPool(), x509.ExtKeyUsageClientAuth)
	if err != nil {
		return fmt.Errorf("verify client certificate: %w", err)
	}
	id, err := leafIdentity(leaf, "client certificate")
	if err != nil {
		return fmt.Errorf("verify client certificate: %w", err)
	}
	if td := wc.Identity.TrustDomain; id.TrustDomain != td {
		return fmt.Errorf("verify client certificate: client identity %s is not in trust domain %q", id, td)
	}
	return nil
}

// verifyPeerChain verifies the peer's leaf against roots, using the rest of the peer chain as
// intermediates, and returns the leaf.
func verifyPeerChain(cs tls.ConnectionState, roots *x509.CertPool, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return nil, err
	}
	return leaf, nil
}

// PeerIdentity returns the SPIFFE identity of the peer's leaf certificate, which must be an X.509-SVID:
// exactly one URI SAN, a SPIFFE identity (see leafIdentity); anything else is an error. The leaf is taken from
// cs.VerifiedChains when Go verified the chain, else from cs.PeerCertificates: the configs of this
// package verify the chain in VerifyConnection, so the handshake succeeding means it was verified.
// Callers using other configs must make sure the peer chain was verified.
func PeerIdentity(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || !cs.HandshakeComplete {
		return Identity{}, errors.New("peer identity: TLS handshake not complete")
	}
	var leaf *x509.Certificate
	switch {
	case len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0:
		leaf = cs.VerifiedChains[0][0]
	case len(cs.PeerCertificates) > 0:
		leaf = cs.PeerCertificates[0]
	default:
		return Identity{}, errors.New("peer identity: peer presented no certificate")
	}
	id, err := leafIdentity(leaf, "peer certificate")
	if err != nil {
		return Identity{}, fmt.Errorf("peer identity: %w", err)
	}
	return id, nil
}

func identityStrings(ids []Identity) []string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return s
}
