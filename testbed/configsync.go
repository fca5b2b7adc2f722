package testbed

import (
	"context"
	"fmt"
	"maps"
	"time"
)

// WriteConfig publishes the current pods, services, policies and traffic policy to the proxies. In local config
// mode it regenerates their shared local config (with several networks: every network's, see
// NetworkConfigPath) and replaces the file atomically (temporary file + rename); with
// Config.ControlPlane it converts them to xDS resources and has the fake istiod push what changed. AddPod, DeletePod, AddService, SetPolicy and DeletePolicy call it; it is exported
// to force a rewrite, e.g. to exercise the proxies' reload.
func (c *Cluster) WriteConfig() error {
	c.cfgMu.Lock()
	defer c.cfgMu.Unlock()
	pods, svcs, policies, nets := c.configState()
	if c.istiod != nil {
		c.istiod.push(buildResources(pods, svcs, policies, nets))
		return nil
	}
	c.mu.Lock()
	traffic := c.traffic // never set with istiod (SetTrafficPolicy refuses)
	c.mu.Unlock()
	if c.netConfigPaths != nil {
		return c.publishNetworkConfigs(pods, svcs, policies, traffic)
	}
	data, err := renderConfig(pods, svcs, policies, nets)
	if err != nil {
		return err
	}
	return c.publishConfigFile(append(data, traffic...))
}

// publishConfigFile writes the proxies' local config file and remembers its hash for
// WaitConfigApplied. The caller holds cfgMu.
func (c *Cluster) publishConfigFile(data []byte) error {
	hash, err := writeFileAtomic(c.configPath, data)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.lastHash[""] = hash
	c.mu.Unlock()
	return nil
}

// publishNetworkConfigs renders and writes the config file of every network, with the traffic
// policy keys appended to each, and remembers their hashes for WaitConfigApplied. The caller
// holds cfgMu.
func (c *Cluster) publishNetworkConfigs(pods []podRecord, svcs []serviceRecord, policies []policyRecord, traffic []byte) error {
	gws := c.gatewayRecords()
	hashes := map[string]string{}
	for network, path := range c.netConfigPaths {
		data, err := renderNetworkConfig(network, pods, svcs, policies, gws)
		if err != nil {
			return fmt.Errorf("config of network %q: %w", network, err)
		}
		if hashes[network], err = writeFileAtomic(path, append(data, traffic...)); err != nil {
			return err
		}
	}
	c.mu.Lock()
	maps.Copy(c.lastHash, hashes)
	c.mu.Unlock()
	return nil
}

// WaitConfigApplied waits until every proxy applied the last config published. In local config
// mode that is when it logged loading the file (the log line `msg="local config loaded"` with
// `sha256=<hex of the file>`), or, with Config.ConfigSettle set, after that long. With
// Config.ControlPlane it is when the proxy's xDS stream ACKed (a request with the response's nonce
// and no error_detail) responses that leave it holding exactly the resources pushed last, for both
// types; ConfigSettle is not used. It fails at once if a proxy exited or NACKed the config, and
// when ctx ends (after 30 s if ctx has no deadline), naming the proxies still behind. Without
// proxies it returns nil at once.
func (c *Cluster) WaitConfigApplied(ctx context.Context) error {
	if c.cfg.Ztunnel == "" {
		return nil
	}
	c.mu.Lock()
	hashes := maps.Clone(c.lastHash)
	c.mu.Unlock()
	what := fmt.Sprintf("config %.12s", hashes[""])
	if c.netConfigPaths != nil {
		what = "the networks' configs"
	}
	if c.istiod != nil {
		what = "xDS config"
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var settled <-chan time.Time
	if c.cfg.ConfigSettle > 0 && c.istiod == nil {
		settled = time.After(c.cfg.ConfigSettle)
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		behind, err := c.proxiesBehind(hashes, settled == nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if settled == nil && len(behind) == 0 {
			return nil
		}
		select {
		case <-settled:
			return nil
		case <-ctx.Done():
			if settled != nil {
				return fmt.Errorf("wait %v for %s: %w", c.cfg.ConfigSettle, what, context.Cause(ctx))
			}
			if c.istiod != nil {
				return fmt.Errorf("wait for %s on %v: %w", what, behind, context.Cause(ctx))
			}
			return fmt.Errorf("wait for %s on %v (no %q log line with that sha256): %w",
				what, behind, configLoadedMsg, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// proxiesBehind returns the nodes (and gateways) whose proxy has not applied the config (in local
// config mode: the one of its config key in hashes) if check is set, or an error if a proxy exited
// or rejected the config. With Config.ControlPlane an entry says why, e.g. "worker1 (no xDS
// stream)". A stopped gateway is skipped.
func (c *Cluster) proxiesBehind(hashes map[string]string, check bool) ([]string, error) {
	var behind []string
	for _, n := range c.nodes {
		if n.proxy == nil {
			continue
		}
		if err := n.proxy.Exited(); err != nil {
			return nil, err
		}
		if !check {
			continue
		}
		if c.istiod != nil {
			why, err := c.istiod.applied(n.ip)
			if err != nil {
				return nil, fmt.Errorf("node %s: %w", n.spec.Name, err)
			}
			if why != "" {
				behind = append(behind, n.spec.Name+" ("+why+")")
			}
			continue
		}
		ok, err := n.proxy.loaded(hashes[c.configKey(n.spec.Network)])
		if err != nil {
			return nil, err
		}
		if !ok {
			behind = append(behind, n.spec.Name)
		}
	}
	for _, g := range c.gateways {
		c.mu.Lock()
		p := g.proc
		c.mu.Unlock()
		if p == nil {
			continue
		}
		if err := p.Exited(); err != nil {
			return nil, err
		}
		if !check {
			continue
		}
		ok, err := p.loaded(hashes[c.configKey(g.rec.Network)])
		if err != nil {
			return nil, err
		}
		if !ok {
			behind = append(behind, "gateway of "+g.rec.Network)
		}
	}
	return behind, nil
}

// configState copies what the proxies' config is made of: pods, services, policies and the
// nodes' networks.
func (c *Cluster) configState() ([]podRecord, []serviceRecord, []policyRecord, []string) {
	c.mu.Lock()
	pods := make([]podRecord, 0, len(c.pods))
	for _, p := range c.pods {
		if p != nil {
			pods = append(pods, p.rec)
		}
	}
	svcs := make([]serviceRecord, 0, len(c.services))
	for _, s := range c.services {
		svcs = append(svcs, s)
	}
	policies := make([]policyRecord, 0, len(c.policies))
	for _, p := range c.policies {
		policies = append(policies, p)
	}
	var nets []string
	for _, n := range c.cfg.Nodes {
		nets = append(nets, n.Network)
	}
	c.mu.Unlock()
	return pods, svcs, policies, nets
}
