package ztunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ztunnel-go/ztunnel/relay"
)

// Per-connection costs of the data path, piece by piece: what a connection pays besides its
// bytes. The handlers themselves need a redirected socket (SO_ORIGINAL_DST) and a pod network
// namespace, so they are measured through their parts:
//   - the bookkeeping around a connection (cancel context, tracker, socket gauge);
//   - the metric calls (opened, then finish with its counters) and the access-log line;
//   - splice of a 1-byte echo between two in-memory connection pairs.
//
// Run: go test ./ztunnel -run '^$' -bench Conn -benchmem

// outboundHBONEConn is the connInfo of a finished outbound HBONE connection of the fixture.
func outboundHBONEConn(tb testing.TB, p *Proxy) *connInfo {
	snap := p.store.Load()
	client := snap.WorkloadByUID("c1//v1/Pod/ns1/client-abc")
	server := snap.WorkloadByUID("c1//v1/Pod/ns2/server-xyz")
	svc := snap.ServiceByHost("ns2", "server.ns2.svc.cluster.local")
	if client == nil || server == nil || svc == nil {
		tb.Fatal("fixture incomplete")
	}
	return &connInfo{Direction: "outbound", Protocol: "HBONE", Start: time.Now(),
		Src: netip.MustParseAddrPort("10.0.1.1:40000"), Dst: netip.MustParseAddrPort("10.96.0.10:80"),
		ActualDst: netip.MustParseAddrPort("10.0.2.1:15008"), HBONEAddr: "10.0.2.1:8080",
		SrcWorkload: client, SrcIdentity: p.identityOf(client).String(),
		DstWorkload: server, DstIdentity: p.identityOf(server).String(),
		DstService: svc.Key(), DstSvc: svc}
}

func benchProxy(b *testing.B) (*Proxy, *podProxy) {
	p, err := New(Config{LocalXDS: metricsConfig, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	return p, testPod(p)
}

// BenchmarkConnMetricsAndLog is the accounting of one successful connection: opened, the
// access-log line (text handler into io.Discard) and the closing counters.
func BenchmarkConnMetricsAndLog(b *testing.B) {
	p, pod := benchProxy(b)
	tmpl := outboundHBONEConn(b, p)
	b.ReportAllocs()
	for b.Loop() {
		ci := *tmpl
		pod.opened(&ci)
		pod.finish(&ci, relay.Result{Received: 1, Sent: 1}, nil)
	}
}

// BenchmarkConnLog is the access-log line alone.
func BenchmarkConnLog(b *testing.B) {
	p, pod := benchProxy(b)
	ci := outboundHBONEConn(b, p)
	b.ReportAllocs()
	for b.Loop() {
		logConn(pod.log, ci, relay.Result{Received: 1, Sent: 1}, nil)
	}
}

// BenchmarkConnBookkeeping is what a handler does around every connection before and after
// proxying it: the socket gauge, the cancel context, the tracker entry and its view.
func BenchmarkConnBookkeeping(b *testing.B) {
	p, pod := benchProxy(b)
	pod.ctx, pod.cancel = context.WithCancelCause(context.Background())
	defer pod.cancel(nil)
	tmpl := outboundHBONEConn(b, p)
	b.ReportAllocs()
	for b.Loop() {
		ci := *tmpl
		func() {
			defer pod.socketOpened(reporterSource)()
			_, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			tc := &trackedConn{cancel: cancel}
			defer pod.conns.track(tc)()
			pod.conns.set(tc, ci.view())
		}()
	}
}

// BenchmarkConnBaggage is the baggage header of an outbound HBONE connection.
func BenchmarkConnBaggage(b *testing.B) {
	p, _ := benchProxy(b)
	ci := outboundHBONEConn(b, p)
	b.ReportAllocs()
	for b.Loop() {
		baggage(ci.SrcWorkload, p.cfg.ClusterID)
	}
}

// The cached series of a connection carry exactly the labels trafficLabels gives it, are shared
// by connections with the same labels, and the cache starts over when the snapshot changes.
func TestSeriesCache(t *testing.T) {
	p := newTestProxy(t, Config{})
	ci := outboundHBONEConn(t, p)
	c := &p.metrics.series
	s1 := c.get(p, ci)
	direct := p.trafficLabels(ci)
	if diff := cmp.Diff(direct.values(), s1.vals); diff != "" {
		t.Errorf("cached label values (-direct +cached):\n%s", diff)
	}
	other := *ci
	other.Direction = "inbound"
	if s2 := c.get(p, &other); s2 == s1 || s2.labels.Reporter != reporterDestination {
		t.Errorf("inbound connection got the outbound series (reporter %q)", s2.labels.Reporter)
	}
	if again := c.get(p, ci); again != s1 {
		t.Error("same labels: series not reused")
	}
	gen := c.gen.Load()
	p.store.Replace(nil)
	if again := c.get(p, ci); again == s1 || c.gen.Load() == gen {
		t.Error("snapshot replaced: cache not started over")
	}
}

// The access-log line keeps its fields and their order.
func TestLogConnLine(t *testing.T) {
	p := newTestProxy(t, Config{})
	ci := outboundHBONEConn(t, p)
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		switch a.Key {
		case slog.TimeKey:
			a.Value = slog.StringValue("T")
		case "duration":
			a.Value = slog.StringValue("D")
		}
		return a
	}}))
	logConn(log, ci, relay.Result{Received: 2, Sent: 1}, nil)
	logConn(log, &connInfo{Direction: "outbound", Src: ci.Src}, relay.Result{}, errors.New("no route"))
	want := `time=T level=INFO msg="connection complete" src.addr=10.0.1.1:40000 dst.addr=10.96.0.10:80 ` +
		`dst.hbone_addr=10.0.2.1:8080 src.workload=client-abc src.namespace=ns1 ` +
		`src.identity=spiffe://cluster.local/ns/ns1/sa/client dst.service=ns2/server.ns2.svc.cluster.local ` +
		`dst.workload=server-xyz dst.namespace=ns2 dst.identity=spiffe://cluster.local/ns/ns2/sa/server ` +
		`direction=outbound protocol=HBONE bytes_sent=1 bytes_recv=2 duration=D` + "\n" +
		`time=T level=WARN msg="connection failed" src.addr=10.0.1.1:40000 dst.addr="invalid AddrPort" ` +
		`direction=outbound protocol="" bytes_sent=0 bytes_recv=0 duration=D error="no route"` + "\n"
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("access log (-want +got):\n%s", diff)
	}
}
