package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestHostileClientCertificates plays a client that speaks HBONE straight to a server pod's
// 15008 from an off-mesh pod, with leaves signed by the mesh CA itself. A DENY policy on
// principal cluster.local/ns/default/sa/atk refuses a leaf with only that SPIFFE SAN, and must
// refuse just as well a leaf that adds a SAN in another trust domain before it (that one passed
// the trust-domain check on the second SAN while authorization read the first). A leaf with one
// good identity, and ordinary mesh traffic, still get through afterwards.
func TestHostileClientCertificates(t *testing.T) {
	c := twoNodes(t)
	srv := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", ServiceAccount: "server", Enrolled: true})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true})
	attacker := addPod(t, c, testbed.PodSpec{Name: "attacker", Node: "node1"})
	app := serve(t, srv, 8080, echo)
	appAddr := netip.AddrPortFrom(srv.IP(), 8080)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.SetPolicy(ctx, testbed.PolicySpec{Name: "deny-atk", Namespace: "default", Action: "Deny",
		Rules: [][]testbed.Match{{{Principals: []string{"cluster.local/ns/default/sa/atk"}}}}}); err != nil {
		t.Fatal(err)
	}
	ca := loadTestbedCA(t, c)
	const (
		atk     = "spiffe://cluster.local/ns/default/sa/atk"
		foreign = "spiffe://other.td/ns/default/sa/atk"
		good    = "spiffe://cluster.local/ns/default/sa/good"
	)

	// hboneEcho opens one CONNECT stream to the application with a leaf holding uris, on a
	// connection of its own, and returns the echo of msg or the first error.
	hboneEcho := func(ca *testbedCA, uris []string, msg string) (string, error) {
		leaf := ca.mint(t, uris...)
		pool := hbone.NewPool(hbone.PoolConfig{
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return attacker.NetNS().Dial(ctx, network, addr, redirect.SocketOptions{})
			},
			// The client does not care who the server is: only the server's checks are tested.
			TLSConfig: func(context.Context, hbone.Key) (*tls.Config, error) {
				return &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{leaf}}, nil
			},
		})
		defer pool.Close()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		key := hbone.Key{SrcIdentity: uris[0], Dst: netip.AddrPortFrom(srv.IP(), 15008)}
		st, err := pool.Connect(ctx, key, appAddr.String(), nil)
		if err != nil {
			return "", err
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(st, msg); err != nil {
			return "", fmt.Errorf("write: %w", err)
		}
		st.CloseWrite()
		b, err := io.ReadAll(st)
		return string(b), err
	}
	refusedFrom := func(ca *testbedCA, what string, uris ...string) {
		t.Helper()
		before := app.accepted.Load()
		got, err := hboneEcho(ca, uris, "let me in")
		if err == nil {
			t.Errorf("%s (SANs %q): the application echoed %q; want the tunnel refused", what, uris, got)
			return
		}
		if !deniedOrRefused(err) {
			t.Errorf("%s (SANs %q): %v; want a 401 or the server refusing the certificate", what, uris, err)
		}
		if n := app.accepted.Load() - before; n != 0 {
			t.Errorf("%s: the application got %d connections", what, n)
		}
		t.Logf("%s (SANs %q) refused: %v", what, uris, err)
	}
	refused := func(what string, uris ...string) {
		t.Helper()
		refusedFrom(ca, what, uris...)
	}

	refused("denied principal", atk)
	waitLog(t, c, "node2", "explicitly denied by: default/deny-atk")
	refused("denied principal behind a foreign-trust-domain SAN", foreign, atk)
	refused("denied principal before a foreign-trust-domain SAN", atk, foreign)
	refused("SPIFFE SAN with a non-SPIFFE URI", good, "https://example.com/good")
	refused("foreign trust domain only", foreign)
	refusedFrom(newTestCA(t), "a good identity signed by a foreign CA", good)

	// The proxy still serves: a direct client with one good identity, and the mesh.
	if got, err := hboneEcho(ca, []string{good}, "good"); err != nil || got != "good" {
		t.Errorf("direct HBONE client with identity %s after the refusals: %q, %v", good, got, err)
	}
	if err := tryEcho(client, appAddr.String(), "mesh"); err != nil {
		t.Errorf("mesh client after the refusals: %v", err)
	}
}

// deniedOrRefused reports whether err is the server's refusal of a tunnel: a 401 answer to the
// CONNECT, or the server ending the connection in or right after the TLS handshake. With TLS 1.3
// the client finishes first, so the server's rejection of its certificate arrives as an alert on
// the first read, or, if the server closed before the client wrote, as a broken pipe or reset.
func deniedOrRefused(err error) bool {
	var se *hbone.StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusUnauthorized
	}
	var alert tls.AlertError
	if errors.As(err, &alert) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) {
		return true
	}
	msg := err.Error() // in case a layer flattened the cause into text
	for _, s := range []string{"remote error: tls: ", "broken pipe", "connection reset by peer", "EOF"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// testbedCA signs arbitrary leaves with the run's mesh CA (the root every proxy trusts).
type testbedCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// newTestCA is a self-signed CA of its own, which the mesh does not trust.
func newTestCA(t *testing.T) *testbedCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testbedCA{cert: cert, key: key}
}

func loadTestbedCA(t *testing.T, c *testbed.Cluster) *testbedCA {
	t.Helper()
	certFile, keyFile := c.CAFiles()
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatalf("CA files %s, %s: no PEM block", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		t.Fatalf("CA key is a %T, not a signer", key)
	}
	return &testbedCA{cert: cert, key: signer}
}

// mint returns a client+server leaf signed by the CA carrying exactly the URI SANs uris.
func (ca *testbedCA) mint(t *testing.T, uris ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
