package ztunnel

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ztunnel-go/ztunnel/relay"
	"github.com/ztunnel-go/ztunnel/workload"
)

func fixture(t *testing.T, p *Proxy) (client, server *workload.Workload, svc *workload.Service) {
	t.Helper()
	snap := p.store.Load()
	client = snap.WorkloadByUID("c1//v1/Pod/ns1/client-abc")
	server = snap.WorkloadByUID("c1//v1/Pod/ns2/server-xyz")
	svc = snap.ServiceByHost("ns2", "server.ns2.svc.cluster.local")
	if client == nil || server == nil || svc == nil {
		t.Fatalf("fixture incomplete: client %v server %v service %v", client, server, svc)
	}
	return client, server, svc
}

func TestTrafficLabelsOutboundHBONE(t *testing.T) {
	p := newTestProxy(t, Config{})
	client, server, svc := fixture(t, p)
	ci := &connInfo{Direction: "outbound", Protocol: "HBONE", SrcWorkload: client,
		SrcIdentity: "spiffe://cluster.local/ns/ns1/sa/client", DstWorkload: server, DstSvc: svc}
	want := trafficLabels{
		Reporter:       "source",
		SourceWorkload: "client", SourceCanonicalService: "client-app", SourceCanonicalRevision: "v1",
		SourceNamespace: "ns1", SourcePrincipal: "spiffe://cluster.local/ns/ns1/sa/client",
		SourceApp: "client-app", SourceVersion: "v1", SourceCluster: "c1",
		DestinationService:          "server.ns2.svc.cluster.local",
		DestinationServiceNamespace: "ns2", DestinationServiceName: "server",
		DestinationWorkload: "server", DestinationCanonicalService: "server-app",
		DestinationCanonicalRevision: "v2", DestinationNamespace: "ns2",
		DestinationPrincipal: "spiffe://cluster.local/ns/ns2/sa/server",
		DestinationApp:       "server-app", DestinationVersion: "v2",
		DestinationCluster: "Kubernetes", // no clusterId: the default
		RequestProtocol:    "tcp", ResponseFlags: "-", SecurityPolicy: "mutual_tls",
		SourceRegion: "r1", SourceZone: "z1", DestinationRegion: "r1", DestinationZone: "z2",
	}
	if diff := cmp.Diff(want, p.trafficLabels(ci)); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
}

// An inbound plaintext connection from an address the config does not know: every source
// label is "unknown", and there is no principal because there is no mTLS.
func TestTrafficLabelsUnknownPeer(t *testing.T) {
	p := newTestProxy(t, Config{})
	_, server, _ := fixture(t, p)
	ci := &connInfo{Direction: "inbound", Protocol: "TCP", Src: netip.MustParseAddrPort("10.9.9.9:5555"),
		SrcIdentity: "ignored without mTLS", DstWorkload: server}
	l := p.trafficLabels(ci)
	got := map[string]string{}
	for i, v := range l.values() {
		got[trafficLabelNames[i]] = v
	}
	want := map[string]string{
		"reporter": "destination", "request_protocol": "tcp", "response_flags": "-",
		"connection_security_policy": "unknown",
		"destination_workload":       "server", "destination_canonical_service": "server-app",
		"destination_canonical_revision": "v2", "destination_workload_namespace": "ns2",
		"destination_principal": "spiffe://cluster.local/ns/ns2/sa/server",
		"destination_app":       "server-app", "destination_version": "v2", "destination_cluster": "Kubernetes",
		"destination_region": "r1", "destination_zone": "z2",
	}
	for _, name := range trafficLabelNames {
		if _, ok := want[name]; !ok {
			want[name] = "unknown"
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("label values (-want +got):\n%s", diff)
	}
	if len(trafficLabelNames) != len(l.values()) {
		t.Fatalf("%d label names but %d values", len(trafficLabelNames), len(l.values()))
	}
}

func TestTrafficLabelValuesAreUTF8(t *testing.T) {
	l := trafficLabels{SourceWorkload: "bad\xffname"}
	if v := l.values()[1]; v != "bad\uFFFDname" {
		t.Errorf("invalid UTF-8 label value exported as %q", v)
	}
}

func TestResponseFlag(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "-"},
		{&policyError{reason: "explicitly denied by: ns/p"}, "DENY"},
		{fmt.Errorf("splice: %w", &policyError{reason: "x", late: true}), "DENY"},
		{fmt.Errorf("HBONE connect: %w", errors.New("connection refused")), "CONNECT"},
		{fmt.Errorf("tls handshake with x: %w", tls.AlertError(42)), "TLS_FAILURE"},
		{fmt.Errorf("tls handshake with x: %w", &tls.CertificateVerificationError{Err: errors.New("bad")}), "TLS_FAILURE"},
		{errPodClosed, "CONNECT"},
	} {
		if got := responseFlag(tc.err); got != tc.want {
			t.Errorf("responseFlag(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// The life of connections in the counters: opened is counted with "-", closed and failed with
// the final flag, bytes under the opened labels; connections never opened are not counted.
func TestConnectionCounters(t *testing.T) {
	p := newTestProxy(t, Config{})
	client, server, svc := fixture(t, p)
	pod := testPod(p)

	// Outbound HBONE that worked: 10 bytes up, 20 down.
	ok := &connInfo{Direction: "outbound", Protocol: "HBONE", Start: time.Now(), SrcWorkload: client,
		SrcIdentity: "spiffe://cluster.local/ns/ns1/sa/client", DstWorkload: server, DstSvc: svc}
	pod.opened(ok)
	pod.opened(ok) // counted once
	pod.finish(ok, relay.Result{Received: 10, Sent: 20}, nil)

	// The same again, but the upstream refused: CONNECT.
	refused := &connInfo{Direction: "outbound", Protocol: "HBONE", Start: time.Now(), SrcWorkload: client,
		SrcIdentity: "spiffe://cluster.local/ns/ns1/sa/client", DstWorkload: server, DstSvc: svc}
	pod.opened(refused)
	pod.finish(refused, relay.Result{}, errors.New("HBONE connect: hbone: CONNECT rejected with status 503"))

	// Inbound HBONE denied by a policy: DENY.
	denied := &connInfo{Direction: "inbound", Protocol: "HBONE", Start: time.Now(),
		SrcIdentity: "spiffe://cluster.local/ns/ns1/sa/client", SrcWorkload: client, DstWorkload: server}
	pod.opened(denied)
	pod.finish(denied, relay.Result{}, &policyError{reason: "explicitly denied by: ns2/deny"})

	// The same peer again, closed later by a policy change: the splice result carries the cause.
	late := &connInfo{Direction: "inbound", Protocol: "HBONE", Start: time.Now(),
		SrcIdentity: "spiffe://cluster.local/ns/ns1/sa/client", SrcWorkload: client, DstWorkload: server}
	pod.opened(late)
	pod.finish(late, relay.Result{Received: 5, Err: &policyError{reason: "r", late: true}}, nil)

	// Refused before it counted as opened (unknown source): only logged.
	pod.finish(&connInfo{Direction: "outbound", Start: time.Now()}, relay.Result{}, errors.New("unknown source workload"))

	got := gather(t, p.metrics.reg)
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"istio_tcp_connections_opened_total", []string{"destination/-=2", "source/-=2"}},
		{"istio_tcp_connections_closed_total", []string{"destination/DENY=2", "source/-=1", "source/CONNECT=1"}},
		{"istio_tcp_connections_failed_total", []string{"destination/DENY=2", "source/CONNECT=1"}},
		{"istio_tcp_received_bytes_total", []string{"destination/-=5", "source/-=10"}},
		{"istio_tcp_sent_bytes_total", []string{"source/-=20"}},
	} {
		if diff := cmp.Diff(tc.want, seriesByFlag(got, tc.name)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	// The successful connection's series carries the full label set.
	for _, s := range got["istio_tcp_sent_bytes_total"] {
		if s.Labels["destination_service"] != "server.ns2.svc.cluster.local" ||
			s.Labels["source_principal"] != "spiffe://cluster.local/ns/ns1/sa/client" ||
			s.Labels["connection_security_policy"] != "mutual_tls" {
			t.Errorf("sent bytes series labels: %v", s.Labels)
		}
	}
}

func TestSocketsGauge(t *testing.T) {
	p := newTestProxy(t, Config{})
	pod := testPod(p)
	done1 := pod.socketOpened(reporterSource)
	done2 := pod.socketOpened(reporterSource)
	pod.socketOpened(reporterDestination)
	done1()
	got := gather(t, p.metrics.reg)
	want := map[string]float64{"source": 1, "destination": 1}
	for _, s := range got["istio_tcp_sockets_open"] {
		if want[s.Labels["reporter"]] != s.Value {
			t.Errorf("istio_tcp_sockets_open%v = %v, want %v", s.Labels, s.Value, want[s.Labels["reporter"]])
		}
	}
	done2()
}

func TestGuessInboundService(t *testing.T) {
	p := newTestProxy(t, Config{})
	_, server, svc := fixture(t, p)
	snap := p.store.Load()
	named := snap.ServiceByHost("ns2", "named.ns2.svc.cluster.local")
	for _, tc := range []struct {
		name string
		host string
		port uint16
		want *workload.Service
	}{
		{"named by the client", "named.ns2.svc.cluster.local", 1234, named},
		{"by target port", "", 8080, svc},
		{"by the endpoint's named port", "", 9090, named},
		{"unknown host, no port match", "other.svc", 7777, nil},
	} {
		if got := guessInboundService(snap, server, tc.host, tc.port); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
