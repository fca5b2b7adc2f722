package ztunnel

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/workload"
)

var (
	xdsTerminationsDesc = prometheus.NewDesc("istio_xds_connection_terminations_total",
		"The total number of completed connections to xds server (unstable)", []string{"reason"}, nil)
	xdsMessagesDesc = prometheus.NewDesc("istio_xds_message_total",
		"Total number of messages received (unstable)", []string{"url"}, nil)
	xdsBytesDesc = prometheus.NewDesc("istio_xds_message_bytes_total",
		"Total number of bytes received (unstable)", []string{"url"}, nil)
	certExpiryDesc = prometheus.NewDesc("istio_cert_expiry_seconds",
		"Seconds until the certificate of a workload identity expires; negative once expired (not in the reference)",
		[]string{"identity"}, nil)
)

// xdsCollector exports the xDS client's counters, read at scrape time. stats is
// workload.XDSClient.Stats, which is safe to call from any goroutine.
type xdsCollector struct {
	stats func() workload.XDSStats
}

var _ prometheus.Collector = (*xdsCollector)(nil)

func (c *xdsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- xdsTerminationsDesc
	ch <- xdsMessagesDesc
	ch <- xdsBytesDesc
}

func (c *xdsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for reason, n := range s.Terminations {
		ch <- constMetric(xdsTerminationsDesc, prometheus.CounterValue, float64(n), reason)
	}
	for url, n := range s.Messages {
		ch <- constMetric(xdsMessagesDesc, prometheus.CounterValue, float64(n), url)
	}
	for url, n := range s.Bytes {
		ch <- constMetric(xdsBytesDesc, prometheus.CounterValue, float64(n), url)
	}
}

// certCollector exports, per identity with an issued certificate, the seconds until its leaf
// expires. certs.Manager.Dump is safe to call from any goroutine.
type certCollector struct {
	certs *certs.Manager
	now   func() time.Time // nil: time.Now
}

var _ prometheus.Collector = (*certCollector)(nil)

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	if c.certs == nil {
		return
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	t := now()
	for _, s := range c.certs.Dump() {
		if len(s.Chain) == 0 {
			continue
		}
		left := s.Chain[0].NotAfter.Sub(t).Seconds()
		ch <- constMetric(certExpiryDesc, prometheus.GaugeValue, left, s.Identity)
	}
}

// constMetric is prometheus.NewConstMetric that reports a bad label value (not UTF-8) as an
// invalid metric, which fails the scrape with an error instead of panicking.
func constMetric(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

var (
	refusedDesc = prometheus.NewDesc("ztunnel_connections_refused_total",
		"Connections reset at once because a cap was reached, by listener (outbound, inbound, hbone) and "+
			"reason (proxy_limit, pod_limit, handshakes_total, handshakes_per_source) (not in the reference)",
		[]string{"listener", "reason"}, nil)
	connsOpenDesc = prometheus.NewDesc("ztunnel_connections_open",
		"Connections counted against the connection caps (not in the reference)", nil, nil)
	connsMaxDesc = prometheus.NewDesc("ztunnel_connections_max",
		"The connection caps, for the whole proxy and per pod; 0 is no cap (not in the reference)",
		[]string{"scope"}, nil)
	handshakesDesc = prometheus.NewDesc("ztunnel_hbone_handshakes_in_progress",
		"HBONE connections in their TLS handshake or HTTP/2 preface (not in the reference)", nil, nil)
)

// limitsCollector exports the connection caps' counters (limits.go), read at scrape time.
type limitsCollector struct {
	limits     *connLimits
	handshakes *hbone.HandshakeLimiter
}

var _ prometheus.Collector = (*limitsCollector)(nil)

func (c *limitsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- refusedDesc
	ch <- connsOpenDesc
	ch <- connsMaxDesc
	ch <- handshakesDesc
}

func (c *limitsCollector) Collect(ch chan<- prometheus.Metric) {
	if l := c.limits; l != nil {
		for i, name := range listenerNames {
			ch <- constMetric(refusedDesc, prometheus.CounterValue, float64(l.refused[i][0].Load()), name, refusedProxyLimit)
			ch <- constMetric(refusedDesc, prometheus.CounterValue, float64(l.refused[i][1].Load()), name, refusedPodLimit)
		}
		ch <- constMetric(connsOpenDesc, prometheus.GaugeValue, float64(l.open.Load()))
		ch <- constMetric(connsMaxDesc, prometheus.GaugeValue, float64(l.max), "proxy")
		ch <- constMetric(connsMaxDesc, prometheus.GaugeValue, float64(l.perPod), "pod")
	}
	if c.handshakes != nil {
		s := c.handshakes.Stats()
		hb := listenerNames[listenerHBONE]
		ch <- constMetric(refusedDesc, prometheus.CounterValue, float64(s.RefusedTotal), hb, hbone.RefusedHandshakes)
		ch <- constMetric(refusedDesc, prometheus.CounterValue, float64(s.RefusedPerSource), hb, hbone.RefusedHandshakesPerSource)
		ch <- constMetric(handshakesDesc, prometheus.GaugeValue, float64(s.InHandshake))
	}
}
