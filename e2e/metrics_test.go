package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestMetrics makes one allowed connection (through a service VIP), one a policy denies and
// one to a port where nothing listens, then scrapes both proxies' :15020 from inside their node
// namespaces and checks the istio_tcp_* counters and labels on each side (ztunnel-behavior.md
// §7.5): the client's proxy reports "source", the server's "destination"; a denial is DENY at
// the destination and CONNECT at the source; bytes follow Istio's convention (received =
// client → server). Both proxies are ready (:15021) once their pods are enrolled.
func TestMetrics(t *testing.T) {
	c := newCluster(t, testbed.Config{
		Nodes: []testbed.NodeSpec{
			{Name: "node1", Region: "r1", Zone: "z1"},
			{Name: "node2", Region: "r1", Zone: "z2"},
		},
		ControlPlane: true,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	svc := testbed.ServiceSpec{Name: "echo", Namespace: "default", VIP: netip.MustParseAddr("10.96.0.50"), Ports: map[uint16]uint16{80: 8080}}
	if err := c.AddService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", ServiceAccount: "server", Enrolled: true,
		Labels: map[string]string{"app": "echo", "version": "v1"}, Services: map[string]map[uint16]uint16{svc.ConfigKey(): {80: 8080}}})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true,
		Labels: map[string]string{"app": "sleep", "version": "v2"}})
	reply := func(c net.Conn) { // reads everything, answers "got <n>": the two directions differ
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d", len(b))
	}
	serve(t, server, 8080, reply)
	serve(t, server, 8081, reply) // reachable, but denied by policy
	// Nothing listens on 8082.
	if err := c.SetPolicy(ctx, testbed.PolicySpec{Name: "deny-8081", Namespace: "default", Action: "Deny",
		Rules: [][]testbed.Match{{{DestinationPorts: []uint16{8081}}}}}); err != nil {
		t.Fatal(err)
	}

	scrapers := map[string]*nodeScraper{}
	for _, node := range []string{"node1", "node2"} {
		scrapers[node] = newNodeScraper(t, c, node)
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := scrapers[node].get(t, "127.0.0.1:15021", "/healthz/ready")
			if code == 200 && body == "ready\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s readiness with its pod enrolled: %d %q, want 200 \"ready\\n\"", node, code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	payload := bytes.Repeat([]byte("x"), 100)
	if got, err := exchange(client, netip.AddrPortFrom(svc.VIP, 80).String(), payload); err != nil || got != "got 100" {
		t.Fatalf("allowed connection through the VIP: %q, %v", got, err)
	}
	if got, err := exchange(client, netip.AddrPortFrom(server.IP(), 8081).String(), payload); err == nil && got != "" {
		t.Fatalf("connection to the denied port got an answer: %q", got)
	}
	if got, err := exchange(client, netip.AddrPortFrom(server.IP(), 8082).String(), payload); err == nil && got != "" {
		t.Fatalf("connection to a closed port got an answer: %q", got)
	}

	const (
		opened, closed, failed = "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total", "istio_tcp_connections_failed_total"
		received, sent         = "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"
		svcHost                = "echo.default.svc.cluster.local"
		clientID, serverID     = "spiffe://cluster.local/ns/default/sa/client", "spiffe://cluster.local/ns/default/sa/server"
	)
	// Labels every series of this test has on both sides.
	common := labels{
		"request_protocol": "tcp", "connection_security_policy": "mutual_tls",
		"source_workload_namespace": "default", "source_principal": clientID,
		"source_canonical_service": "sleep", "source_canonical_revision": "v2", "source_app": "sleep", "source_version": "v2",
		"source_cluster": "Kubernetes", "source_region": "r1", "source_zone": "z1",
		"source_workload":                "unknown", // the testbed's workloads have no workload name (deployment)
		"destination_workload_namespace": "default", "destination_principal": serverID,
		"destination_canonical_service": "echo", "destination_canonical_revision": "v1", "destination_app": "echo",
		"destination_version": "v1", "destination_cluster": "Kubernetes", "destination_region": "r1", "destination_zone": "z2",
	}
	viaSvc := labels{"destination_service": svcHost, "destination_service_name": "echo", "destination_service_namespace": "default"}
	noSvc := labels{"destination_service": "unknown", "destination_service_name": "unknown", "destination_service_namespace": "unknown"}

	type check struct {
		metric string
		match  labels
		want   float64
	}
	sides := []struct {
		node, reporter string
		checks         []check
	}{
		{"node1", "source", []check{
			{opened, viaSvc.with("response_flags", "-"), 1},
			{opened, noSvc.with("response_flags", "-"), 2},
			{closed, viaSvc.with("response_flags", "-"), 1},
			{closed, noSvc.with("response_flags", "CONNECT"), 2}, // the denial reaches the client as a refused CONNECT
			{closed, noSvc.with("response_flags", "-"), 0},
			{failed, noSvc.with("response_flags", "CONNECT"), 2},
			{failed, viaSvc, 0},
			{received, viaSvc.with("response_flags", "-"), 100},
			{sent, viaSvc.with("response_flags", "-"), 7},
		}},
		{"node2", "destination", []check{
			{opened, viaSvc.with("response_flags", "-"), 1},
			{opened, noSvc.with("response_flags", "-"), 2},
			{closed, viaSvc.with("response_flags", "-"), 1},
			{closed, noSvc.with("response_flags", "DENY"), 1},
			{closed, noSvc.with("response_flags", "CONNECT"), 1},
			{failed, noSvc.with("response_flags", "DENY"), 1},
			{failed, noSvc.with("response_flags", "CONNECT"), 1},
			{failed, viaSvc, 0},
			{received, viaSvc.with("response_flags", "-"), 100},
			{sent, viaSvc.with("response_flags", "-"), 7},
		}},
	}
	for _, side := range sides {
		s := scrapers[side.node]
		// The counters move when the proxies finish the connections: wait for the closes.
		var fams map[string]*dto.MetricFamily
		deadline := time.Now().Add(10 * time.Second)
		for {
			fams = s.scrape(t)
			if sum(fams, closed, labels{"reporter": side.reporter}) >= 3 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, ch := range side.checks {
			match := common.merge(ch.match).with("reporter", side.reporter)
			if got := sum(fams, ch.metric, match); got != ch.want {
				t.Errorf("%s: %s%v = %v, want %v\nseries:\n%s", side.node, ch.metric, ch.match, got, ch.want, dump(fams, ch.metric))
			}
		}
		other := map[string]string{"source": "destination", "destination": "source"}[side.reporter]
		if n := sum(fams, opened, labels{"reporter": other}); n != 0 {
			t.Errorf("%s reported %v connections as %q", side.node, n, other)
		}
		// Every proxied connection has ended; what stays open on the destination is the pooled
		// HBONE tunnel (one mTLS connection from the client pod to the server pod's 15008), which
		// the reference counts as an open socket too.
		wantSockets := 0.0
		if side.reporter == "destination" {
			wantSockets = 1
		}
		if n := sum(fams, "istio_tcp_sockets_open", labels{"reporter": side.reporter}); n != wantSockets {
			t.Errorf("%s: istio_tcp_sockets_open = %v after every connection ended, want %v", side.node, n, wantSockets)
		}
		for _, name := range []string{"workload_manager_active_proxy_count", "workload_manager_proxies_started_total"} {
			if got := sum(fams, name, nil); got != 1 {
				t.Errorf("%s: %s = %v, want 1 (one enrolled pod)", side.node, name, got)
			}
		}
		if got := sum(fams, "istio_xds_message_total", labels{"url": "type.googleapis.com/istio.workload.Address"}); got < 1 {
			t.Errorf("%s: no xDS Address message counted", side.node)
		}
		if got := sum(fams, "istio_build", labels{"component": "ztunnel"}); got != 1 {
			t.Errorf("%s: istio_build{component=ztunnel} = %v, want 1", side.node, got)
		}
		if fams["process_open_fds"] == nil {
			t.Errorf("%s: no process metrics", side.node)
		}
	}
}

// exchange sends payload from p to addr, half-closes, and returns everything read back. A
// refused or reset connection is an error.
func exchange(p *testbed.Pod, addr string, payload []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := p.Dial(ctx, addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(payload); err != nil {
		return "", err
	}
	conn.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(conn)
	return string(b), err
}

// nodeScraper does HTTP GETs from inside a node's network namespace, where its proxy runs.
type nodeScraper struct {
	node   string
	client *http.Client
}

func newNodeScraper(t *testing.T, c *testbed.Cluster, node string) *nodeScraper {
	t.Helper()
	ns, err := redirect.OpenNetNS("/run/netns/" + c.NodeNetNS(node))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(ctx, "tcp", addr, redirect.SocketOptions{})
		},
		DisableKeepAlives: true,
	}
	return &nodeScraper{node: node, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (s *nodeScraper) get(t *testing.T, hostport, path string) (int, string) {
	t.Helper()
	resp, err := s.client.Get("http://" + hostport + path)
	if err != nil {
		t.Fatalf("%s: GET %s%s: %v", s.node, hostport, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: GET %s%s: %v", s.node, hostport, path, err)
	}
	return resp.StatusCode, string(b)
}

// scrape reads the node proxy's /stats/prometheus with the Prometheus text parser.
func (s *nodeScraper) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := s.get(t, "127.0.0.1:15020", "/stats/prometheus")
	if code != 200 {
		t.Fatalf("%s: scrape: %d %s", s.node, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: parse scrape: %v", s.node, err)
	}
	return fams
}

// labels is a set of label matchers (exact values).
type labels map[string]string

func (l labels) merge(o labels) labels {
	out := labels{}
	for k, v := range l {
		out[k] = v
	}
	for k, v := range o {
		out[k] = v
	}
	return out
}

func (l labels) with(k, v string) labels { return l.merge(labels{k: v}) }

// sum adds the values of the series of name whose labels include match.
func sum(fams map[string]*dto.MetricFamily, name string, match labels) float64 {
	var total float64
	for _, m := range fams[name].GetMetric() {
		if !hasLabels(m, match) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Untyped != nil:
			total += m.GetUntyped().GetValue()
		}
	}
	return total
}

func hasLabels(m *dto.Metric, match labels) bool {
	have := map[string]string{}
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for k, v := range match {
		if have[k] != v {
			return false
		}
	}
	return true
}

// dump renders the series of name for a failure message.
func dump(fams map[string]*dto.MetricFamily, name string) string {
	var b strings.Builder
	for _, m := range fams[name].GetMetric() {
		var kv []string
		for _, lp := range m.GetLabel() {
			kv = append(kv, lp.GetName()+"="+lp.GetValue())
		}
		fmt.Fprintf(&b, "  {%s} %v\n", strings.Join(kv, ","), m.GetCounter().GetValue())
	}
	return b.String()
}
