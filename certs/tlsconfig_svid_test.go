package certs

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// svidCA is a root that signs leaves with any URI SANs, as a compromised or careless mesh CA might.
type svidCA struct {
	t    *testing.T
	key  *ecdsa.PrivateKey
	root *x509.Certificate
}

func newSVIDCA(t *testing.T) *svidCA {
	key, root := mkCert(t, nil, nil, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	return &svidCA{t: t, key: key, root: root}
}

// leaf signs a client+server leaf carrying exactly the URI SANs uris.
func (ca *svidCA) leaf(uris ...string) (*ecdsa.PrivateKey, *x509.Certificate) {
	tmpl := &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		tmpl.URIs = append(tmpl.URIs, mustURL(ca.t, u))
	}
	return mkCert(ca.t, ca.key, ca.root, tmpl)
}

// workloadCert is an honest peer's certificate for id from this CA.
func (ca *svidCA) workloadCert(id Identity) *WorkloadCert {
	key, leaf := ca.leaf(id.String())
	wc, err := NewWorkloadCert(key, []*x509.Certificate{leaf}, []*x509.Certificate{ca.root})
	if err != nil {
		ca.t.Fatal(err)
	}
	return wc
}

// rawClient presents key/leaf without checking the server: the hostile side of a handshake.
func rawClient(key *ecdsa.PrivateKey, leaf *x509.Certificate) *tls.Config {
	c := baseTLSConfig()
	c.InsecureSkipVerify = true
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
	}
	return c
}

// rawServer presents key/leaf and takes any client certificate: the hostile side of a handshake.
func rawServer(key *ecdsa.PrivateKey, leaf *x509.Certificate) *tls.Config {
	c := baseTLSConfig()
	c.ClientAuth = tls.RequireAnyClientCert
	c.Certificates = []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}
	return c
}

const (
	atkOurs    = "spiffe://cluster.local/ns/default/sa/atk"
	atkForeign = "spiffe://other.td/ns/default/sa/atk"
	notSPIFFE  = "https://example.com/atk"
)

var idAtk = Identity{"cluster.local", "default", "atk"}

// svidCase is a leaf with the URI SANs uris. wantErr is nil for a good leaf; otherwise every part
// must appear in the error.
type svidCase struct {
	name    string
	uris    []string
	wantErr []string
}

// svidCases are the leaves every identity check must judge alike; the error parts follow the
// "<role> certificate" that each check names.
var svidCases = []svidCase{
	{"one SPIFFE SAN", []string{atkOurs}, nil},
	{"no URI SAN", nil, []string{"has no URI SAN", "exactly one"}},
	{"two SPIFFE SANs, foreign first", []string{atkForeign, atkOurs},
		[]string{"has 2 URI SANs", atkForeign, atkOurs, "X.509-SVID must have exactly one"}},
	{"two SPIFFE SANs, ours first", []string{atkOurs, atkForeign},
		[]string{"has 2 URI SANs", atkOurs, atkForeign, "X.509-SVID must have exactly one"}},
	{"SPIFFE and non-SPIFFE URI", []string{atkOurs, notSPIFFE}, []string{"has 2 URI SANs", notSPIFFE}},
	{"non-SPIFFE and SPIFFE URI", []string{notSPIFFE, atkOurs}, []string{"has 2 URI SANs", notSPIFFE}},
	{"only a non-SPIFFE URI", []string{notSPIFFE}, []string{"not a SPIFFE identity", notSPIFFE}},
}

// TestTLSServerAcceptsOnlySVIDClients: the HBONE server takes a client leaf only if it has exactly
// one URI SAN, a SPIFFE identity in our trust domain. A leaf with a second SAN must not pass the
// trust-domain check on one SAN while authorization reads the other (a DENY on the principal in
// our trust domain was bypassed that way).
func TestTLSServerAcceptsOnlySVIDClients(t *testing.T) {
	ca := newSVIDCA(t)
	scfg := serverFor(ca.workloadCert(idServer))
	var cases []svidCase
	for _, tc := range svidCases {
		if tc.wantErr != nil {
			tc.wantErr = append([]string{"verify client certificate: client certificate "}, tc.wantErr...)
		}
		cases = append(cases, tc)
	}
	cases = append(cases, svidCase{"one SPIFFE SAN in another trust domain", []string{atkForeign},
		[]string{"verify client certificate: client identity " + atkForeign + ` is not in trust domain "cluster.local"`}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := handshake(t, rawClient(ca.leaf(tc.uris...)), scfg)
			if tc.wantErr == nil {
				if r.clientErr != nil || r.serverErr != nil {
					t.Fatalf("handshake: client %v, server %v", r.clientErr, r.serverErr)
				}
				if got, err := PeerIdentity(&r.server); err != nil || got != idAtk {
					t.Errorf("server PeerIdentity = %v, %v; want %v", got, err, idAtk)
				}
				return
			}
			wantErr(t, "server", r.serverErr, tc.wantErr...)
			if r.clientErr == nil {
				t.Error("client: connection usable although the server refused the certificate")
			}
		})
	}
}

// TestTLSClientAcceptsOnlySVIDServers: the HBONE client takes a server leaf only if it has exactly
// one URI SAN, a SPIFFE identity equal to an expected one. A second SAN that matches is not enough.
func TestTLSClientAcceptsOnlySVIDServers(t *testing.T) {
	ca := newSVIDCA(t)
	ccfg := ClientTLSConfig(ca.workloadCert(idClient), []Identity{idAtk})
	var cases []svidCase
	for _, tc := range svidCases {
		if tc.wantErr != nil {
			tc.wantErr = append([]string{"verify server certificate: server certificate "}, tc.wantErr...)
		}
		cases = append(cases, tc)
	}
	cases = append(cases, svidCase{"one SPIFFE SAN in another trust domain", []string{atkForeign},
		[]string{"verify server certificate: identity mismatch", atkForeign, atkOurs}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := handshake(t, ccfg, rawServer(ca.leaf(tc.uris...)))
			if tc.wantErr == nil {
				if r.clientErr != nil || r.serverErr != nil {
					t.Fatalf("handshake: client %v, server %v", r.clientErr, r.serverErr)
				}
				if got, err := PeerIdentity(&r.client); err != nil || got != idAtk {
					t.Errorf("client PeerIdentity = %v, %v; want %v", got, err, idAtk)
				}
				return
			}
			wantErr(t, "client", r.clientErr, tc.wantErr...)
			if r.serverErr == nil {
				t.Error("server: handshake succeeded although the client refused the certificate")
			}
		})
	}
}

// TestPeerIdentityRequiresSVID: PeerIdentity, which authorization uses, reports an identity only
// for a leaf with exactly one URI SAN that is a SPIFFE identity, never the first of several.
func TestPeerIdentityRequiresSVID(t *testing.T) {
	ca := newSVIDCA(t)
	for _, tc := range svidCases {
		t.Run(tc.name, func(t *testing.T) {
			_, leaf := ca.leaf(tc.uris...)
			for name, cs := range map[string]*tls.ConnectionState{
				"peer certificates": {HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf}},
				"verified chains":   {HandshakeComplete: true, VerifiedChains: [][]*x509.Certificate{{leaf, ca.root}}},
			} {
				got, err := PeerIdentity(cs)
				if tc.wantErr == nil {
					if err != nil || got != idAtk {
						t.Errorf("%s: PeerIdentity = %v, %v; want %v", name, got, err, idAtk)
					}
					continue
				}
				if err == nil {
					t.Errorf("%s: PeerIdentity = %v, want an error", name, got)
					continue
				}
				wantErr(t, name, err, append([]string{"peer identity: peer certificate "}, tc.wantErr...)...)
			}
		})
	}
}

// TestNewWorkloadCertRequiresSVID: our own certificate must be one that peers accept.
func TestNewWorkloadCertRequiresSVID(t *testing.T) {
	ca := newSVIDCA(t)
	key, leaf := ca.leaf(atkOurs, atkForeign)
	_, err := NewWorkloadCert(key, []*x509.Certificate{leaf}, []*x509.Certificate{ca.root})
	wantErr(t, "NewWorkloadCert with two URI SANs", err, "leaf certificate has 2 URI SANs", atkForeign)
}
