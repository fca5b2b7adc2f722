package ztunnel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
	"github.com/ztunnel-go/ztunnel/relay"
	"github.com/ztunnel-go/ztunnel/workload"
)

func parseText(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	return fams
}

func scrape(t *testing.T, h http.Handler, path, accept string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestMetricsDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.MetricsAddr != ":15020" || c.ReadinessAddr != ":15021" {
		t.Errorf("defaults: metrics %q readiness %q, want :15020 and :15021", c.MetricsAddr, c.ReadinessAddr)
	}
}

// Scraping the handler: both paths, every metric family of the brief present with its labels,
// parsed by the Prometheus text parser; OpenMetrics when asked for.
func TestMetricsHandlerScrape(t *testing.T) {
	p := newTestProxy(t, Config{Meta: map[string]string{"ISTIO_VERSION": "1.99.0"}})
	client, server, svc := fixture(t, p)
	pod := testPod(p)
	ci := &connInfo{Direction: "outbound", Protocol: "HBONE", Start: time.Now(), SrcWorkload: client, DstWorkload: server, DstSvc: svc}
	pod.opened(ci)
	pod.finish(ci, relay.Result{Received: 3, Sent: 4}, nil)
	pod.finish(ci, relay.Result{}, errPodClosed) // a second connection with the same labels that failed
	pod.socketOpened(reporterSource)
	p.podEvents.metrics.podsStarted.Inc()
	if _, err := p.certs.Get(context.Background(), certs.Identity{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "client"}); err != nil {
		t.Fatal(err)
	}

	h := p.metrics.handler()
	for _, path := range []string{"/metrics", "/stats/prometheus"} {
		resp := scrape(t, h, path, "")
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		fams := parseText(t, string(body))
		for _, name := range []string{
			"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
			"istio_tcp_connections_failed_total", "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total",
			"istio_tcp_sockets_open", "istio_build", "istio_cert_expiry_seconds",
			"workload_manager_active_proxy_count", "workload_manager_pending_proxy_count",
			"workload_manager_proxies_started_total", "workload_manager_proxies_stopped_total",
			"process_open_fds", "process_cpu_seconds_total",
		} {
			if fams[name] == nil {
				t.Errorf("GET %s: no %s", path, name)
			}
		}
		if f := fams["istio_tcp_connections_opened_total"]; f != nil {
			var names []string
			for _, lp := range f.GetMetric()[0].GetLabel() {
				names = append(names, lp.GetName())
			}
			want := append([]string(nil), trafficLabelNames...)
			slices.Sort(want)
			if diff := cmp.Diff(want, names); diff != "" {
				t.Errorf("opened label names (-want +got):\n%s", diff)
			}
		}
		if f := fams["istio_build"]; f != nil {
			got := map[string]string{}
			for _, lp := range f.GetMetric()[0].GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if diff := cmp.Diff(map[string]string{"component": "ztunnel", "tag": "1.99.0"}, got); diff != "" {
				t.Errorf("istio_build labels (-want +got):\n%s", diff)
			}
		}
		if f := fams["istio_cert_expiry_seconds"]; f != nil {
			m := f.GetMetric()[0]
			if v := m.GetGauge().GetValue(); v < 3600 || v > 25*3600 {
				t.Errorf("cert expiry = %v s, want about a day", v)
			}
			if id := m.GetLabel()[0].GetValue(); id != "spiffe://cluster.local/ns/ns1/sa/client" {
				t.Errorf("cert expiry identity = %q", id)
			}
		}
	}

	resp := scrape(t, h, "/metrics", "application/openmetrics-text; version=1.0.0")
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("OpenMetrics requested, got Content-Type %q", ct)
	}
	if !strings.HasSuffix(string(body), "# EOF\n") || !strings.Contains(string(body), "istio_tcp_connections_opened_total{") {
		t.Errorf("OpenMetrics body does not look like OpenMetrics:\n%.400s", body)
	}
	if resp := scrape(t, h, "/other", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %d, want 404", resp.StatusCode)
	}
}

func TestXDSCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&xdsCollector{stats: func() workload.XDSStats {
		return workload.XDSStats{
			Messages:     map[string]uint64{"type.googleapis.com/istio.workload.Address": 3},
			Bytes:        map[string]uint64{"type.googleapis.com/istio.workload.Address": 1234},
			Terminations: map[string]uint64{workload.TerminationReconnect: 2},
		}
	}})
	got := gather(t, reg)
	want := map[string][]sample{
		"istio_xds_message_total":                 {{Labels: map[string]string{"url": "type.googleapis.com/istio.workload.Address"}, Value: 3}},
		"istio_xds_message_bytes_total":           {{Labels: map[string]string{"url": "type.googleapis.com/istio.workload.Address"}, Value: 1234}},
		"istio_xds_connection_terminations_total": {{Labels: map[string]string{"reason": "Reconnect"}, Value: 2}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("xds metrics (-want +got):\n%s", diff)
	}
}

func TestCertCollectorExpired(t *testing.T) {
	p := newTestProxy(t, Config{})
	id := certs.Identity{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "client"}
	c, err := p.certs.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Chain[0]
	reg := prometheus.NewRegistry()
	reg.MustRegister(&certCollector{certs: p.certs, now: func() time.Time { return leaf.NotAfter.Add(time.Minute) }})
	got := gather(t, reg)["istio_cert_expiry_seconds"]
	if len(got) != 1 || got[0].Value != -60 {
		t.Errorf("expired certificate: %+v, want one series at -60", got)
	}
}

// fakePods is a pod manager without network namespaces: AddWorkload starts a fresh podProxy
// (unless the uid runs and replace is false) or fails with failAdd.
type fakePods struct {
	pods    map[string]*podProxy
	replace bool  // AddWorkload of a running uid replaces it (a new netns)
	failAdd error // AddWorkload removes any old proxy and fails
	started chan struct{}
	release chan struct{} // if set, AddWorkload waits for it (a slow start)
}

func (f *fakePods) AddWorkload(_ context.Context, uid string, _ zds.WorkloadInfo, _ *redirect.NetNS) error {
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.release != nil {
		<-f.release
	}
	if f.failAdd != nil {
		delete(f.pods, uid)
		return f.failAdd
	}
	if f.pods[uid] == nil || f.replace {
		f.pods[uid] = &podProxy{uid: uid}
	}
	return nil
}

func (f *fakePods) DelWorkload(_ context.Context, uid string) error { delete(f.pods, uid); return nil }

func (f *fakePods) Reconcile(_ context.Context, keep map[string]bool) error {
	for uid := range f.pods {
		if !keep[uid] {
			delete(f.pods, uid)
		}
	}
	return nil
}

func (f *fakePods) pod(uid string) *podProxy { return f.pods[uid] }
func (f *fakePods) podsByUID() map[string]*podProxy {
	out := map[string]*podProxy{}
	for k, v := range f.pods {
		out[k] = v
	}
	return out
}
func (f *fakePods) count() int        { return len(f.pods) }
func (f *fakePods) pendingCount() int { return 0 }

// The pod lifecycle counters follow the pod manager through starts, no-op re-adds,
// replacements, failed adds, deletes and reconciles; pending counts starts in progress.
func TestPodEventsCounters(t *testing.T) {
	p := newTestProxy(t, Config{})
	fake := &fakePods{pods: map[string]*podProxy{}}
	ev := &podEvents{m: fake}
	ev.metrics = newProxyMetrics(p, ev)
	ctx := context.Background()
	counters := func() map[string]float64 {
		out := map[string]float64{}
		for name, ss := range gather(t, ev.metrics.reg) {
			if strings.HasPrefix(name, "workload_manager_") {
				out[name] = ss[0].Value
			}
		}
		return out
	}
	check := func(step string, active, pending, started, stopped float64) {
		t.Helper()
		want := map[string]float64{
			"workload_manager_active_proxy_count":    active,
			"workload_manager_pending_proxy_count":   pending,
			"workload_manager_proxies_started_total": started,
			"workload_manager_proxies_stopped_total": stopped,
		}
		if diff := cmp.Diff(want, counters()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", step, diff)
		}
	}
	add := func(uid string) error { return ev.AddWorkload(ctx, uid, zds.WorkloadInfo{}, nil) }

	check("start", 0, 0, 0, 0)
	add("a")
	add("b")
	add("c")
	check("three pods", 3, 0, 3, 0)
	add("a")
	check("re-add in the same netns is a no-op", 3, 0, 3, 0)
	fake.replace = true
	add("a")
	fake.replace = false
	check("re-add in a new netns replaces", 3, 0, 4, 1)
	fake.failAdd = errors.New("listen: address in use")
	if err := add("b"); err == nil {
		t.Fatal("failed add: no error")
	}
	if err := add("d"); err == nil {
		t.Fatal("failed add: no error")
	}
	fake.failAdd = nil
	check("a replacement that fails stops the old proxy; a failed new pod starts nothing", 2, 0, 4, 2)
	ev.DelWorkload(ctx, "c")
	ev.DelWorkload(ctx, "unknown")
	check("delete", 1, 0, 4, 3)
	add("e")
	add("f")
	ev.Reconcile(ctx, map[string]bool{"e": true})
	check("reconcile keeps only e", 1, 0, 6, 5)

	// A slow start is pending while it runs.
	fake.started, fake.release = make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() { done <- add("g") }()
	<-fake.started
	if n := ev.pendingCount(); n != 1 {
		t.Errorf("pending during a start = %d, want 1", n)
	}
	check("slow start in progress", 1, 1, 6, 5)
	close(fake.release)
	<-done
	check("slow start done", 2, 0, 7, 5)
}

// A server whose port is taken waits for it instead of failing, and serves once it is free.
func TestServeHTTPWaitsForPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bound := make(chan net.Addr, 1)
	done := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") })
	go func() {
		done <- serveHTTP(ctx, "test", addr, h, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a net.Addr) { bound <- a })
	}()
	select {
	case <-bound:
		t.Fatal("bound an address that is in use")
	case err := <-done:
		t.Fatalf("serveHTTP gave up on a busy port: %v", err)
	case <-time.After(2 * bindRetry):
	}
	busy.Close()
	select {
	case <-bound:
	case <-time.After(5 * time.Second):
		t.Fatal("did not bind after the port was freed")
	}
	if code, body := get(t, "http://"+addr+"/"); code != 200 || body != "hi" {
		t.Errorf("GET: %d %q", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveHTTP after cancel: %v", err)
	}

	// Any other listen failure is an error.
	if err := serveHTTP(context.Background(), "test", "256.0.0.1:0", h, slog.Default(), nil); err == nil {
		t.Error("serveHTTP on an invalid address: no error")
	}
}
