package ztunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztunnel-go/ztunnel/relay"
	"github.com/ztunnel-go/ztunnel/workload"
)

// Values of the traffic labels (ztunnel-behavior.md §7.5).
const (
	reporterSource      = "source"      // counted by the client's proxy (outbound)
	reporterDestination = "destination" // counted by the server's proxy (inbound)

	flagNone       = "-"
	flagDeny       = "DENY"        // an authorization policy refused the connection
	flagConnect    = "CONNECT"     // the upstream could not be reached, or the connection failed later
	flagTLSFailure = "TLS_FAILURE" // the tunnel's TLS handshake failed

	securityMTLS    = "mutual_tls"
	securityUnknown = "unknown"

	unknown = "unknown" // every label without a value
)

// trafficLabelNames are the labels of the istio_tcp_* connection and byte counters, in the
// order trafficLabels.values returns them.
var trafficLabelNames = []string{
	"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision",
	"source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
	"destination_service", "destination_service_namespace", "destination_service_name",
	"destination_workload", "destination_canonical_service", "destination_canonical_revision",
	"destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_cluster",
	"request_protocol", "response_flags", "connection_security_policy",
	"source_region", "source_zone", "destination_region", "destination_zone",
}

// trafficLabels is the reference's CommonTrafficLabels. An empty field is exported as
// "unknown". Unlike the reference, the locality labels are always present (a Prometheus
// family has one label set); they are "unknown" when no workload locality is known.
type trafficLabels struct {
	Reporter string

	SourceWorkload, SourceCanonicalService, SourceCanonicalRevision string
	SourceNamespace, SourcePrincipal, SourceApp, SourceVersion      string
	SourceCluster                                                   string

	DestinationService, DestinationServiceNamespace, DestinationServiceName string

	DestinationWorkload, DestinationCanonicalService, DestinationCanonicalRevision string
	DestinationNamespace, DestinationPrincipal, DestinationApp, DestinationVersion string
	DestinationCluster                                                             string

	RequestProtocol, ResponseFlags, SecurityPolicy string

	SourceRegion, SourceZone, DestinationRegion, DestinationZone string
}

// values returns the label values in trafficLabelNames order.
func (l *trafficLabels) values() []string {
	v := []string{
		l.Reporter,
		l.SourceWorkload, l.SourceCanonicalService, l.SourceCanonicalRevision,
		l.SourceNamespace, l.SourcePrincipal, l.SourceApp, l.SourceVersion, l.SourceCluster,
		l.DestinationService, l.DestinationServiceNamespace, l.DestinationServiceName,
		l.DestinationWorkload, l.DestinationCanonicalService, l.DestinationCanonicalRevision,
		l.DestinationNamespace, l.DestinationPrincipal, l.DestinationApp, l.DestinationVersion,
		l.DestinationCluster,
		l.RequestProtocol, l.ResponseFlags, l.SecurityPolicy,
		l.SourceRegion, l.SourceZone, l.DestinationRegion, l.DestinationZone,
	}
	for i, s := range v {
		switch {
		case s == "":
			v[i] = unknown
		case !utf8.ValidString(s):
			v[i] = strings.ToValidUTF8(s, "\uFFFD") // a label value must be UTF-8
		}
	}
	return v
}

// trafficLabels describes a connection as the reference's metrics do: the workloads on both
// ends as known from the workload config, the source principal only when the connection is
// mutual TLS (outbound: our own identity; inbound: the peer's certificate), and response flag
// "-" (the flag is only known at the end).
func (p *Proxy) trafficLabels(ci *connInfo) trafficLabels {
	l := trafficLabels{
		Reporter:        reporterSource,
		RequestProtocol: "tcp",
		ResponseFlags:   flagNone,
		SecurityPolicy:  securityUnknown,
	}
	if ci.Direction == "inbound" {
		l.Reporter = reporterDestination
	}
	if ci.mutualTLS() {
		l.SecurityPolicy = securityMTLS
		l.SourcePrincipal = ci.SrcIdentity
	}
	if w := ci.SrcWorkload; w != nil {
		l.SourceWorkload = w.WorkloadName
		l.SourceCanonicalService, l.SourceApp = w.CanonicalName, w.CanonicalName
		l.SourceCanonicalRevision, l.SourceVersion = w.CanonicalRevision, w.CanonicalRevision
		l.SourceNamespace = w.Namespace
		l.SourceCluster = clusterOf(w)
		l.SourceRegion, l.SourceZone = w.Locality.Region, w.Locality.Zone
	}
	if w := ci.DstWorkload; w != nil {
		l.DestinationWorkload = w.WorkloadName
		l.DestinationCanonicalService, l.DestinationApp = w.CanonicalName, w.CanonicalName
		l.DestinationCanonicalRevision, l.DestinationVersion = w.CanonicalRevision, w.CanonicalRevision
		l.DestinationNamespace = w.Namespace
		l.DestinationPrincipal = p.identityOf(w).String()
		l.DestinationCluster = clusterOf(w)
		l.DestinationRegion, l.DestinationZone = w.Locality.Region, w.Locality.Zone
	}
	if s := ci.DstSvc; s != nil {
		l.DestinationService = s.Hostname
		l.DestinationServiceName, l.DestinationServiceNamespace = s.Name, s.Namespace
	}
	return l
}

func clusterOf(w *workload.Workload) string {
	if w.ClusterID == "" {
		return workload.DefaultClusterID
	}
	return w.ClusterID
}

// responseFlag classifies how a connection ended: nil is "-", a policy refusal (at connect
// time or after a policy change) is DENY, a TLS failure is TLS_FAILURE, anything else (upstream
// unreachable, rejected by the peer, closed by a drain) is CONNECT, as in the reference.
func responseFlag(err error) string {
	if err == nil {
		return flagNone
	}
	var pe *policyError
	if errors.As(err, &pe) {
		return flagDeny
	}
	var (
		alert  tls.AlertError
		verify *tls.CertificateVerificationError
		record tls.RecordHeaderError
		ua     x509.UnknownAuthorityError
		inv    x509.CertificateInvalidError
	)
	if errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &record) ||
		errors.As(err, &ua) || errors.As(err, &inv) {
		return flagTLSFailure
	}
	return flagConnect
}

// opened counts ci as an opened connection, with what is known about it now. The data path
// calls it at the reference's point: outbound once the upstream is chosen, before dialing;
// inbound once the target is parsed and the local workload found, before authorization.
// Connections refused earlier are only logged.
func (pod *podProxy) opened(ci *connInfo) {
	m := pod.p.metrics
	if m == nil || ci.opened != nil {
		return
	}
	ci.opened = m.series.get(pod.p, ci)
	ci.opened.opened.Inc()
}

// finish ends a connection: its access-log line, and, if it was counted as opened, the closed
// counter (and the failed counter when the flag is not "-") with the final response flag, and
// its bytes under the labels it was opened with. It must be called exactly once per connection.
func (pod *podProxy) finish(ci *connInfo, res relay.Result, err error) {
	logConn(pod.log, ci, res, err)
	s := ci.opened
	if pod.p.metrics == nil || s == nil {
		return
	}
	if err == nil {
		err = res.Err
	}
	m := pod.p.metrics
	if res.Received > 0 {
		s.received.get(m.received, s.vals).Add(float64(res.Received))
	}
	if res.Sent > 0 {
		s.sent.get(m.sent, s.vals).Add(float64(res.Sent))
	}
	flag := responseFlag(err)
	if flag == flagNone {
		s.closed.get(m.closed, s.vals).Inc()
		return
	}
	f := s.withFlag(m, flag)
	f.closed.Inc()
	f.failed.Inc()
}

// socketOpened counts an accepted downstream socket in istio_tcp_sockets_open; the returned
// function uncounts it. reporter is reporterSource or reporterDestination.
func (pod *podProxy) socketOpened(reporter string) (closed func()) {
	m := pod.p.metrics
	if m == nil {
		return func() {}
	}
	slot := &m.socketsBy[0]
	if reporter == reporterDestination {
		slot = &m.socketsBy[1]
	}
	b := slot.Load()
	if b == nil {
		g := m.sockets.WithLabelValues(reporter)
		b = &boundGauge{inc: g.Inc, dec: g.Dec}
		slot.Store(b) // a racing binder stores the same gauge
	}
	b.inc()
	return b.dec
}

// boundGauge is a gauge of a vector, bound once, with its method values made once (a method
// value made per call is an allocation).
type boundGauge struct{ inc, dec func() }

// guessInboundService picks the service an inbound connection to w was for, as the reference
// does: the service the client named (Forwarded host) if w is one of its endpoints, else the
// first of w's services whose target port is the connection's port (directly, or through w's
// own mapping of a named port).
func guessInboundService(snap *workload.Snapshot, w *workload.Workload, host string, port uint16) *workload.Service {
	var byPort *workload.Service
	for key, mapping := range w.Services {
		nh, err := workload.ParseNamespacedHostname(key)
		if err != nil {
			continue
		}
		svc := snap.ServiceByHost(nh.Namespace, nh.Hostname)
		if svc == nil {
			continue
		}
		if host != "" && svc.Hostname == host {
			return svc
		}
		if byPort != nil && byPort.Key() < svc.Key() {
			continue // map order is random: keep the choice stable
		}
		for sport, tport := range svc.Ports {
			if tport == port || (tport == 0 && mapping[sport] == port) {
				byPort = svc
				break
			}
		}
	}
	return byPort
}

// connSeries is the series a connection with one label set touches, bound once: building the
// 27 label values and hashing them in every vector costs more than the increments themselves.
// A series is bound on its first use, so the registry exports the same series as without the
// cache (no zero-valued series for counters never incremented). labels and vals are immutable;
// the lazy slots are set once (a racing binder stores the same counter).
type connSeries struct {
	labels                 trafficLabels // response flag "-"
	vals                   []string      // labels.values()
	opened                 prometheus.Counter
	closed, received, sent lazyCounter
	flagged                [3]atomic.Pointer[flagSeries] // by flagIndex; nil until first used
}

// lazyCounter is a counter of a vector bound on first use.
type lazyCounter struct{ c atomic.Pointer[boundCounter] }

type boundCounter struct{ prometheus.Counter }

func (l *lazyCounter) get(vec *prometheus.CounterVec, vals []string) prometheus.Counter {
	if b := l.c.Load(); b != nil {
		return b.Counter
	}
	b := &boundCounter{vec.WithLabelValues(vals...)}
	l.c.Store(b)
	return b.Counter
}

// flagSeries are the closed and failed counters of one response flag other than "-".
type flagSeries struct{ closed, failed prometheus.Counter }

// flagIndex maps the failure flags to connSeries.flagged.
func flagIndex(flag string) int {
	switch flag {
	case flagDeny:
		return 0
	case flagTLSFailure:
		return 1
	}
	return 2 // flagConnect
}

// withFlag returns the closed and failed counters of s's labels with response flag flag.
func (s *connSeries) withFlag(m *proxyMetrics, flag string) *flagSeries {
	slot := &s.flagged[flagIndex(flag)]
	if f := slot.Load(); f != nil {
		return f
	}
	l := s.labels
	l.ResponseFlags = flag
	vals := l.values()
	f := &flagSeries{closed: m.closed.WithLabelValues(vals...), failed: m.failed.WithLabelValues(vals...)}
	slot.Store(f) // a racing builder stores the same counters
	return f
}

// seriesKey is what the traffic labels of a connection depend on. Workloads and services are
// immutable parts of a snapshot, so their pointers stand for their contents.
type seriesKey struct {
	src, dst       *workload.Workload
	svc            *workload.Service
	inbound, hbone bool
	principal      string // the source principal; only with HBONE
}

// maxCachedSeries bounds a seriesGen: past it, connections bind their series uncached.
const maxCachedSeries = 4096

// seriesCache holds the bound series of the label sets in use. It starts over whenever the
// workload snapshot changes, so it only holds objects of the current snapshot (and of
// connections that started just before the change). Safe for concurrent use.
type seriesCache struct {
	gen atomic.Pointer[seriesGen]
}

// seriesGen is the cache of one snapshot.
type seriesGen struct {
	snap *workload.Snapshot
	m    sync.Map // seriesKey → *connSeries
	n    atomic.Int32
}

// get returns the series of ci's labels, binding them on first use.
func (c *seriesCache) get(p *Proxy, ci *connInfo) *connSeries {
	k := seriesKey{src: ci.SrcWorkload, dst: ci.DstWorkload, svc: ci.DstSvc,
		inbound: ci.Direction == "inbound", hbone: ci.mutualTLS()}
	if k.hbone {
		k.principal = ci.SrcIdentity
	}
	snap := p.store.Load()
	g := c.gen.Load()
	if g == nil || g.snap != snap {
		fresh := &seriesGen{snap: snap}
		if c.gen.CompareAndSwap(g, fresh) {
			g = fresh
		} else {
			g = c.gen.Load()
		}
	}
	if s, ok := g.m.Load(k); ok {
		return s.(*connSeries)
	}
	s := bindSeries(p.metrics, p.trafficLabels(ci))
	if g.n.Load() < maxCachedSeries {
		if prev, loaded := g.m.LoadOrStore(k, s); loaded {
			return prev.(*connSeries)
		}
		g.n.Add(1)
	}
	return s
}

func bindSeries(m *proxyMetrics, l trafficLabels) *connSeries {
	vals := l.values()
	return &connSeries{labels: l, vals: vals, opened: m.opened.WithLabelValues(vals...)}
}
