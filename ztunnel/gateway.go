package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/relay"
	"github.com/ztunnel-go/ztunnel/workload"
)

// The east-west gateway (PROXY_MODE=east-west-gateway): the gateway of a network for the
// double-HBONE tunnels of clients on other networks, compatible with Istio's istio-east-west
// gateway class (multinetwork-and-policy.md §1.3). It listens on 15008 in its own namespace,
// terminates only the outer tunnel (mutual TLS with its own identity, a client of the mesh's trust
// domain required), maps the CONNECT authority — "<service hostname>:<port>", or a workload's
// "<ip>:<port>" — to an endpoint on its own network with the node proxy's endpoint selection, and
// relays the bytes as they are, as plain TCP, to <endpoint IP>:15008. The bytes are the inner
// tunnel's TLS: the gateway holds no key for them and cannot read them.

// gateway is the east-west gateway of a proxy in gateway mode.
type gateway struct {
	p   *Proxy
	id  certs.Identity
	pod *podProxy // the gateway's own "pod": its logger, connection tracker and caps
	srv *hbone.Server
	ln  net.Listener
	own map[netip.Addr]bool // the addresses of the gateway's namespace: an endpoint there is a loop
}

func newGateway(p *Proxy) *gateway {
	info := p.cfg.WorkloadInfo
	gw := &gateway{
		p:  p,
		id: certs.Identity{TrustDomain: p.cfg.TrustDomain, Namespace: info.Namespace, ServiceAccount: info.ServiceAccount},
		pod: &podProxy{p: p, info: info,
			log: p.log.With("component", "gateway", "pod", info.Namespace+"/"+info.Name)},
	}
	gw.pod.limitDone = gw.pod.releaseLimit
	return gw
}

// listen binds 15008, dual-stack where IPv6 is available.
func (gw *gateway) listen() error {
	var lc net.ListenConfig
	var ln net.Listener
	var err error
	if addr := gw.p.cfg.GatewayAddr; addr != "" {
		ln, err = lc.Listen(context.Background(), "tcp", addr)
	} else {
		ln, err = lc.Listen(context.Background(), "tcp", fmt.Sprintf("[::]:%d", HBONEPort))
		if err != nil && (errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL)) {
			ln, err = lc.Listen(context.Background(), "tcp4", fmt.Sprintf("0.0.0.0:%d", HBONEPort))
		}
	}
	if err != nil {
		return fmt.Errorf("east-west gateway: listen on %d: %w", HBONEPort, err)
	}
	gw.ln = ln
	gw.own = map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil {
				gw.own[pfx.Addr().Unmap()] = true
			}
		}
	}
	return nil
}

// run serves the listener until ctx is done. The caller drains with shutdown.
func (gw *gateway) run(ctx context.Context) error {
	release := gw.p.certs.Hold(gw.id)
	defer release()
	srv := &hbone.Server{
		Config: hbone.Config{
			StreamWindow: gw.p.cfg.StreamWindow,
			ConnWindow:   gw.p.cfg.ConnectionWindow,
			MaxFrameSize: gw.p.cfg.FrameSize,
			Logger:       gw.pod.log,
		},
		TLSConfig: certs.ServerTLSConfig(func(ctx context.Context) (*certs.WorkloadCert, error) {
			return gw.p.certs.Get(ctx, gw.id)
		}),
		Handler:          hbone.HandlerFunc(gw.serve),
		HandshakeTimeout: gw.p.cfg.HandshakeTimeout,
		Handshakes:       gw.p.handshakes,
		OnRefused:        gw.pod.handshakeRefused,
	}
	gw.p.gwMu.Lock()
	gw.srv = srv
	gw.p.gwMu.Unlock()
	gw.p.ready.unblock(taskWorkloadManager) // no pods to wait for
	gw.pod.log.Info("east-west gateway listening", "address", gw.ln.Addr().String(), "identity", gw.id.String(),
		"network", gw.p.cfg.Network)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(gw.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, hbone.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("east-west gateway: %w", err)
	case <-ctx.Done():
		return nil
	}
}

// shutdown stops taking tunnels and lets open ones finish until ctx is done, then closes them.
func (gw *gateway) shutdown(ctx context.Context) {
	gw.p.gwMu.Lock()
	srv := gw.srv
	gw.p.gwMu.Unlock()
	if srv == nil {
		if gw.ln != nil {
			gw.ln.Close()
		}
		return
	}
	if err := srv.Shutdown(ctx); err != nil {
		gw.pod.conns.endAll(errDrainDeadline)
	}
}

// serve forwards one outer tunnel: authority → an endpoint of this network → plain TCP to its 15008.
func (gw *gateway) serve(ctx context.Context, r *hbone.Request) {
	pod := gw.pod
	if reason := gw.p.limits.acquire(pod, listenerHBONE); reason != "" {
		r.Reject(http.StatusServiceUnavailable, "connection cap reached ("+reason+")")
		return
	}
	ci := &connInfo{Direction: "inbound", Protocol: "HBONE", Start: time.Now(), Src: addrPort(r.RemoteAddr), HBONEAddr: r.Authority}
	if m := pod.peerOf(r.TLS); m.ok {
		ci.SrcIdentity = m.str
	}
	connCtx, cancel := context.WithCancelCause(context.Background())
	tc := &trackedConn{cancel: cancel}
	end := &connEnd{untrack: pod.conns.track(tc), cancel: cancel, release: pod.limitDone}

	up, code, err := gw.connectEndpoint(ctx, ci)
	if err != nil {
		r.Reject(code, err.Error())
		pod.finish(ci, relay.Result{}, err)
		end.run()
		return
	}
	st, err := r.Accept(nil)
	if err != nil {
		up.Close()
		pod.finish(ci, relay.Result{}, fmt.Errorf("accept HBONE stream: %w", err))
		end.run()
		return
	}
	pod.relay(connCtx, tc, ci, st, up, end)
}

// connectEndpoint resolves the tunnel's authority to an endpoint on the gateway's network and
// dials its HBONE port, or returns the status to reject the tunnel with.
func (gw *gateway) connectEndpoint(ctx context.Context, ci *connInfo) (net.Conn, int, error) {
	host, port, err := hbone.ParseAuthority(ci.HBONEAddr)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("bad :authority %q: %w", ci.HBONEAddr, err)
	}
	snap := gw.p.store.Load()
	var target *workload.Workload
	if ip, err := netip.ParseAddr(host); err == nil {
		// A workload address: only one of this network's own workloads.
		target = snap.WorkloadByAddr(gw.p.cfg.Network, ip.Unmap())
		if target == nil {
			return nil, http.StatusBadRequest, fmt.Errorf("no workload %s on network %q", ip, gw.p.cfg.Network)
		}
	} else {
		svc := snap.ServiceByHostname(host)
		if svc == nil {
			return nil, http.StatusBadRequest, fmt.Errorf("no service %q", host)
		}
		ci.DstService, ci.DstSvc = svc.Key(), svc
		up, ok := selectEndpointAvoiding(snap, gw.self(snap), svc, port, defaultRand, gw.notLocal)
		if !ok || gw.notLocal(up.Workload) {
			// The others are behind other gateways: a gateway never forwards to a gateway.
			return nil, http.StatusServiceUnavailable, fmt.Errorf("service %s has no endpoint on network %q for port %d", svc.Key(), gw.p.cfg.Network, port)
		}
		target = up.Workload
	}
	ci.DstWorkload = target
	ci.DstIdentity = gw.p.identityOf(target).String()
	ip, ok := pickIP(target, netip.Addr{})
	if !ok || gw.notLocal(target) {
		return nil, http.StatusServiceUnavailable, fmt.Errorf("workload %s is not reachable on network %q", target.UID, gw.p.cfg.Network)
	}
	dst := netip.AddrPortFrom(ip, HBONEPort)
	if gw.own[ip.Unmap()] {
		return nil, http.StatusServiceUnavailable, fmt.Errorf("endpoint %s is this gateway itself (a loop)", dst)
	}
	ci.Dst, ci.ActualDst = netip.AddrPortFrom(ip, port), dst
	gw.pod.opened(ci)
	// A nil *NetNS dials in the calling thread's namespace: the gateway's own.
	c, err := (*redirect.NetNS)(nil).DialAddrPort(ctx, "tcp", dst, redirect.SocketOptions{NoDelay: true,
		KeepAlive: 180 * time.Second, ConnectTimeout: gw.p.cfg.ConnectTimeout})
	if err != nil {
		return nil, http.StatusServiceUnavailable, fmt.Errorf("connect to %s: %w", dst, err)
	}
	return c, http.StatusOK, nil
}

// self is the gateway's own workload, for the endpoint selection's locality; a workload of the
// gateway's network if it is not in the config.
func (gw *gateway) self(snap *workload.Snapshot) *workload.Workload {
	info := gw.p.cfg.WorkloadInfo
	if w := snap.FindWorkload("", info.Namespace, info.Name, info.ServiceAccount); w != nil {
		return w
	}
	return &workload.Workload{UID: "gateway", Namespace: info.Namespace, Network: gw.p.cfg.Network}
}

// notLocal reports endpoints the gateway must not forward to: those of other networks, or without
// an address (behind another gateway).
func (gw *gateway) notLocal(w *workload.Workload) bool {
	return w.Network != gw.p.cfg.Network || len(w.IPs) == 0
}
