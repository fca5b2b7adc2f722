package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/workload"
)

// Double HBONE (ztunnel-behavior.md §2.7, multinetwork-and-policy.md §1.2): an endpoint on another
// network is reached through that network's gateway. The outer tunnel goes to the gateway (pooled,
// our pod's certificate, the gateway's identity verified) with the authority
// "<service hostname>:<service port>"; inside it, a second TLS handshake, end to end with the
// destination's proxy, verifies the service's subject_alt_names, and a CONNECT of its own (same
// authority, plus x-forwarded-network) reaches the destination. The gateway relays the inner bytes
// and cannot read them.

// gatewayRetry is how long a network gateway that could not be reached is avoided, when another
// gateway or endpoint can serve the connection.
const gatewayRetry = 30 * time.Second

// errGatewayDown marks the connect errors of an unreachable gateway (see gatewayHealth).
var errGatewayDown = errors.New("network gateway unreachable")

// connectThroughGateway opens the double-HBONE tunnel to target, an endpoint of svc on another
// network, for the connection ci from src to dst.
func (pod *podProxy) connectThroughGateway(ctx context.Context, ci *connInfo, src *workload.Workload,
	svc *workload.Service, target upstream, svcPort uint16) (net.Conn, error) {
	w := target.Workload
	if svc == nil {
		return nil, fmt.Errorf("destination %s is on network %q: a workload on another network is reachable only through a service (the gateway routes on the service hostname)", w.UID, w.Network)
	}
	if w.NetworkGateway == nil {
		return nil, &setupError{fmt.Errorf("destination %s of service %s is on network %q and has no network gateway", w.UID, svc.Key(), w.Network)}
	}
	if len(svc.SubjectAltNames) == 0 {
		return nil, fmt.Errorf("service %s has no subject_alt_names: the remote endpoint of a double-HBONE tunnel could not be verified", svc.Key())
	}
	gw, err := pod.p.resolveGateway(pod.p.store.Load(), src, w.NetworkGateway)
	if err != nil {
		return nil, &setupError{fmt.Errorf("destination %s on network %q: %w", w.UID, w.Network, err)}
	}
	ci.Protocol = protocolDoubleHBONE
	ci.SrcIdentity = pod.identityString(src)
	ci.DstIdentity = svc.SubjectAltNames[0]
	authority := svc.Hostname + ":" + strconv.Itoa(int(svcPort))
	ci.HBONEAddr, ci.ActualDst = authority, gw.addr
	hdr := pod.connectHeaders(ci, src, svc.Hostname)
	outerKey := hbone.Key{
		SrcIdentity:   ci.SrcIdentity,
		DstIdentities: identitySet(gw.identities),
		Dst:           gw.addr,
		SrcIP:         ci.Src.Addr().Unmap(),
	}
	cctx, cancel := context.WithTimeout(ctx, pod.p.cfg.ConnectTimeout)
	defer cancel()
	outer, err := pod.pool.Connect(cctx, outerKey, authority, hdr)
	if err != nil {
		var se *hbone.StatusError
		if !errors.As(err, &se) && ctx.Err() == nil {
			pod.p.gateways.markDown(w.NetworkGateway.Destination())
			err = fmt.Errorf("%w: %w", errGatewayDown, err)
		}
		return nil, fmt.Errorf("double HBONE to %s: outer CONNECT to network gateway %s (%s): %w", authority, gw.addr, w.NetworkGateway.Destination(), err)
	}
	tlsCfg, err := pod.clientTLS(cctx, hbone.Key{SrcIdentity: ci.SrcIdentity, DstIdentities: identitySet(svc.SubjectAltNames)})
	if err != nil {
		outer.Close()
		return nil, fmt.Errorf("double HBONE to %s: %w", authority, err) // a localError
	}
	inner := hdr.Clone()
	inner[canonicalForwardedNetwork] = []string{pod.p.cfg.Network}
	st, err := hbone.ConnectThrough(cctx, outer, tlsCfg, pod.h2, authority, inner)
	if err != nil {
		return nil, fmt.Errorf("double HBONE to %s via network gateway %s: %w", authority, gw.addr, err)
	}
	return st, nil
}

// resolvedGateway is a network gateway to dial: its address and the identities it may present.
type resolvedGateway struct {
	addr       netip.AddrPort
	identities []string
}

// resolveGateway finds the address and the expected identities of a network gateway: an address
// gateway is the workload at that address; a hostname gateway is a service, load-balanced like any
// other on its HBONE port. The gateway's workload must be known (its identity is what the outer TLS
// verifies) and have an address (a gateway reached through another gateway would loop).
func (p *Proxy) resolveGateway(snap *workload.Snapshot, src *workload.Workload, g *workload.GatewayAddress) (resolvedGateway, error) {
	port := g.HBONEMTLSPort
	if port == 0 {
		port = HBONEPort
	}
	var gw *workload.Workload
	var svcSANs []string
	switch {
	case g.Address != nil:
		gw = snap.WorkloadByAddr(g.Address.Network, g.Address.Addr)
		if gw == nil {
			return resolvedGateway{}, fmt.Errorf("network gateway %s is not a known workload (its identity cannot be verified)", g.Destination())
		}
	case g.Hostname != nil:
		svc := snap.ServiceByHost(g.Hostname.Namespace, g.Hostname.Hostname)
		if svc == nil {
			return resolvedGateway{}, fmt.Errorf("network gateway %s: no such service", g.Destination())
		}
		up, ok := selectEndpoint(snap, src, svc, port, defaultRand)
		if !ok {
			return resolvedGateway{}, fmt.Errorf("network gateway %s: no endpoint serves port %d", g.Destination(), port)
		}
		gw, svcSANs = up.Workload, svc.SubjectAltNames
	default:
		return resolvedGateway{}, errors.New("network gateway has neither an address nor a hostname")
	}
	ip, ok := pickIP(gw, netip.Addr{})
	if g.Address != nil {
		ip, ok = g.Address.Addr, true
	}
	if !ok {
		return resolvedGateway{}, fmt.Errorf("network gateway %s resolves to workload %s, which has no address (a gateway behind another gateway would loop)", g.Destination(), gw.UID)
	}
	ids := append([]string{p.identityOf(gw).String()}, svcSANs...)
	return resolvedGateway{addr: netip.AddrPortFrom(ip, port), identities: ids}, nil
}

// gatewayHealth remembers the network gateways that could not be reached lately, so that endpoint
// selection avoids them while another gateway or endpoint can serve (beyond the reference, which
// tries the same gateway again for every connection).
type gatewayHealth struct {
	mu   sync.Mutex
	down map[string]time.Time // gateway destination → until when to avoid it; guarded by mu
}

func (h *gatewayHealth) markDown(dest string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down == nil {
		h.down = map[string]time.Time{}
	}
	h.down[dest] = time.Now().Add(gatewayRetry)
}

// isDown reports whether w is reached through a gateway that failed lately.
func (h *gatewayHealth) isDown(w *workload.Workload) bool {
	if w.NetworkGateway == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	until, ok := h.down[w.NetworkGateway.Destination()]
	if ok && time.Now().After(until) {
		delete(h.down, w.NetworkGateway.Destination())
		return false
	}
	return ok
}

// protocolDoubleHBONE is connInfo.Protocol of a double-HBONE connection (the config dump's
// connection state shows it as the reference does).
const protocolDoubleHBONE = "DOUBLEHBONE"

// canonicalForwardedNetwork is x-forwarded-network in http.Header's canonical form.
var canonicalForwardedNetwork = http.CanonicalHeaderKey(hbone.HeaderForwardedNetwork)
