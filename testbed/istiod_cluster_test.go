package testbed

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	pb "istio.io/api/security/v1alpha1"
	"istio.io/istio/pkg/workloadapi"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/redirect"
)

// TestClusterControlPlane builds a cluster with the fake istiod but no proxies, and talks to the
// istiod from a node's namespace as a proxy would: a certificate from the CA and the pods over
// delta xDS. SetPolicy and DeletePolicy reach the xDS server.
func TestClusterControlPlane(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	stateRoot := t.TempDir()
	c, err := New(ctx, Config{
		Nodes:     []NodeSpec{{Name: "node1"}, {Name: "node2"}},
		StateRoot: stateRoot, Logger: testLogger(t), ControlPlane: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
		}
	})
	d := c.Istiod()
	if d == nil || c.ConfigPath() != "" {
		t.Fatalf("Istiod() = %v, ConfigPath() = %q; want an istiod and no config file", d, c.ConfigPath())
	}
	p, err := c.AddPod(ctx, PodSpec{Name: "hello", Namespace: "sample", Node: "node2", Policies: []string{"sample/sel"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPod(ctx, PodSpec{Name: "bad", Node: "node2", Policies: []string{"no-slash"}}); err == nil {
		t.Error("AddPod accepted a bad policy reference")
	}
	if err := c.SetPolicy(ctx, PolicySpec{Name: "sel", Namespace: "sample", Scope: "WorkloadSelector",
		Rules: [][]Match{{{Namespaces: []string{"sample"}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.XDS.Versions(typeAuthorization)["sample/sel"]; !ok {
		t.Error("SetPolicy did not reach the xDS server")
	}

	// From node1's namespace, like its proxy.
	ns, err := redirect.OpenNetNS(netnsPath(c.NodeNetNS("node1")))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	conn, err := grpc.NewClient("passthrough:///"+d.Addr.String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return ns.Dial(ctx, "tcp", addr, redirect.SocketOptions{})
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	id := certs.Identity{TrustDomain: TrustDomain, Namespace: "sample", ServiceAccount: "default"}
	csr, _, err := certs.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csr)})
	if err != nil {
		t.Fatalf("CreateCertificate from node1: %v", err)
	}
	if len(resp.CertChain) != 2 {
		t.Errorf("cert chain has %d elements, want 2", len(resp.CertChain))
	}

	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeAddress}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatalf("xDS from node1: %v", err)
	}
	var names []string
	for _, res := range r.Resources {
		names = append(names, res.Name)
		if res.Name != p.rec.UID() {
			continue
		}
		var a workloadapi.Address
		if err := res.Resource.UnmarshalTo(&a); err != nil {
			t.Fatal(err)
		}
		w := a.GetWorkload()
		if len(w.GetAddresses()) != 1 || !bytes.Equal(w.GetAddresses()[0], p.IP().AsSlice()) ||
			!slices.Equal(w.GetAuthorizationPolicies(), []string{"sample/sel"}) {
			t.Errorf("workload of pod hello = %v", w)
		}
	}
	if !slices.Contains(names, p.rec.UID()) {
		t.Errorf("xDS resources %q lack pod hello (%s)", names, p.rec.UID())
	}

	if err := c.DeletePolicy(ctx, "sample", "sel"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeletePolicy(ctx, "sample", "sel"); err == nil {
		t.Error("second DeletePolicy succeeded")
	}
	if _, ok := d.XDS.Versions(typeAuthorization)["sample/sel"]; ok {
		t.Error("DeletePolicy did not reach the xDS server")
	}

	id2 := c.RunID()
	closed = true
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, stateRoot, id2); len(left) > 0 {
		t.Errorf("left after Close: %q", left)
	}
}

// TestControlPlaneProxies runs the control plane mode with proxies: testdata/xdsproxy stands in
// for the proxy (it checks its environment, gets a certificate from the CA and follows the xDS
// config with the project's xDS client), so that every change below returns only once each
// node's client ACKed it.
func TestControlPlaneProxies(t *testing.T) {
	skipUnlessRoot(t)
	bin := filepath.Join(t.TempDir(), "xdsproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/xdsproxy").CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/xdsproxy: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := New(ctx, Config{Nodes: []NodeSpec{{Name: "node1"}, {Name: "node2"}}, Ztunnel: bin,
		ControlPlane: true, StateRoot: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := c.Istiod()
	hello := ServiceSpec{Name: "hw", Namespace: "sample", VIP: netip.MustParseAddr("10.96.0.10"), Ports: map[uint16]uint16{80: 5000}}
	if err := c.AddService(ctx, hello); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node1", "node2"} {
		if _, err := c.AddPod(ctx, PodSpec{Name: "hw-" + n, Namespace: "sample", Node: n,
			Services: map[string]map[uint16]uint16{hello.ConfigKey(): {80: 5000}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetPolicy(ctx, PolicySpec{Name: "p", Namespace: "sample", Rules: [][]Match{{{Namespaces: []string{"sample"}}}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeletePod(ctx, "hw-node2"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		if behind, err := d.applied(n.ip); behind != "" || err != nil {
			t.Errorf("node %s: %q, %v after the changes returned", n.spec.Name, behind, err)
		}
	}
	var tokens []string
	for _, r := range d.CA.Requests() {
		if r.Code != codes.OK || r.Identity != "spiffe://cluster.local/ns/istio-system/sa/ztunnel" {
			t.Errorf("CA request %+v", r)
		}
		tokens = append(tokens, r.Token)
	}
	slices.Sort(tokens)
	if want := []string{c.nodeToken(c.nodes[0]), c.nodeToken(c.nodes[1])}; !slices.Equal(tokens, want) {
		t.Errorf("CA saw tokens %q, want one per node %q", tokens, want)
	}
	var nodeIDs []string
	for _, r := range d.XDS.Requests() {
		if id := r.GetNode().GetId(); id != "" && !slices.Contains(nodeIDs, id) {
			nodeIDs = append(nodeIDs, id)
		}
	}
	slices.Sort(nodeIDs)
	want := []string{
		"ztunnel~172.30.0.1~ztunnel-node1.istio-system~istio-system.svc.cluster.local",
		"ztunnel~172.30.0.2~ztunnel-node2.istio-system~istio-system.svc.cluster.local",
	}
	if !slices.Equal(nodeIDs, want) {
		t.Errorf("xDS node ids %q, want %q", nodeIDs, want)
	}
}
