package ztunnel

import (
	"context"
	"crypto/tls"
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

// serveHBONE handles one CONNECT stream that arrived on the pod's port 15008:
// validate the target → authorize → dial the pod's application from the client's address →
// 200 → relay. Status codes as the reference (ztunnel-behavior.md §2.2): 400 for a bad
// target, 401 when a policy denies, 503 when the application cannot be reached or the port is
// a proxy port. The connection stays subject to policy changes while it is open.
//
// It returns once the connection is set up (the relay carries it on); the connection's end is
// recorded when it really ends.
func (pod *podProxy) serveHBONE(ctx context.Context, r *hbone.Request) {
	if reason := pod.p.limits.acquire(pod, listenerHBONE); reason != "" {
		r.Reject(http.StatusServiceUnavailable, "connection cap reached ("+reason+")")
		return
	}
	ci := &connInfo{Direction: "inbound", Protocol: "HBONE", Start: time.Now(),
		Src: addrPort(r.RemoteAddr), HBONEAddr: r.Authority}
	var peer *certs.Identity
	if m := pod.peerOf(r.TLS); m.ok {
		ci.SrcIdentity, peer = m.str, &m.id
	}
	connCtx, cancel := context.WithCancelCause(context.Background()) // pod.stop ends it: see connTracker
	tc := &trackedConn{cancel: cancel}
	end := &connEnd{untrack: pod.conns.track(tc), cancel: cancel, release: pod.limitDone}

	code, err := pod.checkInbound(ctx, r, ci, tc, peer)
	var up net.Conn
	if err == nil {
		if up, err = pod.dialApp(ctx, ci.Src.Addr(), ci.Dst); err != nil {
			code, err = http.StatusServiceUnavailable, fmt.Errorf("connect to application %s: %w", ci.Dst, err)
		}
	}
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

// peerMemo is the verified identity of the client of one HBONE connection.
type peerMemo struct {
	tls *tls.ConnectionState // the connection's; shared by its streams
	id  certs.Identity
	str string // id.String()
	ok  bool   // the certificate has an identity
}

// peerOf returns the client identity of a TLS connection, remembered for the last connection
// asked about: the streams of one connection share its *tls.ConnectionState, so the certificate
// is read once per connection rather than per stream. The memo is immutable once stored.
func (pod *podProxy) peerOf(cs *tls.ConnectionState) *peerMemo {
	if m := pod.lastPeer.Load(); m != nil && m.tls == cs && cs != nil {
		return m
	}
	m := &peerMemo{tls: cs}
	if id, err := certs.PeerIdentity(cs); err == nil {
		m.id, m.str, m.ok = id, id.String(), true
	}
	pod.lastPeer.Store(m)
	return m
}

// relay publishes an established connection to the connection tracker (config dump) and hands it
// to the relay; once it has ended, its end is recorded and end runs.
func (pod *podProxy) relay(ctx context.Context, tc *trackedConn, ci *connInfo, down, up net.Conn, end *connEnd) {
	pod.conns.set(tc, ci.view())
	pod.p.relay.Run(ctx, down, up, func(res relay.Result) {
		pod.finish(ci, res, nil)
		end.run()
	})
}

// connEnd is what is left to do when a connection has ended, in this order: untrack it,
// cancel its context, uncount its socket, release its handler's slot (each if set).
type connEnd struct {
	untrack, closed, release func()
	cancel                   context.CancelCauseFunc
}

func (e *connEnd) run() {
	if e.untrack != nil {
		e.untrack()
	}
	if e.cancel != nil {
		e.cancel(nil)
	}
	if e.closed != nil {
		e.closed()
	}
	if e.release != nil {
		e.release()
	}
}

// checkInbound validates the target of an inbound HBONE stream and authorizes it, or returns
// the status to reject it with.
func (pod *podProxy) checkInbound(ctx context.Context, r *hbone.Request, ci *connInfo, tc *trackedConn, peer *certs.Identity) (int, error) {
	host, port, err := hbone.ParseAuthority(r.Authority)
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("bad :authority %q: %w", r.Authority, err)
	}
	local := addrPort(r.LocalAddr).Addr()
	if h := hbone.ForwardedHost(r.Header.Get(hbone.HeaderForwarded)); h != "" {
		ci.DstService = h
	}
	if fn := r.Header.Get(hbone.HeaderForwardedNetwork); fn != "" && fn != pod.p.cfg.Network {
		ci.FromNetwork = fn // relayed by a network gateway: the TCP peer is the gateway, not the client
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		// The tunnel was dialed to this pod's address; the target must be the same pod.
		if ip = ip.Unmap(); ip != local {
			return http.StatusBadRequest, fmt.Errorf("target %s does not match the address the tunnel reached (%s)", ip, local)
		}
	} else {
		// A service hostname (the inner tunnel of double HBONE, relayed by a network gateway): the
		// target is this pod, on its port for that service port.
		target, err := pod.hostnameTarget(ctx, local, host, port)
		if err != nil {
			return http.StatusServiceUnavailable, err
		}
		ci.DstService, port = host, target
	}
	ci.Dst = netip.AddrPortFrom(local, port)
	if illegalPort(port) {
		return http.StatusServiceUnavailable, fmt.Errorf("refusing connection to proxy port %d (would loop)", port)
	}
	if err := pod.admit(ctx, ci, tc, peer); err != nil {
		if _, denied := err.(*policyError); denied {
			return http.StatusUnauthorized, err
		}
		return http.StatusServiceUnavailable, err
	}
	ci.ActualDst = ci.Dst
	return http.StatusOK, nil
}

// hostnameTarget is the port of this pod (reached at local) that a tunnel for host:port goes to: the
// pod's own mapping of that port of the service named host, else the service's target port.
func (pod *podProxy) hostnameTarget(ctx context.Context, local netip.Addr, host string, port uint16) (uint16, error) {
	w, err := pod.ownWorkload(ctx, local)
	if err != nil {
		return 0, fmt.Errorf("unknown destination workload: %w", err)
	}
	snap := pod.p.store.Load()
	for key, ports := range w.Services {
		nh, err := workload.ParseNamespacedHostname(key)
		if err != nil || nh.Hostname != host {
			continue
		}
		if p := ports[port]; p != 0 {
			return p, nil
		}
		if svc := snap.ServiceByHost(nh.Namespace, host); svc != nil && svc.Ports[port] != 0 {
			return svc.Ports[port], nil
		}
		return 0, fmt.Errorf("service %s has no port %d for workload %s", key, port, w.UID)
	}
	return 0, fmt.Errorf("workload %s is not an endpoint of a service %q", w.UID, host)
}

// admit finds the pod's own workload (waiting briefly if the pod is newer than the config) and
// the client's, and applies the pod's authorization policies. tc must already be tracked. The
// connection is registered for policy re-checks before the snapshot it is authorized against is
// loaded: a policy push at any moment is either in that snapshot or re-checks the connection.
func (pod *podProxy) admit(ctx context.Context, ci *connInfo, tc *trackedConn, peer *certs.Identity) error {
	dst, err := pod.ownWorkload(ctx, ci.Dst.Addr())
	if err != nil {
		return fmt.Errorf("unknown destination workload: %w", err)
	}
	c := authzConn(ci.Src, ci.Dst, peer)
	pod.conns.setPolicy(tc, c, dst.UID)
	if testHookAdmitRegistered != nil {
		testHookAdmitRegistered()
	}
	snap := pod.p.store.Load()
	if w := snap.WorkloadByUID(dst.UID); w != nil {
		dst = w
	}
	ci.DstWorkload = dst
	ci.DstIdentity = pod.identityString(dst)
	if ci.FromNetwork == "" { // a gateway's address says nothing about the client
		ci.SrcWorkload = snap.WorkloadByAddr(pod.p.cfg.Network, ci.Src.Addr())
	}
	ci.DstSvc = guessInboundService(snap, dst, ci.DstService, ci.Dst.Port())
	pod.opened(ci)
	return authorize(snap, dst, c)
}

// testHookAdmitRegistered, if set (by tests only), runs in admit between registering the
// connection for policy re-checks and loading the snapshot it is authorized against.
var testHookAdmitRegistered func()

// handleInboundPlaintext proxies a plaintext connection the pod's redirection sent to port
// 15006: the original destination is the pod itself. There is no peer identity, so only
// policies that allow unauthenticated clients let it through.
func (pod *podProxy) handleInboundPlaintext(c net.Conn, release func()) {
	ci := &connInfo{Direction: "inbound", Protocol: "TCP", Start: time.Now(), Src: addrPort(c.RemoteAddr())}
	connCtx, cancel := context.WithCancelCause(context.Background()) // pod.stop ends it: see connTracker
	tc := &trackedConn{cancel: cancel}
	end := &connEnd{closed: pod.socketOpened(reporterDestination), untrack: pod.conns.track(tc), cancel: cancel, release: release}

	up, err := pod.connectPlaintext(c, ci, tc)
	if err != nil {
		pod.refuse(c, ci, err)
		end.run()
		return
	}
	pod.relay(connCtx, tc, ci, c, up, end)
}

// refuse resets c and records why it was not proxied.
func (pod *podProxy) refuse(c net.Conn, ci *connInfo, err error) {
	relay.ResetClose(c)
	pod.finish(ci, relay.Result{}, err)
}

func (pod *podProxy) connectPlaintext(c net.Conn, ci *connInfo, tc *trackedConn) (net.Conn, error) {
	dst, err := redirect.OriginalDst(c)
	if err != nil {
		return nil, fmt.Errorf("original destination: %w", err)
	}
	ci.Dst = dst
	if illegalPort(dst.Port()) {
		return nil, fmt.Errorf("refusing plaintext connection to proxy port %d", dst.Port())
	}
	if err := pod.admit(pod.ctx, ci, tc, nil); err != nil {
		return nil, err
	}
	ci.ActualDst = dst
	return pod.dialApp(pod.ctx, ci.Src.Addr(), dst)
}

// dialApp connects to the pod's application, preserving the client's source address when the
// kernel allows it (ENABLE_ORIG_SRC unset = best effort, true = required, false = never).
func (pod *podProxy) dialApp(ctx context.Context, client netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	want := pod.p.cfg.OrigSrc
	if want != nil && !*want || !client.IsValid() || client == dst.Addr() {
		return pod.ns.DialAddrPort(ctx, "tcp", dst, pod.socketOptions(netip.AddrPort{}))
	}
	c, err := pod.ns.DialAddrPort(ctx, "tcp", dst, pod.socketOptions(netip.AddrPortFrom(client, 0)))
	if err == nil || want != nil || !spoofRefused(err) {
		return c, err
	}
	pod.log.Debug("source-preserving dial failed, using the pod address", "error", err)
	return pod.ns.DialAddrPort(ctx, "tcp", dst, pod.socketOptions(netip.AddrPort{}))
}

// spoofRefused reports errors that mean the kernel would not let us use the client's address.
func spoofRefused(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) ||
		errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EINVAL)
}
