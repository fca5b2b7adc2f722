package testbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Several networks. When the nodes name two or more distinct networks, the cluster is
// multi-network: pods of one network cannot reach the pods or nodes of another (the nodes drop
// what their pods send there), except the east-west gateway of the other network (GatewaySpec)
// and that gateway's replies. Every proxy then loads a config file of its own network (see
// renderNetworkConfig).

// xnetChain is the iptables chain (filter table, in every node namespace, jumped to from FORWARD)
// that separates the networks and counts what crosses them.
const xnetChain = "ZTB-XNET"

// Comments of the rules of xnetChain, "<kind>:<from network>:<to network>"; network names cannot
// contain ':' (validateNetworks).
const (
	xnetToGateway   = "ztb-to-gateway"
	xnetFromGateway = "ztb-from-gateway"
	xnetDropped     = "ztb-drop"
)

// validateNetworks checks the nodes' networks and the gateways of a Config that went through
// withDefaults.
func (c Config) validateNetworks() error {
	nets := c.networks()
	multi := len(nets) > 1
	if multi {
		for _, n := range c.Nodes {
			if n.Network == "" {
				return fmt.Errorf("node %q: no network, but other nodes name one (%s): name every node's network",
					n.Name, strings.Join(nets[1:], ", "))
			}
			if !nodeNameRE.MatchString(n.Network) {
				return fmt.Errorf("node %q: network %q: want lower-case letters, digits, '-' and '.', at most 63", n.Name, n.Network)
			}
		}
		if c.ControlPlane {
			return fmt.Errorf("ControlPlane with several networks (%s): not supported, the fake istiod sends every proxy the same resources",
				strings.Join(nets, ", "))
		}
	}
	if len(c.Gateways) > 0 && c.ControlPlane {
		return errors.New("gateways with ControlPlane: not supported (gateways load a local config file)")
	}
	seen := map[string]bool{}
	for i, g := range c.Gateways {
		var node *NodeSpec
		for j := range c.Nodes {
			if c.Nodes[j].Name == g.Node {
				node = &c.Nodes[j]
			}
		}
		if node == nil {
			return fmt.Errorf("gateway %d: node %q: no such node", i, g.Node)
		}
		if g.Network != node.Network {
			return fmt.Errorf("gateway %d: network %q, but node %q is on network %q", i, g.Network, g.Node, node.Network)
		}
		if seen[g.Network] {
			return fmt.Errorf("gateway %d: network %q has a gateway already (at most one per network)", i, g.Network)
		}
		seen[g.Network] = true
		if err := checkName("gateway pod name", gatewayPodName(g.Network)); err != nil {
			return fmt.Errorf("gateway %d: network %q too long: %w", i, g.Network, err)
		}
	}
	return nil
}

// networks returns the sorted distinct networks of the nodes.
func (c Config) networks() []string {
	var nets []string
	for _, n := range c.Nodes {
		nets = append(nets, n.Network)
	}
	slices.Sort(nets)
	return slices.Compact(nets)
}

// multiNetwork reports whether the nodes are on several networks.
func (c Config) multiNetwork() bool { return len(c.networks()) > 1 }

// xnetRule is one rule of xnetChain, in iptables argument form (after "-A <chain>").
type xnetRule []string

// xnetRules computes the rules of xnetChain for node self: for what self's pods send to another
// network, accept it to that network's gateway (and its replies back, which self's gateway sends
// if it has one), drop anything else to that network's pods and nodes. Accepts come first. gws maps a network to its
// gateway's address. The result is deterministic.
func xnetRules(self *node, nodes []*node, gws map[string]netip.Addr) []xnetRule {
	own := self.spec.Network
	src := self.podNet.String()
	var nets []string
	for _, n := range nodes {
		if n.spec.Network != own {
			nets = append(nets, n.spec.Network)
		}
	}
	slices.Sort(nets)
	nets = slices.Compact(nets)
	var accepts, drops []xnetRule
	for _, other := range nets {
		if gw, ok := gws[other]; ok {
			accepts = append(accepts, xnetRule{"-s", src, "-d", gw.String() + "/32",
				"-m", "comment", "--comment", xnetToGateway + ":" + own + ":" + other, "-j", "ACCEPT"})
		}
		if gw, ok := gws[own]; ok && self.podNet.Contains(gw) {
			// Replies of our gateway to the other network's pods; it never opens connections there.
			for _, n := range nodes {
				if n.spec.Network != other {
					continue
				}
				accepts = append(accepts, xnetRule{"-s", gw.String() + "/32", "-d", n.podNet.String(),
					"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
					"-m", "comment", "--comment", xnetFromGateway + ":" + own + ":" + other, "-j", "ACCEPT"})
			}
		}
		for _, n := range nodes {
			if n.spec.Network != other {
				continue
			}
			for _, dst := range []string{n.podNet.String(), n.ip.String() + "/32"} {
				drops = append(drops, xnetRule{"-s", src, "-d", dst,
					"-m", "comment", "--comment", xnetDropped + ":" + own + ":" + other, "-j", "DROP"})
			}
		}
	}
	return append(accepts, drops...)
}

// isolateNetworks installs xnetChain in every node of a multi-network cluster.
func (c *Cluster) isolateNetworks(ctx context.Context) error {
	if !c.cfg.multiNetwork() {
		return nil
	}
	gws := map[string]netip.Addr{}
	for _, g := range c.gateways {
		gws[g.rec.Network] = g.rec.IP
	}
	for _, n := range c.nodes {
		cmds := [][]string{{"-N", xnetChain}, {"-A", "FORWARD", "-j", xnetChain}}
		for _, r := range xnetRules(n, c.nodes, gws) {
			cmds = append(cmds, append([]string{"-A", xnetChain}, r...))
		}
		for _, args := range cmds {
			if err := nodeIptables(ctx, n.netns, args...); err != nil {
				return fmt.Errorf("isolate networks on node %s: %w", n.spec.Name, err)
			}
		}
	}
	c.log.Info("networks isolated", "networks", c.cfg.networks(), "gateways", len(gws))
	return nil
}

// nodeIptables runs `iptables -w args...` (filter table) in the named namespace.
func nodeIptables(ctx context.Context, ns string, args ...string) error {
	full := append([]string{"netns", "exec", ns, "iptables", "-w", "-t", "filter"}, args...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CrossNetworkCounters counts the packets that pods sent to another network, summed over every
// node of the cluster (each packet is counted once, by the node of the pod that sent it).
type CrossNetworkCounters struct {
	// ToGateway counts packets from a pod to the east-west gateway of another network (accepted).
	ToGateway uint64
	// FromGateway counts the replies of a gateway to pods of another network (accepted).
	FromGateway uint64
	// Dropped counts packets from a pod to any other address of another network, its pods and its
	// nodes (dropped). Non-zero means something tried to reach another network around its gateway.
	Dropped uint64
	// ByRule has the same packets per rule kind and direction, e.g.
	// "ztb-to-gateway:network1:network2" (from network1's pods to network2's gateway).
	ByRule map[string]uint64
}

// String prints the totals and the non-zero per-direction counts.
func (x CrossNetworkCounters) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "to gateways %d, from gateways %d, dropped %d", x.ToGateway, x.FromGateway, x.Dropped)
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(x.ByRule)) {
		if x.ByRule[k] > 0 {
			parts = append(parts, k+"="+strconv.FormatUint(x.ByRule[k], 10))
		}
	}
	if len(parts) > 0 {
		b.WriteString(" (" + strings.Join(parts, " ") + ")")
	}
	return b.String()
}

// CrossNetworkCounters reads the packet counters of the rules that separate the networks. With a
// single network it returns zero counters.
func (c *Cluster) CrossNetworkCounters(ctx context.Context) (CrossNetworkCounters, error) {
	x := CrossNetworkCounters{ByRule: map[string]uint64{}}
	if !c.cfg.multiNetwork() {
		return x, nil
	}
	for _, n := range c.nodes {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.netns, "iptables-save", "-c", "-t", "filter").Output()
		if err != nil {
			return x, fmt.Errorf("read cross-network counters on node %s: iptables-save: %w", n.spec.Name, err)
		}
		if err := addXnetCounters(&x, out); err != nil {
			return x, fmt.Errorf("read cross-network counters on node %s: %w", n.spec.Name, err)
		}
	}
	return x, nil
}

// ResetCrossNetworkCounters zeroes the counters CrossNetworkCounters reads.
func (c *Cluster) ResetCrossNetworkCounters(ctx context.Context) error {
	if !c.cfg.multiNetwork() {
		return nil
	}
	for _, n := range c.nodes {
		if err := nodeIptables(ctx, n.netns, "-Z", xnetChain); err != nil {
			return fmt.Errorf("reset cross-network counters on node %s: %w", n.spec.Name, err)
		}
	}
	return nil
}

// addXnetCounters adds the counters of xnetChain's rules in an `iptables-save -c` dump to x.
// Lines look like `[12:720] -A ZTB-XNET -s 10.40.1.0/24 ... --comment ztb-drop:n1:n2 -j DROP`.
func addXnetCounters(x *CrossNetworkCounters, dump []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(dump))
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "-A "+xnetChain+" ") {
			continue
		}
		counts, rest, ok := strings.Cut(line, "] ")
		if !ok || !strings.HasPrefix(counts, "[") {
			return fmt.Errorf("iptables-save line %q: no [packets:bytes] prefix", line)
		}
		pkts, _, _ := strings.Cut(counts[1:], ":")
		n, err := strconv.ParseUint(pkts, 10, 64)
		if err != nil {
			return fmt.Errorf("iptables-save line %q: packets: %w", line, err)
		}
		var comment string
		f := strings.Fields(rest)
		for i := range f[:len(f)-1] {
			if f[i] == "--comment" {
				comment = strings.Trim(f[i+1], `"`)
			}
		}
		kind, _, _ := strings.Cut(comment, ":")
		switch kind {
		case xnetToGateway:
			x.ToGateway += n
		case xnetFromGateway:
			x.FromGateway += n
		case xnetDropped:
			x.Dropped += n
		default:
			return fmt.Errorf("iptables-save line %q: rule without a known comment", line)
		}
		x.ByRule[comment] += n
	}
	return sc.Err()
}
