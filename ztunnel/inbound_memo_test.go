package ztunnel

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"testing"
)

func peerState(t *testing.T, spiffe string) *tls.ConnectionState {
	u, err := url.Parse(spiffe)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}}}}
}

// The client identity is read once per TLS connection, and is the one of the connection asked about.
func TestPodPeerMemo(t *testing.T) {
	pod := testPod(newTestProxy(t, Config{}))
	a := peerState(t, "spiffe://cluster.local/ns/a/sa/x")
	b := peerState(t, "spiffe://cluster.local/ns/b/sa/y")
	for i, tc := range []struct {
		cs   *tls.ConnectionState
		want string // "" = no identity
	}{
		{a, "spiffe://cluster.local/ns/a/sa/x"},
		{a, "spiffe://cluster.local/ns/a/sa/x"},
		{b, "spiffe://cluster.local/ns/b/sa/y"},
		{nil, ""},
		{&tls.ConnectionState{HandshakeComplete: true}, ""},
		{a, "spiffe://cluster.local/ns/a/sa/x"},
	} {
		m := pod.peerOf(tc.cs)
		if got := map[bool]string{true: m.str}[m.ok]; got != tc.want || (m.ok && m.id.String() != tc.want) {
			t.Errorf("call %d: identity %q (ok %v), want %q", i, m.str, m.ok, tc.want)
		}
	}
	if first, second := pod.peerOf(a), pod.peerOf(a); first != second {
		t.Error("same connection: identity read again")
	}
}
