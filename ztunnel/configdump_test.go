package ztunnel

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

var update = flag.Bool("update", false, "rewrite testdata/config_dump.golden.json")

// dumpIssuer issues from a local CA, except for service account "broken" (always fails) and
// "slow" (blocks until release is closed).
type dumpIssuer struct {
	ca      *certs.LocalCA
	release chan struct{}
}

func (i *dumpIssuer) Issue(ctx context.Context, id certs.Identity) (*certs.WorkloadCert, error) {
	switch id.ServiceAccount {
	case "broken":
		return nil, errors.New("CA unreachable")
	case "slow":
		select {
		case <-i.release:
		case <-ctx.Done():
		}
		return nil, errors.New("released")
	}
	return i.ca.Issue(ctx, id)
}

// dumpTestProxy is a proxy with the test config, certificates in every state and two
// enrolled pods with live connections.
func dumpTestProxy(t *testing.T) *Proxy {
	t.Helper()
	p := newAdminProxy(t, Config{NodeName: "node1", Network: "net0", ClusterID: "cluster1",
		Meta: map[string]string{"ISTIO_VERSION": "1.27.0"}, XDS: ControlPlane{Headers: map[string]string{"authorization": "secret"}}})
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	iss := &dumpIssuer{ca: ca, release: make(chan struct{})}
	t.Cleanup(func() { close(iss.release) })
	p.certs = certs.NewManager(certs.ManagerConfig{Issuer: iss, Logger: p.log})
	ctx := context.Background()
	for _, sa := range []string{"client", "server"} {
		if _, err := p.certs.Get(ctx, certs.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.certs.Get(ctx, certs.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "broken"}); err == nil {
		t.Fatal("the broken identity got a certificate")
	}
	p.certs.Prefetch(certs.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "slow"})

	addTestPod(p, "pod-uid-client", zds.WorkloadInfo{Name: "client", Namespace: "default", ServiceAccount: "client"},
		ConnView{Direction: "outbound", Src: "10.0.0.1:40000", OriginalDst: "10.96.0.10:80", ActualDst: "10.0.0.2:15008", Protocol: "HBONE"},
		ConnView{Direction: "outbound", Src: "10.0.0.1:40001", OriginalDst: "10.0.0.3:80", Protocol: "TCP"},
		ConnView{Direction: "inbound", Src: "10.0.0.2:50000", OriginalDst: "client.default.svc.cluster.local:80", ActualDst: "10.0.0.1:8080", Protocol: "HBONE"},
		ConnView{Direction: "inbound", Src: "10.0.0.3:50001", ActualDst: "10.0.0.1:9090", Protocol: "TCP"})
	addTestPod(p, "pod-uid-waypoint", zds.WorkloadInfo{Name: "waypoint", Namespace: "default", ServiceAccount: "waypoint"})
	return p
}

func renderDump(t *testing.T, p *Proxy) []byte {
	t.Helper()
	rec := do(t, p.admin.handler(), "GET", "/config_dump")
	if rec.Code != 200 {
		t.Fatalf("GET /config_dump: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	return rec.Body.Bytes()
}

// TestConfigDumpGolden compares the whole dump, with the volatile values (certificates,
// build) replaced by placeholders, to testdata/config_dump.golden.json (-update rewrites it).
func TestConfigDumpGolden(t *testing.T) {
	raw := renderDump(t, dumpTestProxy(t))
	if !bytes.HasPrefix(raw, []byte("{\n  \"")) {
		t.Errorf("dump is not pretty-printed with two-space indents: %.40q", raw)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("dump is not JSON: %v", err)
	}
	for _, c := range doc["certificates"].([]any) {
		for _, list := range []string{"certChain", "rootCerts"} {
			for _, e := range c.(map[string]any)[list].([]any) {
				for _, k := range []string{"pem", "serialNumber", "validFrom", "expirationTime"} {
					e.(map[string]any)[k] = "<" + k + ">"
				}
			}
		}
	}
	for k := range doc["version"].(map[string]any) {
		if k != "istioVersion" && k != "rustVersion" {
			doc["version"].(map[string]any)[k] = "<" + k + ">"
		}
	}
	got, err := marshalDump(doc)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const golden = "testdata/config_dump.golden.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("config dump differs from %s (-want +got; -update rewrites it):\n%s", golden, diff)
	}
}

func TestConfigDumpStaticConfigInline(t *testing.T) {
	yaml, err := os.ReadFile("testdata/config_dump.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fromFile := dumpStatic(t, newAdminProxy(t, Config{}))
	inline := dumpStatic(t, newAdminProxy(t, Config{LocalXDS: string(yaml)}))
	if diff := cmp.Diff(fromFile, inline); diff != "" {
		t.Errorf("staticConfig from LOCAL_XDS differs from LOCAL_XDS_PATH's (-file +inline):\n%s", diff)
	}
	if len(inline["workloads"].([]any)) != 4 || len(inline["services"].([]any)) != 3 || len(inline["policies"].([]any)) != 3 {
		t.Errorf("staticConfig incomplete: %v", inline)
	}
	// The local config's port maps are echoed per workload.
	server := inline["workloads"].([]any)[1].(map[string]any)
	wantSvcs := map[string]any{"default/server.default.svc.cluster.local": map[string]any{"80": 8080.0, "443": 8443.0}}
	if diff := cmp.Diff(wantSvcs, server["services"]); diff != "" {
		t.Errorf("staticConfig server services (-want +got):\n%s", diff)
	}
}

func dumpStatic(t *testing.T, p *Proxy) map[string]any {
	t.Helper()
	var doc struct{ StaticConfig map[string]any }
	if err := json.Unmarshal(renderDump(t, p), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.StaticConfig
}

// TestConfigDumpIstioctl decodes the dump into the structures istioctl ztunnel-config reads
// (istioctl_test.go) and checks what its commands print from them.
func TestConfigDumpIstioctl(t *testing.T) {
	p := dumpTestProxy(t)
	raw := renderDump(t, p)
	var d ictlDump
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("istioctl would fail to read the dump: %v", err)
	}

	t.Run("workloads", func(t *testing.T) { checkIstioctlWorkloads(t, &d) })
	t.Run("services", func(t *testing.T) { checkIstioctlServices(t, &d) })
	t.Run("policies", func(t *testing.T) { checkIstioctlPolicies(t, &d) })
	t.Run("connections", func(t *testing.T) { checkIstioctlConnections(t, &d) })

	t.Run("certificates", func(t *testing.T) {
		byID := map[string]*ictlCerts{}
		var ids []string
		for _, c := range d.Certificates {
			byID[c.Identity] = c
			ids = append(ids, c.Identity)
		}
		wantIDs := []string{
			"spiffe://cluster.local/ns/default/sa/broken", "spiffe://cluster.local/ns/default/sa/client",
			"spiffe://cluster.local/ns/default/sa/server", "spiffe://cluster.local/ns/default/sa/slow",
		}
		if diff := cmp.Diff(wantIDs, ids); diff != "" {
			t.Fatalf("identities, sorted (-want +got):\n%s", diff)
		}
		if st := byID[wantIDs[0]].State; !strings.Contains(st, "Unavailable") || !strings.Contains(st, "CA unreachable") {
			t.Errorf("broken identity state %q, want Unavailable with the error", st)
		}
		if c := byID[wantIDs[3]]; c.State != "Initializing" || len(c.CertChain) != 0 || len(c.RootCert) != 0 {
			t.Errorf("slow identity: %+v, want Initializing without certificates", c)
		}
		for _, id := range wantIDs[1:3] {
			c := byID[id]
			if c.State != "Available" || len(c.CertChain) != 1 || len(c.RootCert) != 1 {
				t.Fatalf("%s: state %q, %d chain, %d roots; want Available, 1, 1", id, c.State, len(c.CertChain), len(c.RootCert))
			}
			leaf := checkIstioctlCert(t, c.CertChain[0])
			root := checkIstioctlCert(t, c.RootCert[0])
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
				t.Errorf("leaf of %s has URIs %v", id, leaf.URIs)
			}
			if !root.IsCA || leaf.CheckSignatureFrom(root) != nil {
				t.Errorf("root of %s did not sign its leaf", id)
			}
		}
	})
}

// checkIstioctlCert checks one certificate as istioctl reads it (decimal serial, RFC 3339
// times, valid now) and that the PEM decodes to the same certificate.
func checkIstioctlCert(t *testing.T, c *ictlCert) *x509.Certificate {
	t.Helper()
	pemBytes, err := base64.StdEncoding.DecodeString(c.Pem)
	if err != nil {
		t.Fatalf("pem is not base64: %v", err)
	}
	block, rest := pem.Decode(pemBytes)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("pem does not hold one certificate: %q", pemBytes)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	serial, ok := new(big.Int).SetString(c.SerialNumber, 10)
	if !ok || serial.Cmp(cert.SerialNumber) != 0 {
		t.Errorf("serialNumber %q is not the certificate's serial %s in decimal", c.SerialNumber, cert.SerialNumber)
	}
	from, err1 := time.Parse(time.RFC3339, c.ValidFrom)
	to, err2 := time.Parse(time.RFC3339, c.ExpirationTime)
	if err1 != nil || err2 != nil {
		t.Fatalf("times are not RFC 3339: %v, %v", err1, err2)
	}
	if !from.Equal(cert.NotBefore.Truncate(time.Second)) || !to.Equal(cert.NotAfter.Truncate(time.Second)) {
		t.Errorf("validity %s..%s, certificate says %s..%s", from, to, cert.NotBefore, cert.NotAfter)
	}
	if now := time.Now(); !now.After(from) || !now.Before(to) {
		t.Errorf("istioctl would show %s..%s as not valid now", c.ValidFrom, c.ExpirationTime)
	}
	return cert
}
