package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"go.yaml.in/yaml/v3"
)

// Helpers for the benchmark harness (bench/): node addresses, proxy PIDs and bulk config.

// NodeIP returns the named node's address on the fabric network, or the zero Addr if there is no
// such node.
func (c *Cluster) NodeIP(name string) netip.Addr {
	for _, n := range c.nodes {
		if n.spec.Name == name {
			return n.ip
		}
	}
	return netip.Addr{}
}

// ProxyPID returns the PID of the named node's current proxy process (the one started last, see
// UpgradeProxy), or 0 without proxies or for an unknown node.
func (c *Cluster) ProxyPID(nodeName string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodeLocked(nodeName)
	if n == nil || n.proxy == nil {
		return 0
	}
	return n.proxy.ident.pid
}

// WriteConfigExtra publishes the cluster's own pods, services and policies plus the entries of
// extra, a local config document (YAML with optional top-level "workloads", "services" and
// "policies" lists in the proxy's schema, see shared/reference/ztunnel-behavior.md §5), then waits
// until every proxy loaded the result. It is for loading the proxies with many synthetic workloads
// without creating pods. The entries are not checked here: a proxy that rejects them makes the
// wait fail. The next config change (AddPod, AddService, WriteConfig, …) drops the extra entries.
// Not available with Config.ControlPlane or several networks.
func (c *Cluster) WriteConfigExtra(ctx context.Context, extra []byte) error {
	if c.istiod != nil {
		return errors.New("write extra config: not available with a control plane (no local config)")
	}
	if c.netConfigPaths != nil {
		return errors.New("write extra config: not available with several networks (one config per network)")
	}
	if err := c.writeMerged(extra); err != nil {
		return fmt.Errorf("write extra config: %w", err)
	}
	if err := c.WaitConfigApplied(ctx); err != nil {
		return fmt.Errorf("write extra config: %w", err)
	}
	return nil
}

// writeMerged renders the cluster's config, merges extra into it and writes the result.
func (c *Cluster) writeMerged(extra []byte) error {
	c.cfgMu.Lock()
	defer c.cfgMu.Unlock()
	pods, svcs, policies, nets := c.configState()
	base, err := renderConfig(pods, svcs, policies, nets)
	if err != nil {
		return err
	}
	data, err := mergeLocalConfig(base, extra)
	if err != nil {
		return err
	}
	return c.publishConfigFile(data)
}

// extraListKeys are the top-level lists of the local config that mergeLocalConfig appends.
var extraListKeys = []string{"workloads", "services", "policies"}

// mergeLocalConfig appends the top-level lists of extra (only extraListKeys are allowed) to those
// of base, both local config documents, and returns the merged document.
func mergeLocalConfig(base, extra []byte) ([]byte, error) {
	var add map[string]any
	if err := yaml.Unmarshal(extra, &add); err != nil {
		return nil, fmt.Errorf("parse extra config: %w", err)
	}
	var merged map[string]any
	if err := yaml.Unmarshal(base, &merged); err != nil {
		return nil, fmt.Errorf("parse base config: %w", err)
	}
	if merged == nil {
		merged = map[string]any{}
	}
	for k, v := range add {
		if !slices.Contains(extraListKeys, k) {
			return nil, fmt.Errorf("extra config: top-level key %q: want workloads, services or policies", k)
		}
		if v == nil {
			continue
		}
		items, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("extra config: %s: want a list, got %T", k, v)
		}
		have, ok := merged[k].([]any)
		if merged[k] != nil && !ok {
			return nil, fmt.Errorf("base config: %s: want a list, got %T", k, merged[k])
		}
		merged[k] = append(have, items...)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(merged); err != nil {
		return nil, fmt.Errorf("encode merged config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode merged config: %w", err)
	}
	return buf.Bytes(), nil
}
