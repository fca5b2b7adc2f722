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
)

// serveHBONE handles one CONNECT stream that arrived on the pod's port 15008:
// validate the target → dial the pod's application from the client's address → 200 → splice.
// Status codes as the reference (ztunnel-behavior.md §2.2): 400 for a bad target, 503 when the
// application cannot be reached or the port is a proxy port.
func (pod *podProxy) serveHBONE(ctx context.Context, r *hbone.Request) {
	ci := &connInfo{Direction: "inbound", Protocol: "HBONE", Start: time.Now(),
		Src: addrPort(r.RemoteAddr), HBONEAddr: r.Authority}
	if id, err := certs.PeerIdentity(r.TLS); err == nil {
		ci.SrcIdentity = id.String()
	}
	code, up, err := pod.connectInbound(ctx, r, ci)
	if err != nil {
		r.Reject(code, err.Error())
		logConn(pod.log, ci, spliceResult{}, err)
		return
	}
	st, err := r.Accept(nil)
	if err != nil {
		up.Close()
		logConn(pod.log, ci, spliceResult{}, fmt.Errorf("accept HBONE stream: %w", err))
		return
	}
	res := splice(pod.ctx, st, up)
	logConn(pod.log, ci, res, nil)
}

func (pod *podProxy) connectInbound(ctx context.Context, r *hbone.Request, ci *connInfo) (int, net.Conn, error) {
	host, port, err := hbone.ParseAuthority(r.Authority)
	if err != nil {
		return http.StatusBadRequest, nil, fmt.Errorf("bad :authority %q: %w", r.Authority, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return http.StatusBadRequest, nil, fmt.Errorf("hostname :authority %q is not supported without a waypoint", r.Authority)
	}
	ip = ip.Unmap()
	// The tunnel was dialed to this pod's address; the target must be the same pod.
	local := addrPort(r.LocalAddr).Addr()
	if ip != local {
		return http.StatusBadRequest, nil, fmt.Errorf("target %s does not match the address the tunnel reached (%s)", ip, local)
	}
	ci.Dst = netip.AddrPortFrom(ip, port)
	if illegalPort(port) {
		return http.StatusServiceUnavailable, nil, fmt.Errorf("refusing connection to proxy port %d (would loop)", port)
	}
	snap := pod.p.store.Load()
	if w := snap.WorkloadByAddr(pod.p.cfg.Network, ip); w != nil {
		ci.DstWorkload = w
		ci.DstIdentity = pod.p.identityOf(w).String()
	}
	if w := snap.WorkloadByAddr(pod.p.cfg.Network, ci.Src.Addr()); w != nil {
		ci.SrcWorkload = w
	}
	if h := hbone.ForwardedHost(r.Header.Get(hbone.HeaderForwarded)); h != "" {
		ci.DstService = h
	}
	up, err := pod.dialApp(ctx, ci.Src.Addr(), ci.Dst)
	if err != nil {
		return http.StatusServiceUnavailable, nil, fmt.Errorf("connect to application %s: %w", ci.Dst, err)
	}
	return http.StatusOK, up, nil
}

// handleInboundPlaintext proxies a plaintext connection the pod's redirection sent to port
// 15006: the original destination is the pod itself.
func (pod *podProxy) handleInboundPlaintext(c net.Conn) {
	ci := &connInfo{Direction: "inbound", Protocol: "TCP", Start: time.Now(), Src: addrPort(c.RemoteAddr())}
	up, err := pod.connectPlaintext(c, ci)
	if err != nil {
		resetClose(c)
		logConn(pod.log, ci, spliceResult{}, err)
		return
	}
	res := splice(pod.ctx, c, up)
	logConn(pod.log, ci, res, nil)
}

func (pod *podProxy) connectPlaintext(c net.Conn, ci *connInfo) (net.Conn, error) {
	dst, err := redirect.OriginalDst(c)
	if err != nil {
		return nil, fmt.Errorf("original destination: %w", err)
	}
	ci.Dst = dst
	if illegalPort(dst.Port()) {
		return nil, fmt.Errorf("refusing plaintext connection to proxy port %d", dst.Port())
	}
	snap := pod.p.store.Load()
	ci.DstWorkload = snap.WorkloadByAddr(pod.p.cfg.Network, dst.Addr())
	ci.SrcWorkload = snap.WorkloadByAddr(pod.p.cfg.Network, ci.Src.Addr())
	return pod.dialApp(pod.ctx, ci.Src.Addr(), dst)
}

// dialApp connects to the pod's application, preserving the client's source address when the
// kernel allows it (ENABLE_ORIG_SRC unset = best effort, true = required, false = never).
func (pod *podProxy) dialApp(ctx context.Context, client netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	want := pod.p.cfg.OrigSrc
	if want != nil && !*want || !client.IsValid() || client == dst.Addr() {
		return pod.dial(ctx, "tcp", dst.String(), netip.AddrPort{})
	}
	c, err := pod.dial(ctx, "tcp", dst.String(), netip.AddrPortFrom(client, 0))
	if err == nil || want != nil || !spoofRefused(err) {
		return c, err
	}
	pod.log.Debug("source-preserving dial failed, using the pod address", "error", err)
	return pod.dial(ctx, "tcp", dst.String(), netip.AddrPort{})
}

// spoofRefused reports errors that mean the kernel would not let us use the client's address.
func spoofRefused(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) ||
		errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EINVAL)
}
