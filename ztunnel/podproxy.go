package ztunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
	"github.com/ztunnel-go/ztunnel/relay"
	"github.com/ztunnel-go/ztunnel/workload"
)

// podProxy is the proxy of one enrolled pod: three listeners bound inside the pod's network
// namespace (outbound 15001, plaintext inbound 15006, HBONE inbound 15008), an HBONE client
// pool, and every connection they carry. Every socket it opens lives in the pod's namespace
// and carries the proxy mark, so the pod's redirection rules let it through.
type podProxy struct {
	p    *Proxy
	uid  string
	info zds.WorkloadInfo
	ns   *redirect.NetNS
	log  *slog.Logger

	outbound, inbound, hboneLn net.Listener
	hboneSrv                   *hbone.Server
	pool                       *hbone.Pool
	h2                         hbone.Config                // the HTTP/2 settings of its tunnels (and of inner double-HBONE tunnels)
	conns                      connTracker                 // live connections: dumps, re-authorization, forced drain
	lastBaggage                atomic.Pointer[baggageMemo] // outbound: see podProxy.baggage
	lastPeer                   atomic.Pointer[peerMemo]    // inbound: see podProxy.peerOf
	own                        atomic.Pointer[ownMemo]     // see podProxy.ownWorkload
	open                       atomic.Int64                // connections counted against the caps (limits.go)
	connDone, limitDone        func()                      // the bound connDone and limitDone methods

	ctx    context.Context // cancelled when the pod's connections must end (removal, forced drain): see stop
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // accept loops and connection handlers: what a drain waits for
	bg     sync.WaitGroup // background work that lives until ctx ends (policy watcher)
}

func startPod(p *Proxy, uid string, info zds.WorkloadInfo, ns *redirect.NetNS) (*podProxy, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	pod := &podProxy{
		p: p, uid: uid, info: info, ns: ns, ctx: ctx, cancel: cancel,
		log: p.log.With("pod", info.Namespace+"/"+info.Name),
	}
	pod.connDone, pod.limitDone = pod.connEnded, pod.releaseLimit
	lnOpts := redirect.SocketOptions{ReusePort: *p.cfg.PortReuse, Mark: p.cfg.PacketMark}
	var err error
	if pod.outbound, err = pod.listen(OutboundPort, lnOpts); err != nil {
		return nil, pod.abortStart(err)
	}
	if pod.inbound, err = pod.listen(InboundPort, lnOpts); err != nil {
		return nil, pod.abortStart(err)
	}
	if pod.hboneLn, err = pod.listen(HBONEPort, lnOpts); err != nil {
		return nil, pod.abortStart(err)
	}

	h2 := hbone.Config{
		StreamWindow: p.cfg.StreamWindow,
		ConnWindow:   p.cfg.ConnectionWindow,
		MaxFrameSize: p.cfg.FrameSize,
		Logger:       pod.log.With("component", "hbone"),
	}
	pod.h2 = h2
	pod.pool = hbone.NewPool(hbone.PoolConfig{
		Config:            h2,
		MaxStreamsPerConn: p.cfg.PoolMaxStreams,
		SpreadConns:       p.cfg.PoolSpreadConns,
		IdleTimeout:       p.cfg.PoolUnusedRelease,
		Dial:              pod.dialTunnel,
		TLSConfig:         pod.clientTLS,
	})
	pod.hboneSrv = &hbone.Server{
		Config:           h2,
		TLSConfig:        certs.ServerTLSConfig(pod.serverCert),
		Handler:          hbone.HandlerFunc(pod.serveHBONE),
		HandshakeTimeout: p.cfg.HandshakeTimeout,
		Handshakes:       p.handshakes,
		OnRefused:        pod.handshakeRefused,
	}

	allowListenerMigration(ns, pod.log)
	pod.bg.Add(1)
	go pod.watchPolicies()
	pod.goAccept(pod.outbound, listenerOutbound, pod.handleOutbound)
	pod.goAccept(pod.inbound, listenerInbound, pod.handleInboundPlaintext)
	pod.wg.Add(1)
	go func() {
		defer pod.wg.Done()
		if err := pod.hboneSrv.Serve(countingListener{pod.hboneLn, pod}); err != nil && !errors.Is(err, net.ErrClosed) && pod.ctx.Err() == nil {
			pod.log.Error("HBONE listener stopped", "error", err)
		}
	}()
	return pod, nil
}

// countingListener counts the HBONE sockets it accepts in istio_tcp_sockets_open until they
// close (the hbone server owns those connections, so the count is kept on the socket).
type countingListener struct {
	net.Listener
	pod *podProxy
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, closed: sync.OnceFunc(l.pod.socketOpened(reporterDestination))}, nil
}

type countedConn struct {
	net.Conn
	closed func()
}

func (c *countedConn) Close() error {
	c.closed()
	return c.Conn.Close()
}

// NetConn returns the socket, so that the HBONE server can reset it (a connection over its
// handshake caps is reset, not closed).
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// listen binds port on the wildcard address inside the pod, dual-stack when IPv6 is enabled
// and available there.
func (pod *podProxy) listen(port uint16, o redirect.SocketOptions) (net.Listener, error) {
	if *pod.p.cfg.IPv6 {
		ln, err := pod.ns.Listen(pod.ctx, "tcp", fmt.Sprintf("[::]:%d", port), o)
		if err == nil {
			return ln, nil
		}
		if !errors.Is(err, syscall.EAFNOSUPPORT) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, fmt.Errorf("listen on port %d in pod netns %s: %w", port, pod.ns, err)
		}
	}
	ln, err := pod.ns.Listen(pod.ctx, "tcp4", fmt.Sprintf("0.0.0.0:%d", port), o)
	if err != nil {
		return nil, fmt.Errorf("listen on port %d in pod netns %s: %w", port, pod.ns, err)
	}
	return ln, nil
}

func (pod *podProxy) abortStart(err error) error {
	pod.cancel(err)
	for _, ln := range []net.Listener{pod.outbound, pod.inbound, pod.hboneLn} {
		if ln != nil {
			ln.Close()
		}
	}
	return err
}

// goAccept runs an accept loop that hands each connection to handle on its own goroutine, unless
// a connection cap is reached: then the connection is reset at once (limits.go). handle must call
// release exactly once, when it is completely done with the connection (which may be after it
// returned): a drain waits for that, and the connection is uncounted.
func (pod *podProxy) goAccept(ln net.Listener, listener int, handle func(c net.Conn, release func())) {
	pod.wg.Add(1)
	go func() {
		defer pod.wg.Done()
		var backoff time.Duration
		for {
			c, err := ln.Accept()
			if err != nil {
				if pod.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				// Temporary failures (EMFILE...): back off like net/http does, never spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				pod.log.Warn("accept failed", "listener", ln.Addr().String(), "error", err)
				time.Sleep(backoff)
				continue
			}
			backoff = 0
			if pod.p.limits.acquire(pod, listener) != "" {
				relay.ResetClose(c)
				continue
			}
			pod.wg.Add(1)
			go handle(c, pod.connDone)
		}
	}()
}

// connEnded is the release of a connection accepted by goAccept.
func (pod *podProxy) connEnded() {
	pod.p.limits.release(pod)
	pod.wg.Done()
}

// releaseLimit is the release of an HBONE connection counted by serveHBONE.
func (pod *podProxy) releaseLimit() { pod.p.limits.release(pod) }

// close stops the pod at once: the pod is gone, so its connections are ended without waiting and
// its HBONE connections closed.
func (pod *podProxy) close(ctx context.Context) {
	pod.stop(errPodClosed)
	pod.closeTunnels()
	pod.drain(ctx)
}

// closeTunnels closes the pod's HBONE connections, both ways, at once: a copy blocked writing to a
// peer that stopped reading would otherwise keep its connection (and the drain waiting for it)
// until the write deadline. Each close gives up on a stuck peer after a short grace, and they run
// in parallel (hbone.Pool.Close, hbone.Server.Close).
func (pod *podProxy) closeTunnels() {
	var wg sync.WaitGroup
	wg.Go(func() { pod.hboneSrv.Close() })
	pod.pool.Close()
	wg.Wait()
}

// stop cancels the pod's context and ends its connections (each has a context of its own, see
// connTracker), both with cause.
func (pod *podProxy) stop(cause error) {
	pod.cancel(cause)
	pod.conns.endAll(cause)
}

// drain stops the pod gracefully: no new connections (the listeners close, so a newer proxy
// bound to the same ports with SO_REUSEPORT gets them), GOAWAY on inbound HBONE connections,
// and open connections may finish until ctx is done. Then whatever is left is closed, the
// pool and the namespace handle are released.
func (pod *podProxy) drain(ctx context.Context) {
	pod.outbound.Close()
	pod.inbound.Close()
	shutdownDone := make(chan struct{})
	go func() {
		pod.hboneSrv.Shutdown(ctx) // closes hboneLn, sends GOAWAY, waits for streams or ctx
		close(shutdownDone)
	}()
	handlersDone := make(chan struct{})
	go func() { pod.wg.Wait(); close(handlersDone) }()
	select {
	case <-handlersDone:
	case <-ctx.Done():
		n := pod.conns.count()
		pod.log.Warn("drain deadline reached: closing remaining connections", "open", n)
		pod.stop(errDrainDeadline)
		pod.closeTunnels()
		<-handlersDone // every handler ends once its connection is closed
	}
	<-shutdownDone
	pod.stop(errPodClosed)
	pod.bg.Wait()
	pod.pool.Close()
	pod.ns.Close()
}

// lookupWorkload finds this pod's own workload: by its ZDS identity on this node, else by
// the address it connected from.
func (pod *podProxy) lookupWorkload(snap *workload.Snapshot, ip netip.Addr) *workload.Workload {
	if w := pod.findOwn(snap); w != nil {
		return w
	}
	if ip.IsValid() {
		if w := snap.WorkloadByAddr(pod.p.cfg.Network, ip.Unmap()); w != nil && w.Namespace == pod.info.Namespace {
			return w
		}
	}
	return nil
}

// findOwn finds this pod's own workload by its ZDS identity on this node.
func (pod *podProxy) findOwn(snap *workload.Snapshot) *workload.Workload {
	return snap.FindWorkload(pod.p.cfg.NodeName, pod.info.Namespace, pod.info.Name, pod.info.ServiceAccount)
}

// identity is the pod's SPIFFE identity: trust domain from its workload entry if known,
// namespace and service account from the node agent.
func (pod *podProxy) identity() certs.Identity {
	id := certs.Identity{TrustDomain: pod.p.cfg.TrustDomain, Namespace: pod.info.Namespace, ServiceAccount: pod.info.ServiceAccount}
	if w := pod.lookupWorkload(pod.p.store.Load(), netip.Addr{}); w != nil && w.TrustDomain != "" {
		id.TrustDomain = w.TrustDomain
	}
	if id.ServiceAccount == "" {
		id.ServiceAccount = "default"
	}
	return id
}

// serverCert is the certificate the pod's HBONE listener presents.
func (pod *podProxy) serverCert(ctx context.Context) (*certs.WorkloadCert, error) {
	return pod.p.certs.Get(ctx, pod.identity())
}

// clientTLS builds the mTLS config of a new tunnel for a pool key: our certificate for the
// key's source identity, and the identities the peer must prove.
func (pod *podProxy) clientTLS(ctx context.Context, k hbone.Key) (*tls.Config, error) {
	src, err := certs.ParseIdentity(k.SrcIdentity)
	if err != nil {
		return nil, &localError{err}
	}
	cert, err := pod.p.certs.Get(ctx, src)
	if err != nil {
		return nil, &localError{fmt.Errorf("certificate for %s: %w", src, err)}
	}
	var expected []certs.Identity
	for _, s := range strings.Split(k.DstIdentities, ",") {
		if s == "" {
			continue
		}
		id, err := certs.ParseIdentity(s)
		if err != nil {
			return nil, &setupError{fmt.Errorf("expected peer identity: %w", err)}
		}
		expected = append(expected, id)
	}
	return certs.ClientTLSConfig(cert, expected), nil
}

// dialTunnel opens the TCP connection under an HBONE tunnel, from the pod's namespace.
func (pod *podProxy) dialTunnel(ctx context.Context, network, addr string) (net.Conn, error) {
	return pod.ns.Dial(ctx, network, addr, pod.socketOptions(netip.AddrPort{}))
}

// socketOptions are the options of the proxy's connections from inside the pod: the proxy
// mark, and, with a valid src, a transparent socket bound to src, so that the connection
// appears to come from that address, as inbound delivery needs. The connect timeout is a
// socket option rather than a context timeout: most connects complete at once, and then it
// costs no timer.
func (pod *podProxy) socketOptions(src netip.AddrPort) redirect.SocketOptions {
	o := redirect.SocketOptions{Mark: pod.p.cfg.PacketMark, NoDelay: true, KeepAlive: 180 * time.Second,
		ConnectTimeout: pod.p.cfg.ConnectTimeout}
	if src.IsValid() {
		o.Transparent, o.LocalAddr = true, src
	}
	return o
}
