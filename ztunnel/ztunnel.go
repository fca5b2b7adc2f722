package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/internal/controlplane"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
	"github.com/ztunnel-go/ztunnel/relay"
	"github.com/ztunnel-go/ztunnel/workload"
)

// Proxy is the node proxy: it keeps the workload index current, issues the certificates of
// the pods it serves, and runs one set of listeners inside each enrolled pod.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	store *workload.Store
	file  *workload.FileSource // nil when the config came inline (LOCAL_XDS) or from xDS
	xds   *workload.XDSClient  // nil in local mode
	certs *certs.Manager
	pods  *podManager
	admin *adminServer // localhost:15000

	podEvents *podEvents    // the ZDS handler: p.pods plus the pod proxy counters
	metrics   *proxyMetrics // served on cfg.MetricsAddr
	ready     *readiness    // served on cfg.ReadinessAddr
	served    servedAddrs   // where the metrics and readiness servers listen

	limits     *connLimits             // caps on the connections carried at once (limits.go)
	gateways   gatewayHealth           // network gateways that failed lately (doublehbone.go)
	outliers   *outlierDetector        // passive outlier detection: hosts ejected after failures (outlier.go)
	gwMu       sync.Mutex              // guards gw
	gw         *gateway                // in east-west gateway mode, set by Run
	handshakes *hbone.HandshakeLimiter // caps on HBONE connections in their handshake, shared by every pod's server

	// relay moves the bytes of every proxied connection (it parks the copies of idle ones);
	// set by Run before any listener starts.
	relay    *relay.Relay
	memFreed chan struct{} // 1-buffered: hintMemoryFreed

	quit     chan struct{} // closed by Quit
	quitOnce sync.Once
}

// New validates cfg and loads the initial workload configuration. An error here means the
// proxy cannot start (the caller exits non-zero); nothing has been started yet.
func New(cfg Config) (*Proxy, error) {
	cfg = cfg.withDefaults()
	p := &Proxy{cfg: cfg, log: cfg.Logger, store: workload.NewStore(), quit: make(chan struct{}),
		memFreed: make(chan struct{}, 1)}

	switch {
	case cfg.LocalXDSPath != "":
		p.file = &workload.FileSource{Path: cfg.LocalXDSPath, Store: p.store, Logger: p.log, MaxBytes: cfg.LocalXDSMaxBytes}
		if err := p.file.Load(); err != nil {
			return nil, err
		}
	case cfg.LocalXDS != "":
		lc, err := workload.ParseLocalConfig("LOCAL_XDS", []byte(cfg.LocalXDS))
		if err != nil {
			return nil, err
		}
		snap, err := lc.Snapshot()
		if err != nil {
			return nil, fmt.Errorf("LOCAL_XDS: %w", err)
		}
		p.store.Replace(snap)
	case cfg.XDS.Address != "":
		xds, err := workload.NewXDSClient(workload.XDSConfig{
			Dial: controlplane.DialConfig{
				Address:     cfg.XDS.Address,
				RootCAFile:  cfg.XDS.RootCA,
				AltHostname: cfg.XDS.AltHostname,
				TokenPath:   cfg.AuthToken,
				ClusterID:   cfg.ClusterID,
				Headers:     cfg.XDS.Headers,
				Logger:      p.log.With("component", "xds"),
			},
			NodeID:   nodeID(cfg),
			Metadata: nodeMetadata(cfg),
			OnDemand: cfg.XDSOnDemand,
			Store:    p.store,
			Logger:   p.log.With("component", "xds"),
		})
		if err != nil {
			return nil, fmt.Errorf("xds client: %w", err)
		}
		p.xds = xds
	default:
		return nil, errors.New("no workload source: set LOCAL_XDS_PATH, LOCAL_XDS or XDS_ADDRESS")
	}

	issuer, err := newIssuer(cfg)
	if err != nil {
		return nil, err
	}
	p.certs = certs.NewManager(certs.ManagerConfig{Issuer: issuer, UnusedTTL: cfg.CertUnusedRelease,
		Logger: p.log.With("component", "certs")})
	p.limits = newConnLimits(cfg, p.log)
	p.handshakes = newHandshakeLimiter(cfg)
	p.outliers = newOutlierDetector(time.Now)
	p.pods = newPodManager(p)
	p.admin = newAdminServer(p)
	p.podEvents = &podEvents{m: p.pods}
	p.metrics = newProxyMetrics(p, p.podEvents)
	p.podEvents.metrics = p.metrics
	p.ready = newReadiness(p.podEvents.pendingCount, taskStateManager, taskWorkloadManager)
	if p.xds == nil {
		p.ready.unblock(taskStateManager) // the local config is loaded
		debug.FreeOSMemory()              // give back what parsing it left behind (see memory.go)
	}
	return p, nil
}

// Quit starts a graceful shutdown, as SIGTERM does (admin POST /quitquitquit).
func (p *Proxy) Quit() { p.quitOnce.Do(func() { close(p.quit) }) }

// Run serves until ctx is done or Quit is called, then drains: every pod's listeners close
// (a newer proxy sharing them with SO_REUSEPORT takes new connections), inbound HBONE
// connections get GOAWAY, and open connections have TerminationDeadline to finish before the
// rest are closed. Cancellation is the normal way to stop and is not an error.
func (p *Proxy) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-p.quit:
			stop()
		case <-ctx.Done():
		}
	}()
	r, err := relay.New(relay.Config{OnParks: p.hintMemoryFreed})
	if err != nil {
		p.log.Warn("idle connections will hold a goroutine each", "error", err)
		r, _ = relay.New(relay.Config{IdleAfter: -1}) // cannot fail
	}
	p.relay = r
	defer r.Close() // after the drain below: parked copies of closed pods were withdrawn
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.certs.Run(gctx) })
	if p.cfg.Mode != ModeEastWestGateway { // a gateway needs only its own identity: never a destination's
		g.Go(func() error { return p.prefetchCerts(gctx) })
	}
	g.Go(func() error { return p.releaseMemoryAfterChanges(gctx) })
	g.Go(func() error { return p.outliers.run(gctx) })
	if p.file != nil {
		g.Go(func() error { return p.file.Run(gctx) })
	}
	g.Go(func() error { return p.admin.Run(gctx) })
	g.Go(func() error {
		return serveHTTP(gctx, "metrics", p.cfg.MetricsAddr, p.metrics.handler(), p.log.With("component", "metrics"), p.served.set("metrics"))
	})
	g.Go(func() error {
		return serveHTTP(gctx, "readiness", p.cfg.ReadinessAddr, p.ready, p.log.With("component", "readiness"), p.served.set("readiness"))
	})
	var gw *gateway
	if p.cfg.Mode == ModeEastWestGateway {
		gw = newGateway(p)
		if err := gw.listen(); err != nil {
			stop()
			g.Wait()
			return err
		}
		p.gwMu.Lock()
		p.gw = gw
		p.gwMu.Unlock()
	}
	client := &zds.Client{
		Path:      p.cfg.InPodUDS,
		Handler:   p.podEvents,
		Logger:    p.log.With("component", "zds"),
		OnConnect: p.ready.setZDS,
	}
	g.Go(func() error {
		// Pods (or the gateway's tunnels) are only taken once the workload config is complete, so
		// that their first connections find their peers (the reference gates the same way).
		if p.xds != nil {
			p.log.Info("waiting for the first xDS push", "address", p.cfg.XDS.Address)
			select {
			case <-p.xds.Synced():
				p.log.Info("xDS synced")
				p.ready.unblock(taskStateManager)
			case <-gctx.Done():
				return nil
			}
		}
		if gw != nil {
			return gw.run(gctx)
		}
		return client.Run(gctx)
	})
	if p.xds != nil {
		g.Go(func() error { return p.xds.Run(gctx) })
	}
	p.log.Info("proxy started", "node", p.cfg.NodeName, "zds", p.cfg.InPodUDS, "network", p.cfg.Network)

	err = g.Wait()
	p.log.Info("draining", "deadline", p.cfg.TerminationDeadline)
	drainCtx, cancel := context.WithTimeout(context.Background(), p.cfg.TerminationDeadline)
	defer cancel()
	if gw != nil {
		gw.shutdown(drainCtx)
	}
	p.pods.drainAll(drainCtx)
	p.log.Info("drained")
	p.admin.finished() // a /quitquitquit waiting for the drain answers now
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// nodeID is the proxy's xDS node id, as the reference builds it (ztunnel-behavior.md §3.3).
func nodeID(cfg Config) string {
	ip := cfg.InstanceIP
	if ip == "" {
		ip = "1.1.1.1"
	}
	return fmt.Sprintf("ztunnel~%s~%s.%s~%s.svc.cluster.local", ip, cfg.PodName, cfg.PodNamespace, cfg.PodNamespace)
}

// nodeMetadata is the proxy's xDS node metadata: its identity plus every ISTIO_META_* value.
func nodeMetadata(cfg Config) map[string]string {
	md := map[string]string{}
	for k, v := range cfg.Meta {
		md[k] = v
	}
	for k, v := range map[string]string{"NAME": cfg.PodName, "NAMESPACE": cfg.PodNamespace,
		"INSTANCE_IPS": cfg.InstanceIP, "NODE_NAME": cfg.NodeName, "CLUSTER_ID": cfg.ClusterID} {
		if v != "" {
			md[k] = v
		}
	}
	return md
}

// newIssuer picks the certificate source: the Istio CA when CA_ADDRESS is set, else the
// built-in CA (local mode).
func newIssuer(cfg Config) (certs.Issuer, error) {
	if cfg.CA.Address != "" {
		ca, err := certs.NewCAClient(certs.CAClientConfig{
			Address:     cfg.CA.Address,
			RootCAFile:  cfg.CA.RootCA,
			AltHostname: cfg.CA.AltHostname,
			TokenPath:   cfg.AuthToken,
			ClusterID:   cfg.ClusterID,
			Headers:     cfg.CA.Headers,
			Impersonate: true, // shared mode: the proxy asks for its pods' identities
			TTL:         cfg.SecretTTL,
			Logger:      cfg.Logger.With("component", "ca"),
		})
		if err != nil {
			return nil, fmt.Errorf("istio CA client: %w", err)
		}
		return ca, nil
	}
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{
		CertFile:    cfg.CACertFile,
		KeyFile:     cfg.CAKeyFile,
		TrustDomain: cfg.TrustDomain,
		WorkloadTTL: cfg.SecretTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("built-in CA: %w", err)
	}
	return ca, nil
}

// prefetchCerts keeps certificates ready for the HBONE workloads on this node: held from when the
// first workload of an identity appears until the last one leaves (ztunnel-behavior.md §6); after
// that the certificate manager drops the identity once it has gone unused for its UnusedTTL.
// Runs until ctx is done, then releases its holds.
func (p *Proxy) prefetchCerts(ctx context.Context) error {
	if p.cfg.NodeName == "" {
		return nil // without a node name, "local" workloads cannot be told apart
	}
	held := map[certs.Identity]func(){} // identity -> its release
	defer func() {
		for _, release := range held {
			release()
		}
	}()
	for {
		changed := p.store.Changed()
		want := map[certs.Identity]bool{}
		for _, w := range p.store.Load().WorkloadsOnNode(p.cfg.NodeName) {
			if w.Protocol == workload.ProtocolHBONE || w.NativeTunnel {
				want[p.identityOf(w)] = true
			}
		}
		for id := range want {
			if held[id] == nil {
				held[id] = p.certs.Hold(id)
			}
		}
		for id, release := range held {
			if !want[id] {
				release()
				delete(held, id)
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// sourceWorkload finds the workload of a pod that just opened a connection, waiting up to
// SourceWorkloadWait for it to appear in the index (a pod can start before its workload
// entry arrives). ip is the connection's source address, used when the pod's ZDS identity
// does not match any workload.
func (p *Proxy) sourceWorkload(ctx context.Context, pod *podProxy, ip netip.Addr) (*workload.Workload, error) {
	var deadline *time.Timer // armed only once the first look failed: usually it does not
	for {
		changed := p.store.Changed()
		snap := p.store.Load()
		if w := pod.lookupWorkload(snap, ip); w != nil {
			return w, nil
		}
		if deadline == nil {
			deadline = time.NewTimer(p.cfg.SourceWorkloadWait)
			defer deadline.Stop()
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, fmt.Errorf("unknown source workload %s/%s (%s): not in the workload config",
				pod.info.Namespace, pod.info.Name, ip)
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// demand asks istiod for an address the index does not have (XDS_ON_DEMAND) and reports
// whether it got an answer (which may be "no such address").
func (p *Proxy) demand(ctx context.Context, network string, ip netip.Addr) bool {
	if p.xds == nil || !p.cfg.XDSOnDemand {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.SourceWorkloadWait)
	defer cancel()
	name := workload.NetworkAddress{Network: network, Addr: ip.Unmap()}.String()
	if err := p.xds.Demand(ctx, name); err != nil {
		p.log.Debug("on-demand lookup failed", "address", name, "error", err)
		return false
	}
	return true
}

// identityOf is the SPIFFE identity of a workload.
func (p *Proxy) identityOf(w *workload.Workload) certs.Identity {
	td := w.TrustDomain
	if td == "" {
		td = p.cfg.TrustDomain
	}
	sa := w.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	return certs.Identity{TrustDomain: td, Namespace: w.Namespace, ServiceAccount: sa}
}
