package ztunnel

import (
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/redirect"
)

// Connection caps. Every proxied connection holds descriptors (the accepted socket and the
// upstream one; a pipe while a TCP-to-TCP copy has bytes in flight), and a proxy out of
// descriptors fails everything at once: every pod's new connections, its xDS and CA streams, its
// admin port. So the connections the proxy carries are capped, in total and per pod, below what
// its descriptor limit allows, leaving headroom; a connection over a cap is reset at once, before
// anything else is done for it, and counted (ztunnel_connections_refused_total).
//
// Unauthenticated HBONE connections (in their TLS handshake) are capped separately by an
// hbone.HandshakeLimiter shared by every pod's server, in total and per source address.

// Label values of ztunnel_connections_refused_total.
const (
	refusedProxyLimit = "proxy_limit" // MaxConnections reached
	refusedPodLimit   = "pod_limit"   // MaxConnectionsPerPod reached
)

// listener indexes of connLimits.refused.
const (
	listenerOutbound = iota
	listenerInbound
	listenerHBONE
	numListeners
)

var listenerNames = [numListeners]string{"outbound", "inbound", "hbone"}

// descriptorsPerConn is what the caps assume a connection holds.
const descriptorsPerConn = 2

// connLimitsFor derives the caps from the descriptor limit when they are not configured (zero): a
// headroom of an eighth of the limit (at least 512) is kept for the proxy's own sockets, files and
// established tunnels, and the rest allows descriptorsPerConn per connection; one pod may take
// three quarters of that, so that a flood into one pod leaves room for the others. A negative
// configured cap, or a derived one with the limit unknown, is returned as zero: no cap.
func connLimitsFor(fdLimit uint64, maxConns, perPod int) (int, int) {
	if maxConns == 0 && fdLimit > 0 {
		headroom := max(fdLimit/8, 512)
		if fdLimit > headroom {
			maxConns = int(min((fdLimit-headroom)/descriptorsPerConn, 1<<40))
		}
	}
	if perPod == 0 && maxConns > 0 {
		perPod = max(maxConns/4*3, 1)
	}
	return max(maxConns, 0), max(perPod, 0)
}

// newConnLimits makes the caps of cfg (see Config.MaxConnections), logging what they are.
func newConnLimits(cfg Config, log *slog.Logger) *connLimits {
	fdLimit, err := redirect.OpenFileLimit()
	if err != nil {
		log.Warn("descriptor limit unknown: connection caps only as configured", "error", err)
	}
	maxConns, perPod := connLimitsFor(fdLimit, cfg.MaxConnections, cfg.MaxConnectionsPerPod)
	log.Info("connection caps", "max_connections", maxConns, "max_connections_per_pod", perPod,
		"descriptor_limit", fdLimit, "hbone_max_handshakes", capString(cfg.MaxHandshakes, hbone.DefaultMaxHandshakes),
		"hbone_max_handshakes_per_source", capString(cfg.MaxHandshakesPerSource, hbone.DefaultMaxHandshakesPerSource))
	return &connLimits{max: int64(maxConns), perPod: int64(perPod)}
}

// capString shows a configured cap: its default when zero, "none" when negative.
func capString(v, def int) string {
	switch {
	case v == 0:
		return strconv.Itoa(def)
	case v < 0:
		return "none"
	}
	return strconv.Itoa(v)
}

// connLimits counts the proxy's connections against its caps. It is safe for concurrent use.
type connLimits struct {
	max, perPod int64 // 0: no cap
	open        atomic.Int64
	refused     [numListeners][2]atomic.Uint64 // by listener, by reason (proxy, pod)
	refusedLog  refusalLog
}

// acquire counts a new connection of pod on listener: it returns "" if the connection may go on
// (release must then be called once it has ended), else the reason it is refused.
func (l *connLimits) acquire(pod *podProxy, listener int) string {
	if n := l.open.Add(1); l.max > 0 && n > l.max {
		l.open.Add(-1)
		l.refuse(pod, listener, 0, refusedProxyLimit)
		return refusedProxyLimit
	}
	if n := pod.open.Add(1); l.perPod > 0 && n > l.perPod {
		pod.open.Add(-1)
		l.open.Add(-1)
		l.refuse(pod, listener, 1, refusedPodLimit)
		return refusedPodLimit
	}
	return ""
}

// release uncounts a connection acquire admitted.
func (l *connLimits) release(pod *podProxy) {
	pod.open.Add(-1)
	l.open.Add(-1)
}

func (l *connLimits) refuse(pod *podProxy, listener, reason int, name string) {
	l.refused[listener][reason].Add(1)
	l.refusedLog.note(pod.log, "connection refused: connection cap reached", listenerNames[listener], name)
}

// refusalLog logs refusals without flooding: the first of a burst at once, then a summary with
// the count at most every refusalLogEvery.
type refusalLog struct {
	mu      sync.Mutex
	last    time.Time
	pending int
}

const refusalLogEvery = 10 * time.Second

func (r *refusalLog) note(log *slog.Logger, msg, listener, reason string) {
	r.mu.Lock()
	r.pending++
	now := time.Now()
	if now.Sub(r.last) < refusalLogEvery {
		r.mu.Unlock()
		return
	}
	n := r.pending
	r.pending, r.last = 0, now
	r.mu.Unlock()
	log.Warn(msg, "listener", listener, "reason", reason, "refused", n, "every", refusalLogEvery)
}

// handshakeRefused is the hbone.Server.OnRefused hook of a pod: the limiter counts the refusals
// (reported as metrics from its Stats); this only logs them, rate-limited.
func (pod *podProxy) handshakeRefused(reason string) {
	pod.p.limits.refusedLog.note(pod.log, "HBONE connection refused: handshake cap reached", listenerNames[listenerHBONE], reason)
}

// newHandshakeLimiter is the proxy-wide cap on HBONE connections in their handshake.
func newHandshakeLimiter(cfg Config) *hbone.HandshakeLimiter {
	return &hbone.HandshakeLimiter{MaxTotal: cfg.MaxHandshakes, MaxPerSource: cfg.MaxHandshakesPerSource}
}
