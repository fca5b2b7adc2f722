package testbed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Close stops every pod server, proxy and node agent, deletes every namespace of the run (pods
// first), removes the files the run created (a caller-given Config.Dir keeps the proxy logs) and the
// run's state directory. It works after a partial New and is idempotent; the error joins every
// failure, in which case the state directory is kept so that Cleanup can retry once this process is
// gone.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Cluster) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.mu.Lock()
	c.closed = true
	var pods []*Pod
	for _, p := range c.pods {
		if p != nil {
			pods = append(pods, p)
		}
	}
	c.mu.Unlock()
	c.log.Info("tearing down cluster", "run", c.runID)

	var errs []error
	for _, p := range pods {
		p.stopServers()
	}
	for _, g := range c.gateways {
		c.mu.Lock()
		p := g.proc
		g.proc = nil
		c.mu.Unlock()
		if p != nil {
			p.Stop(3 * time.Second)
		}
	}
	for _, n := range c.nodes {
		if n.proxy != nil {
			n.proxy.Stop(3 * time.Second)
		}
	}
	if c.istiod != nil {
		c.istiod.stop()
	}
	for _, n := range c.nodes {
		if n.agent != nil {
			n.agent.close()
		}
	}
	for _, p := range pods {
		if err := p.ns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, g := range c.gateways {
		if g.ns != nil {
			if err := g.ns.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Every namespace of the run, including half-built ones; pods ("<id>-n1p2") before nodes
	// ("<id>-n1") before the fabric.
	names, err := listNetNS(c.runID + "-")
	if err != nil {
		errs = append(errs, err)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(rankNetNS(c.runID, a), rankNetNS(c.runID, b)), cmp.Compare(a, b))
	})
	for _, n := range names {
		if err := c.ip.delNetNS(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ownDir {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove work dir: %w", err))
		}
	} else if c.dir != "" {
		files := []string{c.configPath, c.caCert, c.caKey}
		for _, f := range c.netConfigPaths {
			files = append(files, f)
		}
		for _, n := range c.nodes {
			files = append(files, n.sockPath, n.tokenPath)
		}
		for _, f := range files {
			if f == "" {
				continue
			}
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", f, err))
			}
		}
	}
	if len(errs) == 0 && c.stateDir != "" {
		if err := os.RemoveAll(c.stateDir); err != nil {
			errs = append(errs, fmt.Errorf("remove state dir: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close testbed %s: %w", c.runID, err)
	}
	return nil
}

// rankNetNS orders a run's namespaces for deletion: pods (0), nodes (1), fabric and others (2).
func rankNetNS(runID, name string) int {
	rest := name[len(runID)+1:]
	switch {
	case len(rest) > 1 && rest[0] == 'n' && slices.Contains([]byte(rest), 'p'):
		return 0
	case len(rest) > 1 && rest[0] == 'n':
		return 1
	default:
		return 2
	}
}
