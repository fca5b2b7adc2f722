package testbed

import (
	"context"
	"fmt"
	"time"
)

// WriteConfig regenerates the proxies' shared local config from the current pods and services and
// replaces the file atomically (temporary file + rename). AddPod, DeletePod and AddService call it;
// it is exported to force a rewrite, e.g. to exercise the proxies' reload.
func (c *Cluster) WriteConfig() error {
	c.cfgMu.Lock()
	defer c.cfgMu.Unlock()
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
	var nets []string
	for _, n := range c.cfg.Nodes {
		nets = append(nets, n.Network)
	}
	c.mu.Unlock()
	data, err := renderConfig(pods, svcs, nets)
	if err != nil {
		return err
	}
	hash, err := writeFileAtomic(c.configPath, data)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.lastHash = hash
	c.mu.Unlock()
	return nil
}

// WaitConfigApplied waits until every proxy logged loading the last config written (the log line
// `msg="local config loaded"` with `sha256=<hex of the file>`), or, with Config.ConfigSettle set,
// for that long. It fails at once if a proxy exited, and when ctx ends (after 30 s if ctx has no
// deadline), naming the proxies still behind. Without proxies it returns nil at once.
func (c *Cluster) WaitConfigApplied(ctx context.Context) error {
	if c.cfg.Ztunnel == "" {
		return nil
	}
	c.mu.Lock()
	hash := c.lastHash
	c.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var settled <-chan time.Time
	if c.cfg.ConfigSettle > 0 {
		settled = time.After(c.cfg.ConfigSettle)
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		behind, err := c.proxiesBehind(hash, settled == nil)
		if err != nil {
			return fmt.Errorf("wait for config %.12s: %w", hash, err)
		}
		if settled == nil && len(behind) == 0 {
			return nil
		}
		select {
		case <-settled:
			return nil
		case <-ctx.Done():
			if settled != nil {
				return fmt.Errorf("wait %v for config %.12s: %w", c.cfg.ConfigSettle, hash, context.Cause(ctx))
			}
			return fmt.Errorf("wait for config %.12s on %v (no %q log line with that sha256): %w",
				hash, behind, configLoadedMsg, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// proxiesBehind returns the nodes whose proxy has not logged loading the config with hash (if
// checkLogs), or an error if a proxy exited.
func (c *Cluster) proxiesBehind(hash string, checkLogs bool) ([]string, error) {
	var behind []string
	for _, n := range c.nodes {
		if n.proxy == nil {
			continue
		}
		if checkLogs {
			ok, err := n.proxy.loaded(hash)
			if err != nil {
				return nil, err
			}
			if ok {
				continue
			}
			behind = append(behind, n.spec.Name)
		}
		if err := n.proxy.exited(); err != nil {
			return nil, err
		}
	}
	return behind, nil
}
