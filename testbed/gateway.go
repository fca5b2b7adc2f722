package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// GatewaySpec asks for the east-west gateway of a network: a pod-like network namespace on a node
// of that network (not enrolled: no in-pod redirection), with an address from the node's pod
// subnet that pods of every other network may reach on GatewayHBONEPort. With Config.Ztunnel set
// it runs the proxy binary in east-west gateway mode (PROXY_MODE=east-west-gateway, identity
// GatewayNamespace/GatewayServiceAccount), loading its network's local config, started and
// stopped with the cluster, its log next to the node proxies' logs (GatewayLog).
type GatewaySpec struct {
	// Network is the network the gateway serves. Empty: the network of Node. It must be Node's
	// network; at most one gateway per network.
	Network string
	// Node is the name of the node the gateway runs on. Required.
	Node string
}

// The east-west gateways' identity and port.
const (
	// GatewayNamespace and GatewayServiceAccount make the gateways' SPIFFE identity,
	// spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway.
	GatewayNamespace      = "istio-system"
	GatewayServiceAccount = "istio-eastwestgateway"
	// GatewayHBONEPort is where gateways accept HBONE from other networks.
	GatewayHBONEPort = 15008
	// gatewayMode is the proxy's PROXY_MODE for a gateway.
	gatewayMode = "east-west-gateway"
)

// gatewayPodName is the pod name of the gateway of network.
func gatewayPodName(network string) string {
	if network == "" {
		return GatewayServiceAccount
	}
	return GatewayServiceAccount + "-" + network
}

// gatewayRecord is the immutable part of a gateway that the config is rendered from.
type gatewayRecord struct {
	Network, Cluster, Node string // Node and Cluster: of the node it runs on
	Name                   string // pod name
	IP                     netip.Addr
}

// workloadUID is the UID istiod gives the gateway's workload, "NetworkGateway/<net>/<ip>/<port>".
func (g gatewayRecord) workloadUID() string {
	return "NetworkGateway/" + g.Network + "/" + g.IP.String() + "/" + strconv.Itoa(GatewayHBONEPort)
}

// gateway is one east-west gateway of the cluster. Fixed after New except where noted.
type gateway struct {
	rec    gatewayRecord
	node   *node
	netns  string // pod-like name, "<node netns>p<n>"
	hostIf string // its veth end in the node's namespace
	ns     *redirect.NetNS
	env    []string // the proxy's environment (nil without proxies)

	// Guarded by Cluster.mu:
	proc    *proxyProc // nil while stopped, or without proxies
	logPath string     // the current (or last) process's log
	gen     int        // processes started so far
}

// addGateways allocates every gateway's address and builds its namespace on its node.
func (c *Cluster) addGateways(ctx context.Context) error {
	for _, spec := range c.cfg.Gateways {
		c.mu.Lock()
		n := c.nodeLocked(spec.Node)
		n.nextPod++
		k := n.nextPod
		c.mu.Unlock()
		g := &gateway{
			rec: gatewayRecord{Network: spec.Network, Cluster: n.spec.Cluster, Node: n.spec.Name,
				Name: gatewayPodName(spec.Network), IP: hostAddr(n.podNet, k)},
			node:   n,
			netns:  n.netns + "p" + strconv.Itoa(k),
			hostIf: c.runID + "p" + strconv.Itoa(k),
		}
		c.gateways = append(c.gateways, g)
		c.log.Info("adding east-west gateway", "network", g.rec.Network, "node", n.spec.Name, "ip", g.rec.IP, "netns", g.netns)
		if err := c.ip.addNetNS(ctx, g.netns); err != nil {
			return fmt.Errorf("add gateway of network %q: %w", g.rec.Network, err)
		}
		if err := c.ip.plug(ctx, n.netns, g.hostIf, n.bridge, g.netns, g.rec.IP.String()+"/24"); err != nil {
			return fmt.Errorf("add gateway of network %q: %w", g.rec.Network, err)
		}
		if err := c.ip.run(ctx, "-n", g.netns, "route", "add", "default", "via", hostAddr(n.podNet, 1).String()); err != nil {
			return fmt.Errorf("add gateway of network %q: %w", g.rec.Network, err)
		}
		var err error
		if g.ns, err = redirect.OpenNetNS(netnsPath(g.netns)); err != nil {
			return fmt.Errorf("add gateway of network %q: %w", g.rec.Network, err)
		}
	}
	return nil
}

// gatewayRecords returns the gateways' config records.
func (c *Cluster) gatewayRecords() []gatewayRecord {
	recs := make([]gatewayRecord, 0, len(c.gateways))
	for _, g := range c.gateways {
		recs = append(recs, g.rec)
	}
	return recs
}

// startGateways starts every gateway's proxy and waits until each is ready.
func (c *Cluster) startGateways(ctx context.Context) error {
	for _, g := range c.gateways {
		g.env = []string{
			"PATH=" + os.Getenv("PATH"),
			"TRUST_DOMAIN=" + TrustDomain,
			"PROXY_MODE=" + gatewayMode,
			"PROXY_WORKLOAD_INFO=" + GatewayNamespace + "/" + g.rec.Name + "/" + GatewayServiceAccount,
			"NODE_NAME=" + g.rec.Node,
			"CLUSTER_ID=" + g.rec.Cluster,
			"NETWORK=" + g.rec.Network,
			"LOCAL_XDS_PATH=" + c.configFile(g.rec.Network),
			"XDS_ADDRESS=",
			"CA_CERT=" + c.caCert,
			"CA_KEY=" + c.caKey,
			"LOG_LEVEL=" + c.cfg.ProxyLogLevel,
		}
		g.env = append(g.env, c.cfg.ExtraEnv...)
		if err := c.startGateway(ctx, g); err != nil {
			return err
		}
	}
	return nil
}

// startGateway starts a new process for g and waits until it loaded its config and accepts on
// GatewayHBONEPort (or ctx ends, or StartTimeout passes).
func (c *Cluster) startGateway(ctx context.Context, g *gateway) error {
	c.mu.Lock()
	if g.proc != nil {
		c.mu.Unlock()
		return fmt.Errorf("start gateway of network %q: already running", g.rec.Network)
	}
	g.gen++
	gen := g.gen
	c.mu.Unlock()
	logPath := filepath.Join(c.dir, "gateway-"+cmpOrDefault(g.rec.Network)+".log")
	if gen > 1 {
		logPath = filepath.Join(c.dir, fmt.Sprintf("gateway-%s.%d.log", cmpOrDefault(g.rec.Network), gen))
	}
	p, err := startProxy("gateway of network "+strconv.Quote(g.rec.Network), g.netns, c.cfg.Ztunnel, g.env, logPath)
	if err != nil {
		return err
	}
	if err := writeIdent(filepath.Join(c.stateDir, fmt.Sprintf("%sgw-%s.%d", proxyPrefix, cmpOrDefault(g.rec.Network), gen)), p.ident); err != nil {
		p.Stop(time.Second)
		return err
	}
	c.log.Info("gateway started", "network", g.rec.Network, "node", g.rec.Node, "ip", g.rec.IP, "pid", p.ident.pid, "log", logPath)
	wctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	if err := c.waitGatewayReady(wctx, g, p); err != nil {
		p.Stop(time.Second)
		return fmt.Errorf("start gateway of network %q: %w\n--- last lines of its log (%s):\n%s", g.rec.Network, err, logPath, p.LogTail(20))
	}
	c.mu.Lock()
	g.proc, g.logPath = p, logPath
	c.mu.Unlock()
	return nil
}

// cmpOrDefault names the default network "default" in file names.
func cmpOrDefault(network string) string {
	if network == "" {
		return "default"
	}
	return network
}

// waitGatewayReady waits until p loaded the config of g's network (unless Config.ConfigSettle
// replaces log watching) and accepts TCP on g's GatewayHBONEPort.
func (c *Cluster) waitGatewayReady(ctx context.Context, g *gateway, p *proxyProc) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	addr := netip.AddrPortFrom(g.rec.IP, GatewayHBONEPort).String()
	loaded, accepting := c.cfg.ConfigSettle > 0, false
	for {
		if err := p.Exited(); err != nil {
			return err
		}
		if !loaded {
			c.mu.Lock()
			hash := c.lastHash[c.configKey(g.rec.Network)]
			c.mu.Unlock()
			var err error
			if loaded, err = p.loaded(hash); err != nil {
				return err
			}
		}
		if loaded && !accepting {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			conn, err := g.ns.Dial(dctx, "tcp", addr, redirect.SocketOptions{})
			cancel()
			if err == nil {
				conn.Close()
				accepting = true
			}
		}
		if loaded && accepting {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait until ready (config loaded %v, accepting on %s %v): %w", loaded, addr, accepting, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// gatewayOf returns the gateway of network, or nil.
func (c *Cluster) gatewayOf(network string) *gateway {
	for _, g := range c.gateways {
		if g.rec.Network == network {
			return g
		}
	}
	return nil
}

// StopGateway stops the gateway of network the way a deleted pod stops: SIGTERM, then up to
// grace for a clean exit (killed after that, with an error). Its namespace and address stay, so
// connections to it are refused. StartGateway starts it again.
func (c *Cluster) StopGateway(network string, grace time.Duration) error {
	g := c.gatewayOf(network)
	if g == nil {
		return fmt.Errorf("stop gateway: network %q has no gateway", network)
	}
	c.mu.Lock()
	p := g.proc
	g.proc = nil
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("stop gateway of network %q: not running", network)
	}
	c.log.Info("stopping gateway", "network", network, "pid", p.ident.pid)
	return p.Terminate(grace)
}

// StartGateway starts the stopped gateway of network again (its log in a new file, see
// GatewayLog) and returns once it loaded its config and accepts connections.
func (c *Cluster) StartGateway(ctx context.Context, network string) error {
	g := c.gatewayOf(network)
	if g == nil {
		return fmt.Errorf("start gateway: network %q has no gateway", network)
	}
	if c.cfg.Ztunnel == "" {
		return fmt.Errorf("start gateway of network %q: the cluster runs no proxies", network)
	}
	return c.startGateway(ctx, g)
}

// GatewayIP returns the address of the gateway of network (invalid if it has none).
func (c *Cluster) GatewayIP(network string) netip.Addr {
	if g := c.gatewayOf(network); g != nil {
		return g.rec.IP
	}
	return netip.Addr{}
}

// GatewayLog returns the log of the gateway of network's current (or last) process; "" if none.
func (c *Cluster) GatewayLog(network string) string {
	g := c.gatewayOf(network)
	if g == nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return g.logPath
}

// GatewayNetNS returns the network namespace name of the gateway of network ("" if none), for
// `ip netns exec`.
func (c *Cluster) GatewayNetNS(network string) string {
	if g := c.gatewayOf(network); g != nil {
		return g.netns
	}
	return ""
}

// GatewayPID returns the process ID of the running gateway of network, 0 if none runs.
func (c *Cluster) GatewayPID(network string) int {
	g := c.gatewayOf(network)
	if g == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if g.proc == nil {
		return 0
	}
	return g.proc.ident.pid
}

// NodeAdminGet sends GET path (e.g. "/config_dump") to the admin port (localhost:15000) of the
// named node's proxy and returns the body; a status other than 200 is an error.
func (c *Cluster) NodeAdminGet(ctx context.Context, nodeName, path string) ([]byte, error) {
	ns := c.NodeNetNS(nodeName)
	if ns == "" {
		return nil, fmt.Errorf("admin GET %s: no node %q", path, nodeName)
	}
	return netnsGet(ctx, netnsPath(ns), "http://127.0.0.1:15000"+path)
}

// GatewayAdminGet sends GET path to the admin port (localhost:15000) of the gateway of network.
func (c *Cluster) GatewayAdminGet(ctx context.Context, network, path string) ([]byte, error) {
	g := c.gatewayOf(network)
	if g == nil {
		return nil, fmt.Errorf("admin GET %s: network %q has no gateway", path, network)
	}
	return netnsGet(ctx, netnsPath(g.netns), "http://127.0.0.1:15000"+path)
}

// netnsGet sends GET url over a connection opened in the network namespace at nsPath and
// returns the body (at most 64 MiB); a status other than 200 is an error.
func netnsGet(ctx context.Context, nsPath, url string) ([]byte, error) {
	ns, err := redirect.OpenNetNS(nsPath)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer ns.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(ctx, "tcp", addr, redirect.SocketOptions{})
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s in %s: %w", url, filepath.Base(nsPath), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return b, fmt.Errorf("GET %s in %s: read body: %w", url, filepath.Base(nsPath), err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s in %s: %w", url, filepath.Base(nsPath), errors.New(resp.Status))
	}
	return b, nil
}
