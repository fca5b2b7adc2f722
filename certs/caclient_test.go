package certs

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var caID = Identity{"cluster.local", "ns1", "sa1"}

// newTestCAClient returns a client for cfg that is closed when the test ends.
func newTestCAClient(t *testing.T, cfg CAClientConfig) *CAClient {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := NewCAClient(cfg)
	if err != nil {
		t.Fatalf("NewCAClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func issueCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mdValue returns the single value of key in md, or "<absent>".
func mdValue(md metadata.MD, key string) string {
	v := md.Get(key)
	switch len(v) {
	case 0:
		return "<absent>"
	case 1:
		return v[0]
	default:
		return "<several>"
	}
}

// checkCAIssued checks that wc is a usable certificate for id issued by f's root.
func checkCAIssued(t *testing.T, f *fakeCA, wc *WorkloadCert, id Identity) {
	t.Helper()
	if wc.Identity != id {
		t.Errorf("Identity = %s, want %s", wc.Identity, id)
	}
	if len(wc.Roots) != 1 || !wc.Roots[0].Equal(f.root) {
		t.Errorf("Roots = %v, want the fake CA's root", wc.Roots)
	}
	if _, err := wc.TLS.Leaf.Verify(x509VerifyOpts(wc)); err != nil {
		t.Errorf("leaf does not verify against its own roots: %v", err)
	}
}

func TestCAClientPlaintextHeadersAndTokenRotation(t *testing.T) {
	f := newFakeCA(t, false)
	tokenFile := filepath.Join(t.TempDir(), "istio-token")
	writeFile(t, tokenFile, []byte("token-one\n"))
	c := newTestCAClient(t, CAClientConfig{
		Address:   "http://" + f.addr,
		TokenPath: tokenFile,
		ClusterID: "cluster-7",
		Headers:   map[string]string{"X-Extra": "extra value"},
		TTL:       90 * time.Minute,
	})

	wc, err := c.Issue(issueCtx(t), caID)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	checkCAIssued(t, f, wc, caID)

	writeFile(t, tokenFile, []byte("token-two"))
	if _, err := c.Issue(issueCtx(t), caID); err != nil {
		t.Fatalf("second Issue: %v", err)
	}

	calls := f.callsSnapshot()
	if len(calls) != 2 {
		t.Fatalf("CA saw %d calls, want 2", len(calls))
	}
	type seen struct{ Auth, ClusterID, Extra string }
	var got []seen
	for _, call := range calls {
		got = append(got, seen{mdValue(call.md, "authorization"), mdValue(call.md, "clusterid"), mdValue(call.md, "x-extra")})
		if call.req.Metadata != nil {
			t.Errorf("request metadata = %v, want none without Impersonate", call.req.Metadata)
		}
		if call.req.ValidityDuration != 5400 {
			t.Errorf("validity_duration = %d, want 5400", call.req.ValidityDuration)
		}
		if _, err := parseCSRFor([]byte(call.req.Csr), caID); err != nil {
			t.Errorf("CSR: %v", err)
		}
	}
	want := []seen{
		{"Bearer token-one", "cluster-7", "extra value"},
		{"Bearer token-two", "cluster-7", "extra value"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers seen by the CA (-want +got):\n%s", diff)
	}
	if calls[0].req.Csr == calls[1].req.Csr {
		t.Error("the two requests carried the same CSR, want a fresh key per request")
	}
}

func TestCAClientTLSImpersonation(t *testing.T) {
	f := newFakeCA(t, true)
	c := newTestCAClient(t, CAClientConfig{
		Address:     "https://" + f.addr,
		RootCAFile:  f.serverRootFile,
		AltHostname: "istiod.test",
		Impersonate: true,
	})
	wc, err := c.Issue(issueCtx(t), caID)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	checkCAIssued(t, f, wc, caID)
	if life := wc.NotAfter.Sub(wc.NotBefore); life != 24*time.Hour {
		t.Errorf("lifetime %s, want the default TTL 24h", life)
	}
	call := f.callsSnapshot()[0]
	if got := call.req.GetMetadata().GetFields()["ImpersonatedIdentity"].GetStringValue(); got != caID.String() {
		t.Errorf("ImpersonatedIdentity = %q, want %q", got, caID)
	}
	if got := mdValue(call.md, "authorization"); got != "<absent>" {
		t.Errorf("authorization = %q, want none without a token", got)
	}
	if got := mdValue(call.md, "clusterid"); got != "Kubernetes" {
		t.Errorf("clusterid = %q, want the default Kubernetes", got)
	}
}

func TestCAClientTLSServerVerification(t *testing.T) {
	f := newFakeCA(t, true)
	other := newFakeCA(t, true) // its server root did not sign f's server certificate
	for _, tc := range []struct {
		name    string
		cfg     CAClientConfig
		wantErr string // "" = success
	}{
		{"inline root PEM", CAClientConfig{Address: "https://" + f.addr, RootCAFile: string(f.serverRootPEM), AltHostname: "istiod.test"}, ""},
		{"scheme-less address is TLS", CAClientConfig{Address: f.addr, RootCAFile: f.serverRootFile, AltHostname: "istiod.test"}, ""},
		{"URL host not in certificate", CAClientConfig{Address: "https://" + f.addr, RootCAFile: f.serverRootFile}, "127.0.0.1"},
		{"wrong roots", CAClientConfig{Address: "https://" + f.addr, RootCAFile: other.serverRootFile, AltHostname: "istiod.test"}, "certificate"},
		{"wrong alt hostname", CAClientConfig{Address: "https://" + f.addr, RootCAFile: f.serverRootFile, AltHostname: "other.test"}, "other.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCAClient(t, tc.cfg)
			_, err := c.Issue(issueCtx(t), caID)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				return
			}
			t.Logf("Issue error: %v", err)
			wantErr(t, "Issue", err, tc.wantErr, f.addr)
			if code := status.Code(err); code != codes.Unavailable {
				t.Errorf("status code %s, want Unavailable", code)
			}
		})
	}
}

func TestCAClientStaticToken(t *testing.T) {
	f := newFakeCA(t, false)
	c := newTestCAClient(t, CAClientConfig{Address: "http://" + f.addr, TokenPath: "static.jwt-value"})
	if _, err := c.Issue(issueCtx(t), caID); err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if got := mdValue(f.callsSnapshot()[0].md, "authorization"); got != "Bearer static.jwt-value" {
		t.Errorf("authorization = %q, want the static token", got)
	}
}

func TestCAClientTokenFileProblemsPerRequest(t *testing.T) {
	f := newFakeCA(t, false)
	tokenFile := filepath.Join(t.TempDir(), "istio-token")
	writeFile(t, tokenFile, []byte("tok"))
	c := newTestCAClient(t, CAClientConfig{Address: "http://" + f.addr, TokenPath: tokenFile})

	writeFile(t, tokenFile, []byte(" \n"))
	_, err := c.Issue(issueCtx(t), caID)
	wantErr(t, "Issue with empty token file", err, "is empty", tokenFile)
	if code := status.Code(err); code != codes.Unauthenticated {
		t.Errorf("status code %s, want Unauthenticated", code)
	}
	writeFile(t, tokenFile, []byte("two words"))
	_, err = c.Issue(issueCtx(t), caID)
	wantErr(t, "Issue with bad token", err, "space")
	if n := len(f.callsSnapshot()); n != 0 {
		t.Errorf("CA saw %d calls, want none without a usable token", n)
	}
}

func TestCAClientClose(t *testing.T) {
	f := newFakeCA(t, false)
	c, err := NewCAClient(CAClientConfig{Address: "http://" + f.addr, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err = c.Issue(issueCtx(t), caID)
	wantErr(t, "Issue after Close", err, "CreateCertificate")
	if code := status.Code(err); code != codes.Canceled {
		t.Errorf("status code %s, want Canceled", code)
	}
}

func TestTTLSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int64{
		24 * time.Hour:          86400,
		1500 * time.Millisecond: 2,
		time.Millisecond:        1,
	} {
		if got := ttlSeconds(d); got != want {
			t.Errorf("ttlSeconds(%s) = %d, want %d", d, got, want)
		}
	}
}

func TestCAClientInvalidIdentity(t *testing.T) {
	f := newFakeCA(t, false)
	c := newTestCAClient(t, CAClientConfig{Address: "http://" + f.addr})
	_, err := c.Issue(issueCtx(t), Identity{TrustDomain: "cluster.local", Namespace: "ns1"})
	wantErr(t, "Issue with an invalid identity", err, "service account")
	if n := len(f.callsSnapshot()); n != 0 {
		t.Errorf("CA saw %d calls, want none for an invalid identity", n)
	}
}
