package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func fixedNow() time.Time { return testNow }

func mustParseIdentity(t testing.TB, s string) Identity {
	t.Helper()
	id, err := ParseIdentity(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newTestCA(t testing.TB, cfg LocalCAConfig) *LocalCA {
	t.Helper()
	ca, err := NewLocalCA(cfg)
	if err != nil {
		t.Fatalf("NewLocalCA: %v", err)
	}
	return ca
}

func TestLocalCAIssue(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{Now: fixedNow, WorkloadTTL: 3 * time.Hour})
	id := mustParseIdentity(t, "spiffe://cluster.local/ns/default/sa/sleep")
	wc, err := ca.Issue(context.Background(), id)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	leaf := wc.Chain[0]

	// Chain verifies against the CA's roots at the issue time, for both usages.
	pool := x509.NewCertPool()
	for _, r := range ca.Roots() {
		pool.AddCert(r)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: testNow,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify against Roots: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: wc.RootPool(), CurrentTime: testNow}); err != nil {
		t.Errorf("leaf does not verify against RootPool: %v", err)
	}
	if first, second := wc.RootPool(), wc.RootPool(); first != second {
		t.Error("RootPool is rebuilt on every call")
	}

	// SANs: exactly the identity.
	if got := uriStrings(leaf); !cmp.Equal(got, []string{id.String()}) {
		t.Errorf("URI SANs = %q, want [%s]", got, id)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("unexpected non-URI SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.Subject.String() != "" {
		t.Errorf("subject = %q, want empty", leaf.Subject)
	}

	// Validity window.
	if want := testNow.Add(-time.Minute); !leaf.NotBefore.Equal(want) || !wc.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %v / %v, want %v", leaf.NotBefore, wc.NotBefore, want)
	}
	if want := testNow.Add(3 * time.Hour); !leaf.NotAfter.Equal(want) || !wc.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %v / %v, want %v", leaf.NotAfter, wc.NotAfter, want)
	}

	// Key type and usages.
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("leaf key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if priv, ok := wc.TLS.PrivateKey.(*ecdsa.PrivateKey); !ok || !priv.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("TLS.PrivateKey %T does not match the leaf", wc.TLS.PrivateKey)
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", leaf.KeyUsage, want)
	}
	if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !cmp.Equal(leaf.ExtKeyUsage, want) {
		t.Errorf("ExtKeyUsage = %v, want %v", leaf.ExtKeyUsage, want)
	}
	if leaf.IsCA {
		t.Error("leaf IsCA")
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v not a positive 128-bit number", leaf.SerialNumber)
	}

	// WorkloadCert fields agree with each other.
	if wc.Identity != id {
		t.Errorf("Identity = %v, want %v", wc.Identity, id)
	}
	if len(wc.Chain) != 1 || len(wc.TLS.Certificate) != 1 || !bytes.Equal(wc.TLS.Certificate[0], leaf.Raw) || wc.TLS.Leaf != leaf {
		t.Errorf("TLS certificate does not hold exactly the leaf")
	}
	if len(wc.Roots) != 1 || !wc.Roots[0].Equal(ca.Roots()[0]) {
		t.Errorf("Roots = %d certs, want the CA root", len(wc.Roots))
	}

	// A second certificate gets a new key and serial.
	wc2, err := ca.Issue(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if wc2.Chain[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
	if wc2.Chain[0].PublicKey.(*ecdsa.PublicKey).Equal(pub) {
		t.Error("two certificates share a key")
	}
}

func TestLocalCARoot(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{Now: fixedNow, TrustDomain: "example.org"})
	roots := ca.Roots()
	if len(roots) != 1 {
		t.Fatalf("Roots() = %d certs, want 1", len(roots))
	}
	root := roots[0]
	if !root.IsCA || !root.BasicConstraintsValid {
		t.Error("root is not a CA")
	}
	if pub, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("root key %T, want ECDSA P-256", root.PublicKey)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if got, want := root.NotAfter.Sub(testNow), 10*365*24*time.Hour; got != want {
		t.Errorf("root lifetime from now = %v, want %v", got, want)
	}
	if got := root.Subject.Organization; !cmp.Equal(got, []string{"example.org"}) {
		t.Errorf("root organization = %q", got)
	}
	parsed, err := ParseCertificatesPEM(ca.RootPEM())
	if err != nil || len(parsed) != 1 || !parsed[0].Equal(root) {
		t.Errorf("RootPEM does not hold the root: %v", err)
	}
}

func TestLocalCAIssueErrors(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	for _, id := range []Identity{{}, {"cluster.local", "a/b", "c"}, {"cluster.local", "ns", ""}} {
		if _, err := ca.Issue(context.Background(), id); err == nil {
			t.Errorf("Issue(%+v) succeeded, want error", id)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ca.Issue(ctx, Identity{"cluster.local", "a", "b"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Issue with cancelled ctx: %v, want context.Canceled", err)
	}
}

func TestLocalCAWorkloadTTLCappedByRoot(t *testing.T) {
	now := testNow
	ca := newTestCA(t, LocalCAConfig{Now: func() time.Time { return now }})
	now = ca.Roots()[0].NotAfter.Add(-time.Hour)
	wc, err := ca.Issue(context.Background(), Identity{"cluster.local", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if !wc.NotAfter.Equal(ca.Roots()[0].NotAfter) {
		t.Errorf("NotAfter = %v, want the root's %v", wc.NotAfter, ca.Roots()[0].NotAfter)
	}
}

func TestLocalCACSRChecks(t *testing.T) {
	ca := newTestCA(t, LocalCAConfig{})
	id := Identity{"cluster.local", "a", "b"}
	other := Identity{"cluster.local", "a", "c"}
	csrPEM, _, err := NewCSR(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.sign(csrPEM, id); err == nil || !strings.Contains(err.Error(), "want exactly") {
		t.Errorf("sign CSR for another identity: %v, want SAN mismatch", err)
	}
	// Corrupt the signature: flip a byte near the end of the DER.
	block, _ := pem.Decode(csrPEM)
	block.Bytes[len(block.Bytes)-3] ^= 0xff
	if _, err := ca.sign(pem.EncodeToMemory(block), other); err == nil {
		t.Error("sign CSR with corrupt signature succeeded")
	}
	// A CSR with an extra DNS SAN.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u := mustURL(t, id.String())
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}, DNSNames: []string{"x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), id); err == nil {
		t.Error("sign CSR with DNS SAN succeeded")
	}
	if _, err := ca.sign([]byte("garbage"), id); err == nil {
		t.Error("sign garbage succeeded")
	}
}

func TestLocalCAFilesGenerateThenReload(t *testing.T) {
	dir := t.TempDir()
	cfg := LocalCAConfig{CertFile: filepath.Join(dir, "ca-cert.pem"), KeyFile: filepath.Join(dir, "ca-key.pem")}
	ca1 := newTestCA(t, cfg)
	fi, err := os.Stat(cfg.KeyFile)
	if err != nil {
		t.Fatalf("key file not written: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	keyPEM, _ := os.ReadFile(cfg.KeyFile)
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PKCS#8 PEM")
	}
	certPEM, _ := os.ReadFile(cfg.CertFile)
	if !bytes.Equal(certPEM, ca1.RootPEM()) {
		t.Error("certificate file differs from RootPEM")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d files, want 2 (temporary files left?)", len(entries))
	}

	ca2 := newTestCA(t, cfg)
	if !ca2.Roots()[0].Equal(ca1.Roots()[0]) {
		t.Fatal("reloaded CA has a different root")
	}
	wc, err := ca2.Issue(context.Background(), Identity{"cluster.local", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca1.Roots()[0])
	if _, err := wc.Chain[0].Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Errorf("certificate from reloaded CA does not verify against the original root: %v", err)
	}
}

func TestLocalCAFilesConcurrentGenerate(t *testing.T) {
	dir := t.TempDir()
	cfg := LocalCAConfig{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem")}
	const n = 6
	cas := make([]*LocalCA, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { cas[i], errs[i] = NewLocalCA(cfg) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("NewLocalCA %d: %v", i, errs[i])
		}
	}
	final := newTestCA(t, cfg)
	for i, ca := range cas {
		if ca != nil && !ca.Roots()[0].Equal(final.Roots()[0]) {
			t.Errorf("CA %d uses a root that is not the one on disk", i)
		}
	}
}

// writeRootFiles writes a self-signed CA for key into dir and returns the paths.
func writeRootFiles(t *testing.T, dir string, key crypto.Signer, keyPEM []byte) (certFile, keyFile string) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, keyPEM)
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLocalCAKeyFormats(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k crypto.Signer) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	tests := []struct {
		name   string
		key    crypto.Signer
		keyPEM []byte
	}{
		{"pkcs8 ec", ecKey, pkcs8(ecKey)},
		{"pkcs8 rsa", rsaKey, pkcs8(rsaKey)},
		{"sec1 ec with parameters block", ecKey, append(
			pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)},
		{"pkcs1 rsa", rsaKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile := writeRootFiles(t, t.TempDir(), tc.key, tc.keyPEM)
			ca := newTestCA(t, LocalCAConfig{CertFile: certFile, KeyFile: keyFile})
			wc, err := ca.Issue(context.Background(), Identity{"cluster.local", "a", "b"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := wc.Chain[0].Verify(x509.VerifyOptions{Roots: wc.RootPool()}); err != nil {
				t.Errorf("leaf does not verify: %v", err)
			}
		})
	}
}

func TestLocalCAFileErrors(t *testing.T) {
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(otherKey)

	tests := []struct {
		name string
		// setup returns the config and the file name the error must mention.
		setup func(t *testing.T, dir string) (LocalCAConfig, string)
	}{
		{"only cert set", func(t *testing.T, dir string) (LocalCAConfig, string) {
			return LocalCAConfig{CertFile: filepath.Join(dir, "c.pem")}, "CA_KEY"
		}},
		{"only key set", func(t *testing.T, dir string) (LocalCAConfig, string) {
			return LocalCAConfig{KeyFile: filepath.Join(dir, "k.pem")}, "CA_CERT"
		}},
		{"key file missing", func(t *testing.T, dir string) (LocalCAConfig, string) {
			old := raceWait
			raceWait = 100 * time.Millisecond
			t.Cleanup(func() { raceWait = old })
			c, _ := generated(t, dir)
			os.Remove(c.KeyFile)
			return c, c.KeyFile
		}},
		{"cert file missing", func(t *testing.T, dir string) (LocalCAConfig, string) {
			c, _ := generated(t, dir)
			os.Remove(c.CertFile)
			return c, c.CertFile
		}},
		{"corrupt cert", func(t *testing.T, dir string) (LocalCAConfig, string) {
			c, _ := generated(t, dir)
			writeFile(t, c.CertFile, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
			return c, c.CertFile
		}},
		{"cert not PEM", func(t *testing.T, dir string) (LocalCAConfig, string) {
			c, _ := generated(t, dir)
			writeFile(t, c.CertFile, []byte("hello"))
			return c, c.CertFile
		}},
		{"corrupt key", func(t *testing.T, dir string) (LocalCAConfig, string) {
			c, _ := generated(t, dir)
			writeFile(t, c.KeyFile, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
			return c, c.KeyFile
		}},
		{"key not PEM", func(t *testing.T, dir string) (LocalCAConfig, string) {
			c, _ := generated(t, dir)
			writeFile(t, c.KeyFile, []byte("hello"))
			return c, c.KeyFile
		}},
		{"mismatched key", func(t *testing.T, dir string) (LocalCAConfig, string) {
			c, _ := generated(t, dir)
			writeFile(t, c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER}))
			return c, c.KeyFile
		}},
		{"cert is not a CA", func(t *testing.T, dir string) (LocalCAConfig, string) {
			c, ca := generated(t, dir)
			wc, err := ca.Issue(context.Background(), Identity{"cluster.local", "a", "b"})
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, c.CertFile, encodeCertsPEM(wc.Chain))
			return c, c.CertFile
		}},
		{"directory missing", func(t *testing.T, dir string) (LocalCAConfig, string) {
			p := filepath.Join(dir, "nope", "c.pem")
			return LocalCAConfig{CertFile: p, KeyFile: filepath.Join(dir, "nope", "k.pem")}, p
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, mention := tc.setup(t, t.TempDir())
			ca, err := NewLocalCA(cfg)
			if err == nil {
				t.Fatalf("NewLocalCA succeeded (root %v), want error", ca.Roots()[0].Subject)
			}
			if !strings.Contains(err.Error(), mention) {
				t.Errorf("error %q does not mention %q", err, mention)
			}
		})
	}
}

// generated makes a CA whose files are in dir and returns its config.
func generated(t *testing.T, dir string) (LocalCAConfig, *LocalCA) {
	t.Helper()
	cfg := LocalCAConfig{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem")}
	return cfg, newTestCA(t, cfg)
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
