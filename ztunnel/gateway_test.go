package ztunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
	istiohbone "istio.io/istio/pkg/hbone"
)

// gatewayConfig: helloworld has an endpoint on the gateway's network (dest, 127.0.0.2) and one
// behind the other network's gateway (a split-horizon workload); "faraway" has only the latter.
const gatewayConfig = `
workloads:
- uid: network2//Pod/sample/dest
  name: dest
  namespace: sample
  serviceAccount: helloworld
  network: network2
  node: node2
  workloadIps: ["127.0.0.2"]
  protocol: HBONE
  services:
    "sample/helloworld.sample.svc.cluster.local": {5000: 5000}
- uid: network1/SplitHorizonWorkload/istio-system/eastwestgateway/10.9.9.9/sample/helloworld.sample.svc.cluster.local
  name: split-horizon
  namespace: sample
  network: network1
  protocol: HBONE
  capacity: 3
  networkGateway: {destination: "network1/10.9.9.9", hboneMtlsPort: 15008}
  services:
    "sample/helloworld.sample.svc.cluster.local": {5000: 5000}
    "sample/faraway.sample.svc.cluster.local": {80: 8080}
services:
- name: helloworld
  namespace: sample
  hostname: helloworld.sample.svc.cluster.local
  vips: ["network2/10.96.0.50"]
  ports: {5000: 5000}
  subjectAltNames: ["spiffe://cluster.local/ns/sample/sa/helloworld"]
- name: faraway
  namespace: sample
  hostname: faraway.sample.svc.cluster.local
  ports: {80: 8080}
`

// gatewayHarness is a proxy in east-west gateway mode on loopback, the mesh CA, and a
// destination HBONE server at dest's address (127.0.0.2:15008) that records the client identity
// it sees and echoes.
type gatewayHarness struct {
	p        *Proxy
	addr     netip.AddrPort
	ca       *certs.LocalCA
	mu       sync.Mutex
	peers    []string // identities the destination saw
	authorit []string
}

func startGatewayHarness(t *testing.T) *gatewayHarness {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{CertFile: caCert, KeyFile: caKey})
	if err != nil {
		t.Fatal(err)
	}
	h := &gatewayHarness{ca: ca}

	// The destination: dest's proxy, as the gateway reaches it.
	ln, err := net.Listen("tcp", "127.0.0.2:15008")
	if err != nil {
		t.Skip("cannot listen on 127.0.0.2:15008:", err)
	}
	destCert := h.issue(t, "sample", "helloworld")
	dest := &hbone.Server{
		TLSConfig: certs.ServerTLSConfig(func(context.Context) (*certs.WorkloadCert, error) { return destCert, nil }),
		Handler: hbone.HandlerFunc(func(ctx context.Context, r *hbone.Request) {
			id, _ := certs.PeerIdentity(r.TLS)
			h.mu.Lock()
			h.peers = append(h.peers, id.String())
			h.authorit = append(h.authorit, r.Authority)
			h.mu.Unlock()
			s, err := r.Accept(nil)
			if err != nil {
				return
			}
			defer s.Close()
			io.Copy(s, s)
			s.CloseWrite()
			io.Copy(io.Discard, s)
		}),
	}
	go dest.Serve(ln)
	t.Cleanup(func() { dest.Close() })

	p, err := New(Config{
		LocalXDS: gatewayConfig, CACertFile: caCert, CAKeyFile: caKey, Network: "network2",
		Mode: ModeEastWestGateway, GatewayAddr: "127.0.0.1:0", NodeName: "node2",
		WorkloadInfo: zds.WorkloadInfo{Namespace: "istio-system", Name: "eastwest-0", ServiceAccount: "istio-eastwestgateway"},
		AdminAddr:    "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadinessAddr: "127.0.0.1:0",
		TerminationDeadline: time.Second,
		Logger:              slog.New(slog.NewTextHandler(testLogWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
	})
	waitFor(t, "the gateway to listen", 10*time.Second, func() bool {
		p.gwMu.Lock()
		defer p.gwMu.Unlock()
		return p.gw != nil && p.gw.ln != nil && p.gw.srv != nil
	})
	p.gwMu.Lock()
	h.addr, h.p = addrPort(p.gw.ln.Addr()), p
	p.gwMu.Unlock()
	return h
}

func (h *gatewayHarness) issue(t *testing.T, ns, sa string) *certs.WorkloadCert {
	t.Helper()
	c, err := h.ca.Issue(context.Background(), certs.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// connect opens a double-HBONE tunnel through the gateway as the client identity ns/sa would.
func (h *gatewayHarness) connect(t *testing.T, ns, sa, authority string) (*hbone.Stream, error) {
	t.Helper()
	client := h.issue(t, ns, sa)
	gwID := certs.Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "istio-eastwestgateway"}
	destID := certs.Identity{TrustDomain: "cluster.local", Namespace: "sample", ServiceAccount: "helloworld"}
	pool := hbone.NewPool(hbone.PoolConfig{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSConfig: func(context.Context, hbone.Key) (*tls.Config, error) {
			return certs.ClientTLSConfig(client, []certs.Identity{gwID}), nil
		},
	})
	t.Cleanup(func() { pool.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	outer, err := pool.Connect(ctx, hbone.Key{Dst: h.addr}, authority, nil)
	if err != nil {
		return nil, err
	}
	return hbone.ConnectThrough(ctx, outer, certs.ClientTLSConfig(client, []certs.Identity{destID}), hbone.Config{}, authority,
		http.Header{"X-Forwarded-Network": {"network1"}})
}

// TestGatewayRelaysToLocalEndpoint: a tunnel for a service hostname reaches the service's endpoint
// on the gateway's network, with the inner TLS end to end (the destination sees the client's
// identity, not the gateway's); the bytes come back whole.
func TestGatewayRelaysToLocalEndpoint(t *testing.T) {
	h := startGatewayHarness(t)
	st, err := h.connect(t, "default", "sleep", "helloworld.sample.svc.cluster.local:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	payload := bytes.Repeat([]byte("hello through the gateway "), 20000)
	go func() {
		st.Write(payload)
		st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo through the gateway: %d bytes, %v; want %d", len(got), err, len(payload))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.peers) != 1 || h.peers[0] != "spiffe://cluster.local/ns/default/sa/sleep" {
		t.Errorf("the destination saw client identities %q, want the client's own", h.peers)
	}
}

// Authorities the gateway must refuse: malformed, an unknown service, a service whose only
// endpoints are behind another gateway (it never forwards to a gateway), an address not on its
// network, and one of its own addresses (a loop).
func TestGatewayRefuses(t *testing.T) {
	h := startGatewayHarness(t)
	for _, tc := range []struct {
		authority string
		status    int
	}{
		{"unknown.sample.svc.cluster.local:80", http.StatusBadRequest},
		{"faraway.sample.svc.cluster.local:80", http.StatusServiceUnavailable},
		{"10.9.9.9:80", http.StatusBadRequest},
		{"127.0.0.1:5000", http.StatusBadRequest},
	} {
		_, err := h.connect(t, "default", "sleep", tc.authority)
		var se *hbone.StatusError
		if !errors.As(err, &se) || se.Code != tc.status {
			t.Errorf("CONNECT %s: %v, want status %d", tc.authority, err, tc.status)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.peers) != 0 {
		t.Errorf("a refused tunnel reached the destination (%q)", h.authorit)
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestGatewayInteropIstioDialer: istio's Go double-HBONE dialer (istio.io/istio/pkg/hbone), with
// mesh certificates, through our east-west gateway to the destination.
func TestGatewayInteropIstioDialer(t *testing.T) {
	h := startGatewayHarness(t)
	client := h.issue(t, "default", "sleep")
	gwID := certs.Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "istio-eastwestgateway"}
	destID := certs.Identity{TrustDomain: "cluster.local", Namespace: "sample", ServiceAccount: "helloworld"}
	outer := certs.ClientTLSConfig(client, []certs.Identity{gwID})
	outer.NextProtos = []string{"h2"}
	inner := certs.ClientTLSConfig(client, []certs.Identity{destID})
	inner.NextProtos = []string{"h2"}
	d := istiohbone.NewDoubleDialer(
		istiohbone.Config{ProxyAddress: h.addr.String(), TLS: outer},
		istiohbone.Config{ProxyAddress: "dest:15008", TLS: inner},
		inner)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", "helloworld.sample.svc.cluster.local:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("hello from istio's dialer")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through our gateway: %q, %v", got, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.peers) != 1 || h.peers[0] != "spiffe://cluster.local/ns/default/sa/sleep" {
		t.Errorf("the destination saw client identities %q, want the client's own", h.peers)
	}
}

// The gateway holds no certificate but its own, not even for the workloads of its node: it must
// never be able to read the inner tunnels it relays.
func TestGatewayHoldsOnlyItsOwnCertificate(t *testing.T) {
	h := startGatewayHarness(t)
	if _, err := h.connect(t, "default", "sleep", "helloworld.sample.svc.cluster.local:5000"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // a prefetch would have issued by now
	var ids []string
	for _, c := range h.p.certs.Dump() {
		ids = append(ids, c.Identity)
	}
	if len(ids) != 1 || ids[0] != "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway" {
		t.Errorf("the gateway holds certificates for %q, want only its own", ids)
	}
}
