package ztunnel

import (
	"cmp"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// proxyMetrics are the proxy's Prometheus metrics, in a registry of their own, with the names
// and labels of the reference (ztunnel-behavior.md §7.5). The vectors are safe for concurrent
// use; nothing here needs a lock of its own.
type proxyMetrics struct {
	reg *prometheus.Registry

	// Connection metrics, labelled by trafficLabelNames.
	opened, closed, failed, received, sent *prometheus.CounterVec
	// sockets counts accepted downstream sockets, by reporter.
	sockets *prometheus.GaugeVec
	// socketsBy are the sockets gauges by reporter (source, destination), bound on first use
	// (see podProxy.socketOpened).
	socketsBy [2]atomic.Pointer[boundGauge]
	// series caches the connection metrics' series by label set (metrics_traffic.go).
	series seriesCache

	// retries counts outbound attempts on another endpoint after a failed connect, by service.
	retries *prometheus.CounterVec

	// In-pod proxy lifecycle (workload_manager_*): see podEvents.
	podsStarted, podsStopped prometheus.Counter
}

// newProxyMetrics builds the registry of p. It reads events, p.certs and p.xds at scrape time
// (p.certs and p.xds may be nil).
func newProxyMetrics(p *Proxy, events *podEvents) *proxyMetrics {
	m := &proxyMetrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, trafficLabelNames)
	}
	m.opened = counter("istio_tcp_connections_opened_total", "The total number of TCP connections opened")
	m.closed = counter("istio_tcp_connections_closed_total", "The total number of TCP connections closed")
	m.failed = counter("istio_tcp_connections_failed_total",
		"The total number of TCP connections that failed to establish (unstable)")
	m.received = counter("istio_tcp_received_bytes_total",
		"The size of total bytes received during request in case of a TCP connection")
	m.sent = counter("istio_tcp_sent_bytes_total",
		"The size of total bytes sent during response in case of a TCP connection")
	m.sockets = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "istio_tcp_sockets_open", Help: "The current number of open TCP sockets (unstable)",
	}, []string{"reporter"})

	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ztunnel_upstream_retries_total",
		Help: "Outbound connections tried again on another endpoint after a failed connect, by destination service (not in the reference)",
	}, []string{"destination_service"})

	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "istio_build", Help: "Istio component build info",
	}, []string{"component", "tag"})
	build.WithLabelValues("ztunnel", cmp.Or(p.cfg.Meta["ISTIO_VERSION"], unknown)).Set(1)

	m.podsStarted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "workload_manager_proxies_started_total", Help: "The total number of proxies that were started (unstable)",
	})
	m.podsStopped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "workload_manager_proxies_stopped_total", Help: "The total number of proxies that were stopped (unstable)",
	})
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "workload_manager_active_proxy_count",
		Help: "The total number current workloads with active proxies (unstable)",
	}, func() float64 { return float64(events.m.count()) })
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "workload_manager_pending_proxy_count",
		Help: "The total number current workloads with pending proxies (unstable)",
	}, func() float64 { return float64(events.pendingCount()) })

	m.reg.MustRegister(
		m.opened, m.closed, m.failed, m.received, m.sent, m.sockets, m.retries,
		build, m.podsStarted, m.podsStopped, active, pending,
		&certCollector{certs: p.certs},
		&limitsCollector{limits: p.limits, handshakes: p.handshakes},
		&outlierCollector{d: p.outliers},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if p.xds != nil {
		m.reg.MustRegister(&xdsCollector{stats: p.xds.Stats})
	}
	return m
}

// handler serves the registry: the Prometheus text format, or OpenMetrics when the scraper
// asks for it (Accept: application/openmetrics-text), gzipped when accepted.
func (m *proxyMetrics) handler() http.Handler {
	prom := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", prom)
	mux.Handle("GET /stats/prometheus", prom)
	return mux
}
