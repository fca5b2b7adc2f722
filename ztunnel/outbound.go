package ztunnel

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/workload"
)

// handleOutbound proxies one connection the pod's redirection sent to port 15001:
//
//	redirected socket → original destination → source workload → destination lookup
//	(service VIP → endpoint selection, or workload IP, or unknown → passthrough)
//	→ HBONE tunnel from the pool (or plain TCP) → relay.
//
// It returns once the connection is set up (the relay carries it on); release (the accept loop's)
// is called once everything about the connection is finished.
func (pod *podProxy) handleOutbound(c net.Conn, release func()) {
	ci := &connInfo{Direction: "outbound", Start: time.Now(), Src: addrPort(c.RemoteAddr())}
	connCtx, cancel := context.WithCancelCause(context.Background()) // pod.stop ends it: see connTracker
	tc := &trackedConn{cancel: cancel}
	end := &connEnd{closed: pod.socketOpened(reporterSource), untrack: pod.conns.track(tc), cancel: cancel, release: release}

	up, err := pod.connectOutbound(connCtx, c, ci)
	if err != nil {
		pod.refuse(c, ci, err)
		end.run()
		return
	}
	pod.relay(connCtx, tc, ci, c, up, end)
}

// connectOutbound resolves where c should go and opens the upstream connection. ctx is the
// connection's.
func (pod *podProxy) connectOutbound(ctx context.Context, c net.Conn, ci *connInfo) (net.Conn, error) {
	dst, err := redirect.OriginalDst(c)
	if err != nil {
		return nil, fmt.Errorf("original destination: %w", err)
	}
	ci.Dst = dst
	if illegalPort(dst.Port()) && (dst.Addr().IsLoopback() || dst.Addr() == ci.Src.Addr()) {
		return nil, fmt.Errorf("refusing connection to proxy port %d (would loop)", dst.Port())
	}
	src, err := pod.ownWorkload(ctx, ci.Src.Addr())
	if err != nil {
		return nil, err
	}
	ci.SrcWorkload = src

	snap := pod.p.store.Load()
	sel, err := pod.resolve(snap, src, dst)
	if err != nil {
		return nil, err
	}
	if sel.up.Workload == nil && sel.svc == nil && pod.p.demand(ctx, src.Network, dst.Addr()) {
		// Unknown here, but istiod may know it: the on-demand answer decides.
		if sel, err = pod.resolve(pod.p.store.Load(), src, dst); err != nil {
			return nil, err
		}
	}
	ci.DstSvc = sel.svc
	if sel.up.Workload == nil {
		// Not a mesh destination: pass through to where the client was going.
		ci.Protocol, ci.ActualDst = "TCP", dst
		pod.opened(ci)
		return pod.ns.DialAddrPort(ctx, "tcp", dst, pod.socketOptions(netip.AddrPort{}))
	}
	if sel.svc != nil {
		ci.DstService = sel.svc.Key()
	}
	return pod.connectUpstream(ctx, ci, src, sel, dst)
}

// connectUpstream connects to the selected upstream. When that fails before anything was sent
// (the connect was refused or timed out, the CONNECT was answered 5xx or reset), a service's
// connection is tried again on another endpoint (the best level that has one not tried yet, see
// nextUpstream), up to maxUpstreamAttempts in all: the client sees a failure only when every
// attempt failed, and its bytes are neither lost nor sent twice since none were read yet. Every
// outcome is reported to the outlier detector when the route has outlier detection.
func (pod *podProxy) connectUpstream(ctx context.Context, ci *connInfo, src *workload.Workload, sel selection,
	dst netip.AddrPort) (net.Conn, error) {
	var triedBuf [maxUpstreamAttempts]*workload.Workload
	tried := triedBuf[:0]
	for {
		ci.Attempts++
		ci.DstWorkload = sel.up.Workload
		conn, err := pod.connectTo(ctx, ci, src, sel, dst)
		o, status, retry := classifyConnect(ctx, err)
		if p := sel.plan; p != nil && p.outlier != nil && o != 0 {
			pod.p.outliers.report(p.cluster, p.outlier, p.hosts, hostKey{uid: sel.up.Workload.UID, port: sel.up.Port}, o, status)
		}
		if err == nil {
			pod.opened(ci)
			return conn, nil
		}
		tried = append(tried, sel.up.Workload)
		if retry && sel.svc != nil && len(tried) < maxUpstreamAttempts {
			if next, ok := pod.nextUpstream(sel, src, tried); ok {
				pod.log.Warn("upstream connect failed, trying another endpoint", "src.addr", ci.Src.String(),
					"dst.service", sel.svc.Key(), "failed", sel.up.Workload.UID, "next", next.Workload.UID, "error", err)
				pod.p.countRetry(sel.svc)
				sel.up = next
				ci.Protocol, ci.ActualDst, ci.HBONEAddr, ci.DstIdentity = "", netip.AddrPort{}, "", ""
				continue
			}
		}
		if ci.Protocol != "" {
			pod.opened(ci) // it got as far as connecting: a failed connection, not a refused one
		}
		if len(tried) > 1 {
			err = fmt.Errorf("%w (after %d attempts on different endpoints)", err, len(tried))
		}
		return nil, err
	}
}

// nextUpstream chooses the endpoint for another attempt: not one tried already and, if possible,
// not behind a network gateway that failed lately.
func (pod *podProxy) nextUpstream(sel selection, src *workload.Workload, tried []*workload.Workload) (upstream, bool) {
	wasTried := func(w *workload.Workload) bool { return slices.Contains(tried, w) }
	avoidAll := func(up upstream) bool { return wasTried(up.Workload) || pod.p.gateways.isDown(up.Workload) }
	avoidTried := func(up upstream) bool { return wasTried(up.Workload) }
	if sel.plan != nil {
		if up, ok := sel.plan.pickAvoiding(pod.p.outliers, defaultRand, avoidAll); ok {
			return up, true
		}
		return sel.plan.pickAvoiding(pod.p.outliers, defaultRand, avoidTried)
	}
	cs := selections.get(sel.snap, src, sel.svc, sel.port)
	if up, ok := pickCandidateAvoiding(cs, defaultRand, avoidAll); ok {
		return up, true
	}
	return pickCandidateAvoiding(cs, defaultRand, avoidTried)
}

// connectTo opens the connection to sel.up: HBONE to its node's proxy, double HBONE through its
// network's gateway, or plain TCP to a workload outside the mesh's tunnels. It fills in ci; a
// connection that got as far as connecting has ci.Protocol set.
func (pod *podProxy) connectTo(ctx context.Context, ci *connInfo, src *workload.Workload, sel selection,
	dst netip.AddrPort) (net.Conn, error) {
	target, svc := sel.up, sel.svc
	if target.Workload.Network != src.Network {
		return pod.connectThroughGateway(ctx, ci, src, svc, target, sel.port)
	}
	ip, ok := pickIP(target.Workload, dst.Addr())
	if !ok {
		return nil, &setupError{fmt.Errorf("destination workload %s has no usable IP address", target.Workload.UID)}
	}
	upAddr := netip.AddrPortFrom(ip, target.Port)

	if target.Workload.Protocol != workload.ProtocolHBONE {
		ci.Protocol, ci.ActualDst = "TCP", upAddr
		cctx, cancel := context.WithTimeout(ctx, pod.p.cfg.ConnectTimeout)
		defer cancel()
		return pod.ns.DialAddrPort(cctx, "tcp", upAddr, pod.socketOptions(netip.AddrPort{}))
	}

	ci.Protocol = "HBONE"
	ci.SrcIdentity, ci.DstIdentity = pod.identityString(src), pod.identityString(target.Workload)
	ci.HBONEAddr = upAddr.String()
	dstIDs := ci.DstIdentity
	if svc != nil && len(svc.SubjectAltNames) > 0 {
		dstIDs = identitySet(append([]string{ci.DstIdentity}, svc.SubjectAltNames...))
	}
	key := hbone.Key{
		SrcIdentity:   ci.SrcIdentity,
		DstIdentities: dstIDs,
		Dst:           netip.AddrPortFrom(ip, HBONEPort),
		SrcIP:         ci.Src.Addr().Unmap(),
	}
	ci.ActualDst = key.Dst
	host := ""
	if svc != nil {
		host = svc.Hostname
	}
	hdr := pod.connectHeaders(ci, src, host)
	cctx, cancel := context.WithTimeout(ctx, pod.p.cfg.ConnectTimeout)
	defer cancel()
	st, err := pod.pool.Connect(cctx, key, upAddr.String(), hdr)
	if err != nil {
		return nil, fmt.Errorf("HBONE connect to %s via %s: %w", upAddr, key.Dst, err)
	}
	return st, nil
}

// connectHeaders are the headers of an outbound CONNECT (ztunnel-behavior.md §2.2): forwarded
// (with the service hostname, if any), a new traceparent, and the source's baggage.
func (pod *podProxy) connectHeaders(ci *connInfo, src *workload.Workload, host string) http.Header {
	hdr := make(http.Header, 4)
	hdr[canonicalForwarded] = []string{hbone.Forwarded(ci.Src, host)}
	hdr[canonicalTraceparent] = []string{hbone.NewTraceparent()}
	if b := pod.baggage(src); b != "" {
		hdr[canonicalBaggage] = []string{b}
	}
	return hdr
}

// ownWorkload is Proxy.sourceWorkload with the pod's own entry (found by its ZDS identity,
// whatever ip is) remembered per snapshot, with its identity.
func (pod *podProxy) ownWorkload(ctx context.Context, ip netip.Addr) (*workload.Workload, error) {
	snap := pod.p.store.Load()
	if m := pod.own.Load(); m != nil && m.snap == snap {
		return m.w, nil
	}
	if w := pod.findOwn(snap); w != nil {
		pod.own.Store(&ownMemo{snap: snap, w: w, id: pod.p.identityOf(w).String()})
		return w, nil
	}
	return pod.p.sourceWorkload(ctx, pod, ip)
}

// ownMemo is the pod's own workload entry in one snapshot, and its identity.
type ownMemo struct {
	snap *workload.Snapshot
	w    *workload.Workload
	id   string // the SPIFFE identity of w
}

// identityString is the SPIFFE identity of w as a string; the pod's own is remembered.
func (pod *podProxy) identityString(w *workload.Workload) string {
	if m := pod.own.Load(); m != nil && m.w == w {
		return m.id
	}
	return pod.p.identityOf(w).String()
}

// selection is what resolve chose for a connection: the upstream to try first and, for a service,
// what another attempt chooses from.
type selection struct {
	up   upstream
	svc  *workload.Service // the service the connection is for, after routing; nil for a workload address
	port uint16            // the port of svc the connection is for
	plan *policyPlan       // the traffic-policy selection; nil when no policy names the service
	snap *workload.Snapshot
}

// resolve maps the original destination to a mesh upstream. A zero upstream means "not in the
// mesh": pass through. A service VIP with no endpoint left is an error, not a passthrough. A
// service that traffic policy names is routed and selected by it (selpolicy.go), any other by the
// reference's rules (select.go).
func (pod *podProxy) resolve(snap *workload.Snapshot, src *workload.Workload, dst netip.AddrPort) (selection, error) {
	network := src.Network
	addr := dst.Addr().Unmap()
	if svc := snap.ServiceByVIP(network, addr); svc != nil {
		sel := selection{svc: svc, port: dst.Port(), snap: snap}
		if svc.LoadBalancing != nil && svc.LoadBalancing.Mode == workload.LBModePassthrough {
			return sel, nil
		}
		if _, ok := svc.Ports[dst.Port()]; !ok {
			return sel, fmt.Errorf("service %s has no port %d", svc.Key(), dst.Port())
		}
		r, routed, err := routePolicy(snap, svc, dst.Port(), defaultRand)
		if err != nil {
			return sel, err
		}
		var ok bool
		if routed {
			sel.svc, sel.port = r.svc, r.port
			if _, has := r.svc.Ports[r.port]; !has {
				return sel, fmt.Errorf("traffic policy routes %s port %d to %s port %d, which that service does not have",
					svc.Key(), dst.Port(), r.svc.Key(), r.port)
			}
			sel.plan = policyPlans.get(snap, src, r)
			sel.up, ok = sel.plan.pick(pod.p.outliers, defaultRand)
			if ok && pod.p.gateways.isDown(sel.up.Workload) {
				// Its network gateway failed lately: another gateway or endpoint, if there is one.
				if up, found := sel.plan.pickAvoiding(pod.p.outliers, defaultRand, func(up upstream) bool {
					return pod.p.gateways.isDown(up.Workload)
				}); found {
					sel.up = up
				}
			}
		} else {
			sel.up, ok = selectEndpoint(snap, src, svc, dst.Port(), defaultRand)
			if ok && pod.p.gateways.isDown(sel.up.Workload) {
				sel.up, ok = selectEndpointAvoiding(snap, src, svc, dst.Port(), defaultRand, pod.p.gateways.isDown)
			}
		}
		if !ok {
			return sel, fmt.Errorf("no healthy upstream for service %s port %d%s%s", sel.svc.Key(), sel.port, strictHint(sel.svc), subsetHint(r, routed))
		}
		return sel, nil
	}
	if w := snap.WorkloadByAddr(network, addr); w != nil {
		return selection{up: upstream{Workload: w, Port: dst.Port()}, snap: snap}, nil
	}
	return selection{snap: snap}, nil
}

// subsetHint names the subset an empty selection was limited to.
func subsetHint(r policyRoute, routed bool) string {
	if !routed || r.subset == nil {
		return ""
	}
	return fmt.Sprintf(" (subset %q of destination rule %s matched no endpoint)", r.subset.Name, r.rule.Key())
}

func strictHint(svc *workload.Service) string {
	if lb := svc.LoadBalancing; lb != nil && lb.Mode == workload.LBModeStrict {
		names := make([]string, len(lb.RoutingPreference))
		for i, s := range lb.RoutingPreference {
			names[i] = s.String()
		}
		return " (strict routing preference [" + strings.Join(names, ",") + "] matched no endpoint)"
	}
	return ""
}

// pickIP chooses the address of w to connect to: the one the client dialed if it is w's,
// else w's first address of the same family, else its first address.
func pickIP(w *workload.Workload, dialed netip.Addr) (netip.Addr, bool) {
	if len(w.IPs) == 0 {
		return netip.Addr{}, false
	}
	dialed = dialed.Unmap()
	for _, ip := range w.IPs {
		if ip == dialed {
			return ip, true
		}
	}
	for _, ip := range w.IPs {
		if ip.Is4() == dialed.Is4() {
			return ip, true
		}
	}
	return w.IPs[0], true
}

// identitySet is the canonical form of the expected peer identities in a pool key.
func identitySet(ids []string) string {
	sort.Strings(ids)
	out := ids[:0]
	for i, id := range ids {
		if id != "" && (i == 0 || id != ids[i-1]) {
			out = append(out, id)
		}
	}
	return strings.Join(out, ",")
}

// The CONNECT headers in http.Header's canonical form, computed once (Header.Set would
// canonicalize them, with an allocation, for every connection).
var (
	canonicalForwarded   = http.CanonicalHeaderKey(hbone.HeaderForwarded)
	canonicalTraceparent = http.CanonicalHeaderKey(hbone.HeaderTraceparent)
	canonicalBaggage     = http.CanonicalHeaderKey(hbone.HeaderBaggage)
)

// baggageMemo is the baggage header of one source workload.
type baggageMemo struct {
	w   *workload.Workload
	val string
}

// baggage is baggage(w, cluster ID), remembered for the last workload asked about: a pod's
// connections nearly all come from its own workload, and a workload is an immutable part of
// a snapshot (a changed workload is a new pointer), so the pointer stands for its contents.
func (pod *podProxy) baggage(w *workload.Workload) string {
	if m := pod.lastBaggage.Load(); m != nil && m.w == w {
		return m.val
	}
	m := &baggageMemo{w: w, val: baggage(w, pod.p.cfg.ClusterID)}
	pod.lastBaggage.Store(m)
	return m.val
}

// baggage describes the source workload to the destination (ztunnel-behavior.md §2.2).
func baggage(w *workload.Workload, cluster string) string {
	if w.ClusterID != "" {
		cluster = w.ClusterID
	}
	kvs := []hbone.KV{{Key: "k8s.cluster.name", Value: cluster}, {Key: "k8s.namespace.name", Value: w.Namespace}}
	if w.WorkloadName != "" {
		typ := strings.ToLower(w.WorkloadType)
		if typ == "" {
			typ = "deployment"
		}
		kvs = append(kvs, hbone.KV{Key: "k8s." + typ + ".name", Value: w.WorkloadName})
	}
	return hbone.Baggage(append(kvs,
		hbone.KV{Key: "service.name", Value: w.CanonicalName},
		hbone.KV{Key: "service.version", Value: w.CanonicalRevision},
		hbone.KV{Key: "cloud.region", Value: w.Locality.Region},
		hbone.KV{Key: "cloud.availability_zone", Value: w.Locality.Zone},
	))
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
