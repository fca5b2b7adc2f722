package testbed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Cluster is a running simulated cluster. Create it with New and release it with Close.
type Cluster struct {
	cfg      Config // with defaults applied
	log      *slog.Logger
	ip       ipRunner
	runID    string
	stateDir string
	dir      string
	ownDir   bool // dir is a temporary directory of this run

	configPath, caCert, caKey string
	fabricNS, fabricBridge    string

	// nodes is fixed after New; see node for which fields are mutable.
	nodes []*node
	// gateways is fixed after New; see gateway for which fields are mutable.
	gateways []*gateway
	// netConfigPaths are the per-network local config files of a multi-network cluster (by
	// network), nil otherwise; fixed after New.
	netConfigPaths map[string]string

	closeOnce sync.Once
	closeErr  error

	// cfgMu serializes WriteConfig (render + write + lastHash, or the istiod push). Lock order:
	// cfgMu, then mu or Istiod.mu (never both).
	cfgMu sync.Mutex

	// istiod is the fake istiod (Config.ControlPlane), nil otherwise. Set in New, then fixed.
	istiod *Istiod

	// mu guards pods, services, policies, traffic, lastHash, closed and the mutable node and
	// gateway fields.
	mu       sync.Mutex
	pods     map[string]*Pod // by pod name; a nil value reserves a name while the pod is built
	services map[string]serviceRecord
	policies map[string]policyRecord // by "namespace/name"
	// traffic is the traffic policy rendered as local config keys (SetTrafficPolicy), appended
	// to every config file; nil: none.
	traffic []byte
	// lastHash is the SHA-256 of the last config written (local config mode) per config key
	// (configKey: "" for the shared file, else the network).
	lastHash map[string]string
	closed   bool
}

// node is one node of the cluster.
type node struct {
	index    int    // from 1
	netns    string // "<run>-n<i>"
	bridge   string // the pods' bridge inside netns
	ip       netip.Addr
	podNet   netip.Prefix // its pods' /24; .1 is the gateway
	agent    podAgent     // nil without proxies
	proxy    *proxyProc   // nil without proxies
	sockPath string       // INPOD_UDS
	logPath  string       // proxy log
	env      []string     // the proxy's environment (UpgradeProxy starts another with it)
	proxyGen int          // proxies started on this node so far
	// tokenPath is the proxy's AUTH_TOKEN file (Config.ControlPlane), else "".
	tokenPath string

	// Guarded by Cluster.mu:
	spec    NodeSpec // locality may change (SetNodeLocality)
	nextPod int      // last host number handed out in podNet
}

// New builds the fabric and the nodes, generates the run's CA and the initial local config, starts
// a node agent and a proxy per node (if cfg.Ztunnel is set) and waits until every proxy loaded the
// config. Leftovers of crashed earlier runs are removed first. On error everything already created
// is removed.
func New(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("testbed config: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("testbed: needs root (network namespaces)")
	}
	log := cfg.Logger
	if _, err := Cleanup(ctx, cfg.StateRoot, log); err != nil {
		log.Warn("cleanup of earlier runs failed", "error", err)
	}
	c := &Cluster{cfg: cfg, log: log, ip: ipRunner{log: log}, pods: map[string]*Pod{}, services: map[string]serviceRecord{},
		policies: map[string]policyRecord{}, lastHash: map[string]string{}}
	if err := c.initState(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("unwind: %w", cerr))
			}
		}
	}()
	log.Info("building cluster", "run", c.runID, "nodes", len(cfg.Nodes), "dir", c.dir)
	if c.caCert, c.caKey, err = writeCA(c.dir); err != nil {
		return nil, err
	}
	if cfg.ControlPlane {
		if c.istiod, err = newIstiod(c.caCert, c.caKey, log); err != nil {
			return nil, err
		}
		c.istiod.Addr = istiodAddr(cfg.NodeSubnet)
	} else if cfg.multiNetwork() {
		c.netConfigPaths = map[string]string{}
		for _, n := range cfg.networks() {
			c.netConfigPaths[n] = filepath.Join(c.dir, "local-config-"+n+".yaml")
		}
	} else {
		c.configPath = filepath.Join(c.dir, "local-config.yaml")
	}
	if err := c.WriteConfig(); err != nil {
		return nil, err
	}
	if err := c.buildNetwork(ctx); err != nil {
		return nil, err
	}
	if len(cfg.Gateways) > 0 {
		if err := c.addGateways(ctx); err != nil {
			return nil, err
		}
		if err := c.WriteConfig(); err != nil { // now with the gateways' addresses
			return nil, err
		}
	}
	if err := c.isolateNetworks(ctx); err != nil {
		return nil, err
	}
	if c.istiod != nil {
		if err := c.istiod.serve(ctx, netnsPath(c.fabricNS)); err != nil {
			return nil, err
		}
		log.Info("fake istiod listening", "addr", c.istiod.Addr)
	}
	if cfg.Ztunnel != "" {
		if err := c.startProxies(ctx); err != nil {
			return nil, err
		}
		if err := c.startGateways(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// initState picks a run ID, creates the state directory with the owner record and the work dir.
func (c *Cluster) initState() error {
	if err := os.MkdirAll(c.cfg.StateRoot, 0o755); err != nil {
		return fmt.Errorf("create state root: %w", err)
	}
	for range 10 {
		id, err := newRunID()
		if err != nil {
			return err
		}
		dir := filepath.Join(c.cfg.StateRoot, id)
		if _, err := os.Stat(netnsPath(id + "-fab")); err == nil {
			continue // namespaces of an unrecorded run
		}
		if err := os.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
		c.runID, c.stateDir = id, dir
		break
	}
	if c.runID == "" {
		return errors.New("create state dir: no free run ID")
	}
	owner, err := identify(os.Getpid())
	if err == nil {
		err = writeIdent(filepath.Join(c.stateDir, ownerFile), owner)
	}
	if err != nil {
		os.RemoveAll(c.stateDir)
		return err
	}
	c.fabricNS, c.fabricBridge = c.runID+"-fab", c.runID+"br"
	if c.cfg.Dir != "" {
		c.dir = c.cfg.Dir
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			os.RemoveAll(c.stateDir)
			return fmt.Errorf("create work dir: %w", err)
		}
		return nil
	}
	c.dir, err = os.MkdirTemp("", c.runID+"-")
	if err == nil {
		c.ownDir = true
		err = os.WriteFile(filepath.Join(c.stateDir, workdirFile), []byte(c.dir+"\n"), 0o644)
	}
	if err != nil {
		os.RemoveAll(c.dir)
		os.RemoveAll(c.stateDir)
		return fmt.Errorf("create work dir: %w", err)
	}
	return nil
}

// buildNetwork creates the fabric namespace and bridge and every node.
func (c *Cluster) buildNetwork(ctx context.Context) error {
	if err := c.ip.addNetNS(ctx, c.fabricNS); err != nil {
		return err
	}
	bits := strconv.Itoa(c.cfg.NodeSubnet.Bits())
	fabricAddr := ""
	if c.istiod != nil {
		fabricAddr = c.istiod.Addr.Addr().String() + "/" + bits
	}
	if err := c.ip.addBridge(ctx, c.fabricNS, c.fabricBridge, fabricAddr); err != nil {
		return err
	}
	for i, spec := range c.cfg.Nodes {
		n := &node{
			index:   i + 1,
			netns:   c.runID + "-n" + strconv.Itoa(i+1),
			bridge:  c.runID + "b",
			ip:      nodeAddr(c.cfg.NodeSubnet, i+1),
			podNet:  podPrefix(c.cfg.PodSubnet, i+1),
			spec:    spec,
			nextPod: 1,
		}
		c.nodes = append(c.nodes, n)
		if err := c.ip.addNetNS(ctx, n.netns); err != nil {
			return err
		}
		if err := c.ip.plug(ctx, c.fabricNS, c.runID+"n"+strconv.Itoa(n.index), c.fabricBridge, n.netns, n.ip.String()+"/"+bits); err != nil {
			return err
		}
		gw := hostAddr(n.podNet, 1).String() + "/24"
		if err := c.ip.addBridge(ctx, n.netns, n.bridge, gw); err != nil {
			return err
		}
		if err := c.ip.sysctl(ctx, n.netns, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
	}
	for _, n := range c.nodes {
		for _, o := range c.nodes {
			if o == n {
				continue
			}
			if err := c.ip.run(ctx, "-n", n.netns, "route", "add", o.podNet.String(), "via", o.ip.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// SetNodeLocality relabels a node. Like in Kubernetes it affects only pods created afterwards.
func (c *Cluster) SetNodeLocality(nodeName, region, zone, subzone string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodeLocked(nodeName)
	if n == nil {
		return fmt.Errorf("set locality: no node %q", nodeName)
	}
	n.spec.Region, n.spec.Zone, n.spec.Subzone = region, zone, subzone
	return nil
}

// nodeLocked returns the named node or nil. Requires c.mu held (for callers reading mutable fields).
func (c *Cluster) nodeLocked(name string) *node {
	for _, n := range c.nodes {
		if n.spec.Name == name {
			return n
		}
	}
	return nil
}

// RunID returns the run's ID, the prefix of its namespaces and interfaces.
func (c *Cluster) RunID() string { return c.runID }

// Dir returns the work directory (config, CA, proxy logs).
func (c *Cluster) Dir() string { return c.dir }

// CAFiles returns the paths of the run's CA certificate and key (PEM), shared by every proxy.
func (c *Cluster) CAFiles() (cert, key string) { return c.caCert, c.caKey }

// ConfigPath returns the path of the proxies' shared local config; "" with Config.ControlPlane,
// where there is none, and with several networks, where each has its own (NetworkConfigPath).
func (c *Cluster) ConfigPath() string { return c.configPath }

// NetworkConfigPath returns the path of the local config that the proxies and the gateway of
// network load: the shared one (ConfigPath) on a single network, "" for an unknown network.
func (c *Cluster) NetworkConfigPath(network string) string {
	if c.netConfigPaths == nil {
		if slices.Contains(c.cfg.networks(), network) {
			return c.configPath
		}
		return ""
	}
	return c.netConfigPaths[network]
}

// configKey is the key of the config file that proxies on network load: "" for the shared file,
// else the network.
func (c *Cluster) configKey(network string) string {
	if c.netConfigPaths == nil {
		return ""
	}
	return network
}

// configFile is the path of the config file that proxies on network load.
func (c *Cluster) configFile(network string) string {
	if c.netConfigPaths == nil {
		return c.configPath
	}
	return c.netConfigPaths[network]
}

// NodeNetNS returns the network namespace name of the named node ("" if none), for `ip netns exec`.
func (c *Cluster) NodeNetNS(name string) string {
	for _, n := range c.nodes {
		if n.spec.Name == name {
			return n.netns
		}
	}
	return ""
}

// ProxyLog returns the path of the named node's proxy log ("" without proxies).
func (c *Cluster) ProxyLog(nodeName string) string {
	for _, n := range c.nodes {
		if n.spec.Name == nodeName {
			return n.logPath
		}
	}
	return ""
}

// Pod returns the named pod, or nil.
func (c *Cluster) Pod(name string) *Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pods[name]
}

// Pods returns the cluster's pods sorted by name.
func (c *Cluster) Pods() []*Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*Pod
	for _, p := range c.pods {
		if p != nil {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b *Pod) int { return strings.Compare(a.rec.Name, b.rec.Name) })
	return ps
}
