package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

var (
	idClient = Identity{"cluster.local", "default", "client"}
	idServer = Identity{"cluster.local", "default", "server"}
	idOther  = Identity{"cluster.local", "default", "other"}
	idForeig = Identity{"other.local", "default", "client"}
)

func issue(t *testing.T, ca *LocalCA, id Identity) *WorkloadCert {
	t.Helper()
	wc, err := ca.Issue(context.Background(), id)
	if err != nil {
		t.Fatalf("issue %v: %v", id, err)
	}
	return wc
}

func serverFor(wc *WorkloadCert) *tls.Config {
	return ServerTLSConfig(func(context.Context) (*WorkloadCert, error) { return wc, nil })
}

type handshakeResult struct {
	client, server       tls.ConnectionState
	clientErr, serverErr error
}

// handshake runs one TLS handshake over loopback TCP. On success the server writes one byte that the
// client reads, so a rejection by the server after the client finished (TLS 1.3) surfaces as clientErr.
func handshake(t *testing.T, ccfg, scfg *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	type side struct {
		st  tls.ConnectionState
		err error
	}
	srvDone := make(chan side, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- side{err: err}
			return
		}
		defer c.Close()
		sc := tls.Server(c, scfg)
		err = sc.HandshakeContext(ctx)
		if err == nil {
			_, err = sc.Write([]byte{'x'})
		}
		srvDone <- side{sc.ConnectionState(), err}
	}()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	cc := tls.Client(raw, ccfg)
	cerr := cc.HandshakeContext(ctx)
	if cerr == nil {
		_, cerr = io.ReadFull(cc, make([]byte, 1))
	}
	if cerr != nil {
		raw.Close() // unblock the server if it waits for us
	}
	s := <-srvDone
	return handshakeResult{client: cc.ConnectionState(), server: s.st, clientErr: cerr, serverErr: s.err}
}

func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one containing %q", what, parts)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not contain %q", what, err, p)
		}
	}
}

func TestTLSGoodHandshake(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	cli, srv := issue(t, ca, idClient), issue(t, ca, idServer)
	ccfg := ClientTLSConfig(cli, []Identity{idOther, idServer})
	scfg := serverFor(srv)
	for i := range 2 { // the second handshake must not resume the first
		r := handshake(t, ccfg, scfg)
		if r.clientErr != nil || r.serverErr != nil {
			t.Fatalf("handshake %d: client %v, server %v", i, r.clientErr, r.serverErr)
		}
		for name, st := range map[string]tls.ConnectionState{"client": r.client, "server": r.server} {
			if st.Version != tls.VersionTLS13 {
				t.Errorf("%s: version %x, want TLS 1.3", name, st.Version)
			}
			if st.NegotiatedProtocol != "h2" {
				t.Errorf("%s: ALPN %q, want h2", name, st.NegotiatedProtocol)
			}
			if st.DidResume {
				t.Errorf("%s: handshake %d resumed a session", name, i)
			}
		}
		if r.server.ServerName != "" {
			t.Errorf("client sent SNI %q, want none", r.server.ServerName)
		}
		if got, err := PeerIdentity(&r.client); err != nil || got != idServer {
			t.Errorf("client PeerIdentity = %v, %v; want %v", got, err, idServer)
		}
		if got, err := PeerIdentity(&r.server); err != nil || got != idClient {
			t.Errorf("server PeerIdentity = %v, %v; want %v", got, err, idClient)
		}
	}
}

func TestTLSClientRejectsUnexpectedServer(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	r := handshake(t, ClientTLSConfig(issue(t, ca, idClient), []Identity{idOther}), serverFor(issue(t, ca, idServer)))
	wantErr(t, "client", r.clientErr, "identity mismatch", idServer.String(), idOther.String())
	if r.serverErr == nil {
		t.Error("server: handshake succeeded although the client rejected it")
	}
	r = handshake(t, ClientTLSConfig(issue(t, ca, idClient), nil), serverFor(issue(t, ca, idServer)))
	wantErr(t, "client with no expected identities", r.clientErr, "identity mismatch")
}

func TestTLSServerRejectsForeignTrustDomain(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	r := handshake(t, ClientTLSConfig(issue(t, ca, idForeig), []Identity{idServer}), serverFor(issue(t, ca, idServer)))
	wantErr(t, "server", r.serverErr, "trust domain", `"cluster.local"`, idForeig.String())
	wantErr(t, "client", r.clientErr, "bad certificate")
}

func TestTLSServerRequiresClientCert(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	srv := issue(t, ca, idServer)
	ccfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
	r := handshake(t, ccfg, serverFor(srv))
	wantErr(t, "server", r.serverErr, "certificate")
	if r.clientErr == nil {
		t.Error("client: connection usable without a client certificate")
	}
}

func TestTLSRejectsOtherCA(t *testing.T) {
	ca, other := newTestCA(t, LocalCAConfig{}), newTestCA(t, LocalCAConfig{})
	r := handshake(t, ClientTLSConfig(issue(t, ca, idClient), []Identity{idServer}), serverFor(issue(t, other, idServer)))
	wantErr(t, "client verifying a server from another CA", r.clientErr, "verify server certificate", "unknown authority")

	// A client whose certificate comes from another CA but which trusts the server's CA.
	foreign := issue(t, other, idClient)
	cli, err := NewWorkloadCert(foreign.TLS.PrivateKey.(*ecdsa.PrivateKey), foreign.Chain, ca.Roots())
	if err != nil {
		t.Fatal(err)
	}
	r = handshake(t, ClientTLSConfig(cli, []Identity{idServer}), serverFor(issue(t, ca, idServer)))
	wantErr(t, "server verifying a client from another CA", r.serverErr, "verify client certificate", "unknown authority")
}

func TestTLSServerRefusesTLS12(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	ccfg := ClientTLSConfig(issue(t, ca, idClient), []Identity{idServer})
	ccfg.MinVersion, ccfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	r := handshake(t, ccfg, serverFor(issue(t, ca, idServer)))
	wantErr(t, "server", r.serverErr, "unsupported versions")
	if r.clientErr == nil {
		t.Error("client: TLS 1.2 handshake succeeded")
	}
}

func TestTLSServerCertificateSource(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	cli := issue(t, ca, idClient)
	failing := ServerTLSConfig(func(context.Context) (*WorkloadCert, error) { return nil, errors.New("ca down") })
	r := handshake(t, ClientTLSConfig(cli, []Identity{idServer}), failing)
	wantErr(t, "server with failing source", r.serverErr, "ca down")

	r = handshake(t, ClientTLSConfig(cli, []Identity{idServer}), ServerTLSConfig(nil))
	wantErr(t, "server with nil source", r.serverErr, "no certificate source")

	r = handshake(t, ClientTLSConfig(cli, []Identity{idServer}), ServerTLSConfig(
		func(context.Context) (*WorkloadCert, error) { return nil, nil }))
	wantErr(t, "server with nil certificate", r.serverErr, "no certificate")

	// The source sees the handshake context and is called per handshake.
	calls := 0
	srv := issue(t, ca, idServer)
	counting := ServerTLSConfig(func(ctx context.Context) (*WorkloadCert, error) {
		if ctx == nil {
			return nil, errors.New("nil context")
		}
		calls++
		return srv, nil
	})
	for range 2 {
		if r := handshake(t, ClientTLSConfig(cli, []Identity{idServer}), counting); r.serverErr != nil {
			t.Fatal(r.serverErr)
		}
	}
	if calls != 2 {
		t.Errorf("certificate source called %d times for 2 handshakes", calls)
	}
}

func TestTLSClientNilSource(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	r := handshake(t, ClientTLSConfig(nil, []Identity{idServer}), serverFor(issue(t, ca, idServer)))
	wantErr(t, "client without certificate", r.clientErr, "no source certificate")
}

// TestTLSIntermediates uses a root -> intermediate -> leaf chain on both sides: the verifier must take
// the intermediate from the peer's chain.
func TestTLSIntermediates(t *testing.T) {
	rootKey, root := mkCert(t, nil, nil, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	interKey, inter := mkCert(t, rootKey, root, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	leafFor := func(id Identity) *WorkloadCert {
		key, leaf := mkCert(t, interKey, inter, &x509.Certificate{
			URIs:        []*url.URL{mustURL(t, id.String())},
			DNSNames:    []string{"ignored.example"},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		})
		wc, err := NewWorkloadCert(key, []*x509.Certificate{leaf, inter}, []*x509.Certificate{root})
		if err != nil {
			t.Fatal(err)
		}
		return wc
	}
	r := handshake(t, ClientTLSConfig(leafFor(idClient), []Identity{idServer}), serverFor(leafFor(idServer)))
	if r.clientErr != nil || r.serverErr != nil {
		t.Fatalf("handshake: client %v, server %v", r.clientErr, r.serverErr)
	}
	if len(r.client.PeerCertificates) != 2 || len(r.server.PeerCertificates) != 2 {
		t.Errorf("peer chains have %d/%d certificates, want 2", len(r.client.PeerCertificates), len(r.server.PeerCertificates))
	}
}

// mkCert creates a certificate from tmpl signed by parent (self-signed when parent is nil).
func mkCert(t *testing.T, parentKey *ecdsa.PrivateKey, parent, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := randomSerial()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	if tmpl.IsCA {
		tmpl.Subject = pkix.Name{CommonName: "test CA " + serial.String()}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, c
}

func TestTLSConfigShape(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	for name, cfg := range map[string]*tls.Config{
		"client": ClientTLSConfig(issue(t, ca, idClient), []Identity{idServer}),
		"server": serverFor(issue(t, ca, idServer)),
	} {
		if cfg.MinVersion != tls.VersionTLS13 || cfg.MaxVersion != tls.VersionTLS13 {
			t.Errorf("%s: versions %x-%x, want TLS 1.3 only", name, cfg.MinVersion, cfg.MaxVersion)
		}
		if len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "h2" {
			t.Errorf("%s: NextProtos %q, want [h2]", name, cfg.NextProtos)
		}
		if !cfg.SessionTicketsDisabled || cfg.ClientSessionCache != nil {
			t.Errorf("%s: session resumption not disabled", name)
		}
		if cfg.ServerName != "" {
			t.Errorf("%s: ServerName %q, want empty (no SNI)", name, cfg.ServerName)
		}
	}
}

func TestPeerIdentityErrors(t *testing.T) {
	if _, err := PeerIdentity(nil); err == nil {
		t.Error("PeerIdentity(nil) succeeded")
	}
	if _, err := PeerIdentity(&tls.ConnectionState{}); err == nil {
		t.Error("PeerIdentity of incomplete handshake succeeded")
	}
	if _, err := PeerIdentity(&tls.ConnectionState{HandshakeComplete: true}); err == nil {
		t.Error("PeerIdentity without peer certificates succeeded")
	}
	_, noSAN := mkCert(t, nil, nil, &x509.Certificate{URIs: []*url.URL{mustURL(t, "https://example.com/x")}})
	st := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{noSAN}}
	wantErr(t, "PeerIdentity without SPIFFE SAN", func() error { _, err := PeerIdentity(st); return err }(), "not a SPIFFE identity", "https://example.com/x")
}

func TestNewWorkloadCertErrors(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	wc := issue(t, ca, idClient)
	key := wc.TLS.PrivateKey.(*ecdsa.PrivateKey)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	noSANKey, noSAN := mkCert(t, nil, nil, &x509.Certificate{DNSNames: []string{"a"}})
	tests := []struct {
		name    string
		err     func() error
		errPart string
	}{
		{"nil key", func() error { _, err := NewWorkloadCert(nil, wc.Chain, wc.Roots); return err }, "no private key"},
		{"empty chain", func() error { _, err := NewWorkloadCert(key, nil, wc.Roots); return err }, "empty certificate chain"},
		{"nil in chain", func() error {
			_, err := NewWorkloadCert(key, []*x509.Certificate{wc.Chain[0], nil}, wc.Roots)
			return err
		}, "chain[1] is nil"},
		{"no roots", func() error { _, err := NewWorkloadCert(key, wc.Chain, nil); return err }, "no root"},
		{"key mismatch", func() error { _, err := NewWorkloadCert(otherKey, wc.Chain, wc.Roots); return err }, "does not match"},
		{"no SPIFFE SAN", func() error {
			_, err := NewWorkloadCert(noSANKey, []*x509.Certificate{noSAN}, wc.Roots)
			return err
		}, "leaf certificate has no URI SAN"},
	}
	for _, tc := range tests {
		wantErr(t, tc.name, tc.err(), tc.errPart)
	}
}
