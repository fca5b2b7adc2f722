package testbed

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/certs/catest"
	"github.com/ztunnel-go/ztunnel/internal/controlplane"
	"github.com/ztunnel-go/ztunnel/workload"
)

// startTestIstiod serves a fake istiod with a fresh run CA on loopback until the test ends.
func startTestIstiod(t *testing.T) (*Istiod, string) {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey, err := writeCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newIstiod(caCert, caKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.Addr = ln.Addr().(*net.TCPAddr).AddrPort()
	d.serveListener(ln)
	t.Cleanup(d.stop)
	return d, caCert
}

// waitApplied polls d.applied for the loopback client until it has applied the last push.
func waitApplied(t *testing.T, d *Istiod) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		behind, err := d.applied(netip.MustParseAddr("127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		if behind == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("xDS client did not apply the push: %s", behind)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIstiodServesTopology pushes a topology through the fake istiod to the project's xDS client
// and checks that the client ends up with the same workloads, services and policies as the proxy
// parses from the local config rendered from that topology: both modes configure proxies alike.
func TestIstiodServesTopology(t *testing.T) {
	d, _ := startTestIstiod(t)
	pods, svcs, pols, nets := testTopology(t)
	d.push(buildResources(pods, svcs, pols, nets))

	store := workload.NewStore()
	client, err := workload.NewXDSClient(workload.XDSConfig{
		Dial:   controlplane.DialConfig{Address: "http://" + d.Addr.String()},
		NodeID: "ztunnel~127.0.0.1~ztunnel-test.istio-system~istio-system.svc.cluster.local",
		Store:  store, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitApplied(t, d)

	yaml, err := renderConfig(pods, svcs, pols, nets)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := workload.ParseLocalConfig("rendered", yaml)
	if err != nil {
		t.Fatal(err)
	}
	want, err := lc.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	got := store.Load()
	opts := cmp.Options{
		cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}),
		cmpopts.EquateEmpty(),
		// The proto's workload_type cannot be unset: its zero value is DEPLOYMENT ("deployment"),
		// while the local config leaves it empty (as the reference does in both cases).
		cmpopts.IgnoreFields(workload.Workload{}, "WorkloadType"),
		cmpopts.SortSlices(func(a, b *workload.Policy) bool { return a.Key() < b.Key() }),
	}
	if diff := cmp.Diff(want.Workloads(), got.Workloads(), opts); diff != "" {
		t.Errorf("workloads: local config (-) vs xDS (+):\n%s", diff)
	}
	if diff := cmp.Diff(want.Services(), got.Services(), opts); diff != "" {
		t.Errorf("services: local config (-) vs xDS (+):\n%s", diff)
	}
	if diff := cmp.Diff(want.Policies(), got.Policies(), opts); diff != "" {
		t.Errorf("policies: local config (-) vs xDS (+):\n%s", diff)
	}
	if len(got.Workloads()) != 3 || len(got.Services()) != 3 || len(got.Policies()) != 4 {
		t.Errorf("xDS client has %d workloads, %d services, %d policies; want 3, 3, 4",
			len(got.Workloads()), len(got.Services()), len(got.Policies()))
	}

	// A change is pushed as a diff and applied; an unchanged push sends nothing.
	time.Sleep(50 * time.Millisecond)
	before := len(d.XDS.Requests())
	d.push(buildResources(pods[1:], svcs, pols[:1], nets))
	waitApplied(t, d)
	got = store.Load()
	if got.WorkloadByUID(pods[0].UID()) != nil || len(got.Policies()) != 1 {
		t.Errorf("after the change: workload %s still there or %d policies (want 1)", pods[0].UID(), len(got.Policies()))
	}
	time.Sleep(50 * time.Millisecond) // the server records the ACKs just after the tracker
	mid := len(d.XDS.Requests())
	if mid-before < 2 {
		t.Errorf("%d requests (ACKs) after a push of both types, want 2 or more", mid-before)
	}
	d.push(buildResources(pods[1:], svcs, pols[:1], nets))
	waitApplied(t, d)
	time.Sleep(50 * time.Millisecond)
	if n := len(d.XDS.Requests()) - mid; n != 0 {
		t.Errorf("an unchanged push caused %d requests", n)
	}
}

func TestIstiodCA(t *testing.T) {
	d, caCert := startTestIstiod(t)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("node-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := certs.NewCAClient(certs.CAClientConfig{
		Address: "http://" + d.Addr.String(), TokenPath: token, ClusterID: "Kubernetes", Impersonate: true,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	id := certs.Identity{TrustDomain: TrustDomain, Namespace: "sample", ServiceAccount: "sleep"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wc, err := client.Issue(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(caCert)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := certs.ParseCertificatesPEM(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(wc.Roots) != 1 || !wc.Roots[0].Equal(roots[0]) {
		t.Error("the certificate's root is not the run's CA")
	}
	want := []catest.Request{{Identity: id.String(), ImpersonatedIdentity: id.String(), Token: "node-token",
		ClusterID: "Kubernetes", TTL: 24 * time.Hour, Code: codes.OK}}
	if diff := cmp.Diff(want, d.CA.Requests()); diff != "" {
		t.Errorf("CA requests (-want +got):\n%s", diff)
	}
}

func TestIstiodAddr(t *testing.T) {
	for _, tt := range []struct{ subnet, want string }{
		{"172.30.0.0/16", "172.30.255.254:15012"},
		{"10.1.2.0/24", "10.1.2.254:15012"},
		{"10.1.2.77/20", "10.1.15.254:15012"},
	} {
		if got := istiodAddr(netip.MustParsePrefix(tt.subnet)).String(); got != tt.want {
			t.Errorf("istiodAddr(%s) = %s, want %s", tt.subnet, got, tt.want)
		}
	}
}
