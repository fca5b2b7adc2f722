package workload

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ztunnel-go/ztunnel/internal/controlplane"
	"github.com/ztunnel-go/ztunnel/workload/xdstest"
)

func xdsTestLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// fakeIstiod is an xdstest.Server serving on 127.0.0.1 until the test ends.
type fakeIstiod struct {
	*xdstest.Server
	addr string
}

func startFakeIstiod(t *testing.T) *fakeIstiod {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIstiod{Server: xdstest.NewServer(xdsTestLogger(t)), addr: ln.Addr().String()}
	go func() { _ = f.Serve(ln) }()
	t.Cleanup(f.Stop)
	return f
}

// restart serves f again on its old address after a Stop.
func (f *fakeIstiod) restart(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", f.addr, err)
	}
	go func() { _ = f.Serve(ln) }()
}

const testNodeID = "ztunnel~10.0.0.9~ztunnel-abc.istio-system~istio-system.svc.cluster.local"

// testXDSConfig returns a plaintext client config for f.
func testXDSConfig(t *testing.T, addr string) XDSConfig {
	return XDSConfig{
		Dial:     controlplane.DialConfig{Address: "http://" + addr},
		NodeID:   testNodeID,
		Metadata: map[string]string{"NAME": "ztunnel-abc", "NAMESPACE": "istio-system", "NODE_NAME": "node1"},
		Store:    NewStore(),
		Logger:   xdsTestLogger(t),
	}
}

// runXDSClient creates a client for cfg and runs it until the test ends.
func runXDSClient(t *testing.T, cfg XDSConfig, hook func(*XDSClient)) *XDSClient {
	t.Helper()
	c, err := NewXDSClient(cfg)
	if err != nil {
		t.Fatalf("NewXDSClient: %v", err)
	}
	if hook != nil {
		hook(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	})
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitSynced waits for c.Synced.
func waitSynced(t *testing.T, c *XDSClient) {
	t.Helper()
	select {
	case <-c.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("client not synced within 10s")
	}
}

// waitStore waits until cond holds for st's snapshot.
func waitStore(t *testing.T, st *Store, what string, cond func(*Snapshot) bool) *Snapshot {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := st.Changed()
		if s := st.Load(); cond(s) {
			return s
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("store: %s: not within 10s", what)
		}
	}
}

// waitRequest waits for a request matching match.
func waitRequest(t *testing.T, f *fakeIstiod, what string, match func(*discovery.DeltaDiscoveryRequest) bool) *discovery.DeltaDiscoveryRequest {
	t.Helper()
	r, err := f.WaitFor(testCtx(t), match)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return r
}

func isNACK(r *discovery.DeltaDiscoveryRequest) bool {
	return r.GetResponseNonce() != "" && r.GetErrorDetail() != nil
}

func ip4(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

// pbWorkload returns a minimal valid HBONE workload proto.
func pbWorkload(uid, ns, ip string, services ...string) *workloadapi.Workload {
	w := &workloadapi.Workload{
		Uid: uid, Name: uid[len(uid)-1:], Namespace: ns,
		Addresses:      [][]byte{ip4(ip)},
		TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
		Node:           "node1",
	}
	if len(services) > 0 {
		w.Services = map[string]*workloadapi.PortList{}
		for _, s := range services {
			w.Services[s] = &workloadapi.PortList{Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}}
		}
	}
	return w
}

// pbService returns a service proto "ns/host" with one VIP and port 80.
func pbService(ns, host, vip string) *workloadapi.Service {
	return &workloadapi.Service{
		Name: host, Namespace: ns, Hostname: host,
		Addresses: []*workloadapi.NetworkAddress{{Address: ip4(vip)}},
		Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}},
	}
}

// pbPolicy returns a namespace-scoped ALLOW policy for port 80.
func pbPolicy(ns, name string) *security.Authorization {
	return &security.Authorization{
		Name: name, Namespace: ns, Scope: security.Scope_NAMESPACE,
		Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{DestinationPorts: []uint32{80}}}}}}},
	}
}

// xdstestBatch shortens the batch type in test bodies.
type xdstestBatch = xdstest.Batch

func xdstestNewServer(t *testing.T) *xdstest.Server { return xdstest.NewServer(xdsTestLogger(t)) }
