package testbed

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"time"
)

// Defaults applied by Config.withDefaults.
const (
	// DefaultStateRoot is where runs record themselves so Cleanup can find crashed ones.
	DefaultStateRoot = "/run/ztunnel-testbed"
	// TrustDomain is the SPIFFE trust domain of every workload and proxy.
	TrustDomain = "cluster.local"
	// DefaultClusterID is the cluster ID of nodes whose NodeSpec.Cluster is empty.
	DefaultClusterID = "Kubernetes"
)

var (
	defaultNodeSubnet = netip.MustParsePrefix("172.30.0.0/16")
	defaultPodSubnet  = netip.MustParsePrefix("10.40.0.0/16")
)

// NodeSpec describes one node of the simulated cluster.
type NodeSpec struct {
	// Name is the node name (NODE_NAME of its proxy, "node" of its workloads). Required; lower-case
	// letters, digits, '-' and '.', at most 63 characters, unique.
	Name string
	// Region, Zone and Subzone are the node's locality labels; empty means unlabelled.
	Region, Zone, Subzone string
	// Network is the node's network ID; empty is the default network.
	Network string
	// Cluster is the node's cluster ID; empty means DefaultClusterID.
	Cluster string
}

// Config configures New.
type Config struct {
	// Nodes are the cluster's nodes, at least one. Node i (from 1) gets the i-th address of NodeSubnet
	// and the i-th /24 of PodSubnet.
	Nodes []NodeSpec
	// Ztunnel is the path of the proxy binary started in every node. Empty: no proxies and no node
	// agents (plain network tests; pods cannot be enrolled).
	Ztunnel string
	// Dir is the work directory (config, CA, proxy logs, ZDS sockets). Empty: a new temporary
	// directory, removed by Close. A given Dir is kept, only the files the run created are removed.
	Dir string
	// StateRoot is where the run's state directory is created. Empty: DefaultStateRoot.
	StateRoot string
	// Logger receives the step log. Nil: slog.Default().
	Logger *slog.Logger
	// ExtraEnv is appended to every proxy's environment ("KEY=value"; later entries win).
	ExtraEnv []string
	// ProxyLogLevel is the proxies' LOG_LEVEL. Empty: "info".
	ProxyLogLevel string
	// NodeSubnet holds the nodes' addresses (IPv4, at most /24). Zero: 172.30.0.0/16.
	NodeSubnet netip.Prefix
	// PodSubnet holds the pods' addresses: node i gets <PodSubnet>.<i>.0/24 (IPv4, at most /16).
	// Zero: 10.40.0.0/16.
	PodSubnet netip.Prefix
	// ConfigSettle, if set, makes WaitConfigApplied wait this long (failing if a proxy exits)
	// instead of watching the proxy logs for the `msg="local config loaded" sha256=<hex>` line; for
	// proxies that do not log it. Pick more than the proxy's reload poll interval. Zero: watch logs.
	// Not used with ControlPlane, which watches the proxies' xDS ACKs.
	ConfigSettle time.Duration
	// StartTimeout bounds the wait for the proxies to load their first config. Zero: 30 s.
	StartTimeout time.Duration
	// ControlPlane runs a fake istiod (see Istiod) instead of a local config file: the topology
	// and policies are pushed to the proxies over delta xDS, and the proxies get their
	// certificates from its CA (XDS_ADDRESS, CA_ADDRESS, AUTH_TOKEN; no LOCAL_XDS_PATH, CA_CERT,
	// CA_KEY). False: the shared local config file and each proxy's built-in CA. Not available
	// with several networks.
	ControlPlane bool
	// Gateways asks for east-west gateways, at most one per network (see GatewaySpec). Nil: none.
	Gateways []GatewaySpec
}

var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.StateRoot == "" {
		c.StateRoot = DefaultStateRoot
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ProxyLogLevel == "" {
		c.ProxyLogLevel = "info"
	}
	if !c.NodeSubnet.IsValid() {
		c.NodeSubnet = defaultNodeSubnet
	}
	if !c.PodSubnet.IsValid() {
		c.PodSubnet = defaultPodSubnet
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	c.Nodes = append([]NodeSpec(nil), c.Nodes...)
	for i := range c.Nodes {
		if c.Nodes[i].Cluster == "" {
			c.Nodes[i].Cluster = DefaultClusterID
		}
	}
	c.Gateways = append([]GatewaySpec(nil), c.Gateways...)
	for i, g := range c.Gateways {
		if g.Network != "" {
			continue
		}
		for _, n := range c.Nodes {
			if n.Name == g.Node {
				c.Gateways[i].Network = n.Network
			}
		}
	}
	return c
}

// validate checks a Config that went through withDefaults.
func (c Config) validate() error {
	if len(c.Nodes) == 0 {
		return errors.New("no nodes")
	}
	if !c.NodeSubnet.Addr().Is4() || c.NodeSubnet.Bits() > 24 {
		return fmt.Errorf("node subnet %s: want IPv4, at most /24", c.NodeSubnet)
	}
	if !c.PodSubnet.Addr().Is4() || c.PodSubnet.Bits() > 16 {
		return fmt.Errorf("pod subnet %s: want IPv4, at most /16", c.PodSubnet)
	}
	if len(c.Nodes) > 250 {
		return fmt.Errorf("%d nodes: at most 250", len(c.Nodes))
	}
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		if !nodeNameRE.MatchString(n.Name) {
			return fmt.Errorf("node name %q: want lower-case letters, digits, '-' and '.'", n.Name)
		}
		if seen[n.Name] {
			return fmt.Errorf("node name %q: duplicate", n.Name)
		}
		seen[n.Name] = true
	}
	return c.validateNetworks()
}

// nodeAddr is the address of node i (from 1) in the node subnet.
func nodeAddr(subnet netip.Prefix, i int) netip.Addr {
	b := subnet.Masked().Addr().As4()
	b[3] = byte(i)
	return netip.AddrFrom4(b)
}

// podPrefix is the /24 of node i's pods; its .1 is the node's gateway.
func podPrefix(subnet netip.Prefix, i int) netip.Prefix {
	b := subnet.Masked().Addr().As4()
	b[2] = byte(i)
	b[3] = 0
	return netip.PrefixFrom(netip.AddrFrom4(b), 24)
}

// hostAddr is the n-th address of a /24.
func hostAddr(p netip.Prefix, n int) netip.Addr {
	b := p.Addr().As4()
	b[3] = byte(n)
	return netip.AddrFrom4(b)
}
