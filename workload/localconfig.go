package workload

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"

	"go.yaml.in/yaml/v3"
)

// LocalConfig is a parsed local config (LOCAL_XDS_PATH file or LOCAL_XDS inline YAML), in
// the schema of the reference ztunnel's LocalConfig (ztunnel-behavior.md §5).
type LocalConfig struct {
	Workloads []*Workload
	Services  []*Service
	Policies  []*Policy
	// DestinationRules and VirtualServices are the compiled traffic policies of the
	// destinationRules and virtualServices keys (beyond the reference; see
	// localconfig_traffic.go), in file order. VirtualServices without tcp routes, or only for
	// gateways, are not applied and not listed.
	DestinationRules []*DestinationPolicy
	VirtualServices  []*RoutePolicy
	Raw              []byte // the YAML it was parsed from; nil in FileSource.Last (not retained there)
}

// ParseLocalConfig parses a local config strictly: unknown fields, YAML errors, invalid IPs,
// CIDRs, enums and ports, missing required fields and duplicate workload uids, service keys
// or policy keys are errors, and so is every problem CompileTraffic reports for the
// destinationRules and virtualServices (their subset labels are checked against the labels the
// config's workloads carry). Errors are *ConfigError values naming source, entry, field and
// line, e.g.
//
//	/etc/zt/config.yaml: workloads[2] (uid "c1//v1/Pod/ns/a"): workloadIps[0]: invalid IP "10.0.0.300" (line 14)
//
// source is only used in errors (a file path, or "LOCAL_XDS" for inline YAML). An empty
// document, or none at all (only blank lines and comments), is an empty config. Required
// fields: workload uid, name, namespace and workloadIps (unless hostname is set); service
// name, namespace and hostname; policy name, namespace, scope and action. Workloads get the
// trust domain, service account, cluster id and capacity defaults applied. Parsing is bounded
// as for a file of DefaultLocalConfigMaxBytes (see localconfig_limits.go); data is not
// checked against that size.
func ParseLocalConfig(source string, data []byte) (*LocalConfig, error) {
	cfg, _, err := parseLocalConfig(source, data, limitsFor(0))
	if err != nil {
		return nil, err
	}
	cfg.Raw = bytes.Clone(data)
	return cfg, nil
}

// parseLocalConfig is ParseLocalConfig without setting Raw, within the limits lim; noDoc
// reports that data holds no YAML document at all (cfg is then empty). A large config in the
// plain block style that generators write is parsed piece by piece (see splitConfig), so
// that the YAML node tree of only one piece is alive at a time; anything else, and any
// config the pieces fail on, is parsed as a whole, which is also where every error comes
// from, unless the whole is too large to parse at once: then the error is the failing
// piece's.
func parseLocalConfig(source string, data []byte, lim parseLimits) (cfg *LocalConfig, noDoc bool, err error) {
	if !hasDocument(data) {
		return &LocalConfig{}, true, nil // without parsing: comments cost yaml.v3 several times their size
	}
	if len(data) >= minSplitSize {
		cfg, err := parseSplit(source, data, splitChunk, lim)
		if err == nil {
			return cfg, false, nil
		}
		if err != errNoSplit {
			if lim.checkTree(data) != nil {
				return nil, false, err
			}
			// What the pieces built is garbage now: collect it before building the whole
			// tree, so that the two do not add up (for a long scalar, 10 times its size).
			runtime.GC()
		}
	}
	return parseWhole(source, data, lim)
}

// parseWhole parses a local config as one YAML document; noDoc as for parseLocalConfig.
func parseWhole(source string, data []byte, lim parseLimits) (cfg *LocalConfig, noDoc bool, err error) {
	if err := lim.checkTree(data); err != nil {
		return nil, false, &ConfigError{Source: source, Err: err}
	}
	root, err := parseDocument(data)
	if err != nil {
		return nil, false, &ConfigError{Source: source, Err: err}
	}
	c := newConfigDecoder(source, lim)
	var doc *yaml.Node
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		doc = root.Content[0]
	}
	if err := c.d.mapping(doc, "", c.handlers()); err != nil {
		return nil, false, err
	}
	cfg, err = c.finish()
	return cfg, err == nil && root.Kind == 0, err
}

// configDecoder decodes the top level of a local config into cfg.
type configDecoder struct {
	d     *decoder
	cfg   *LocalConfig
	lines entryLines

	traffic      trafficEntries
	trafficCount struct{ dests, routes int } // entries decoded so far
}

func newConfigDecoder(source string, lim parseLimits) *configDecoder {
	return &configDecoder{d: newDecoder(source, newCopyingInterner(), lim), cfg: &LocalConfig{},
		traffic: trafficEntries{dests: map[string]*trafficEntry{}, routes: map[string]*trafficEntry{}}}
}

// listFields are the top-level fields of a local config, each a list of entries.
var listFields = []string{"workloads", "services", "policies", "destinationRules", "virtualServices"}

// list decodes the items of the top-level list field key at v (a list or a run of its items).
func (c *configDecoder) list(key string, v *yaml.Node, f string) error {
	d := c.d
	switch key {
	case "workloads":
		return d.seqOnce(v, f, len(c.cfg.Workloads), c.workload)
	case "services":
		return d.seqOnce(v, f, len(c.cfg.Services), c.service)
	case "policies":
		return d.seqOnce(v, f, len(c.cfg.Policies), c.policy)
	case "destinationRules":
		return d.seqOnce(v, f, c.trafficCount.dests, c.destinationRule)
	case "virtualServices":
		return d.seqOnce(v, f, c.trafficCount.routes, c.virtualService)
	}
	return fmt.Errorf("no list field %q", key) // cannot happen: keys come from listFields
}

// handlers decode the top-level fields.
func (c *configDecoder) handlers() map[string]handler {
	h := make(map[string]handler, len(listFields))
	for _, key := range listFields {
		h[key] = func(v *yaml.Node, f string) error {
			if key == "workloads" && v.Kind == yaml.SequenceNode {
				c.reserveWorkloads(len(v.Content))
			}
			return c.list(key, v, f)
		}
	}
	return h
}

// reserveWorkloads makes room for n more workloads, at most as many as the budget left can
// decode: a list counted in the text, or in a tree of empty items, cannot make it allocate
// more than the decoded workloads will need.
func (c *configDecoder) reserveWorkloads(n int) {
	n = min(n, max(c.d.budget, 0)/(entryCost+minWorkloadNodes))
	c.d.reserved = n
	c.cfg.Workloads = slices.Grow(c.cfg.Workloads, n)
	c.lines.workloads = slices.Grow(c.lines.workloads, n)
}

func (c *configDecoder) workload(item *yaml.Node, f string) error {
	if err := c.d.charge(item, f, entryCost); err != nil {
		return err
	}
	w, err := c.d.workload(len(c.cfg.Workloads), item)
	c.cfg.Workloads = append(c.cfg.Workloads, w)
	c.lines.workloads = append(c.lines.workloads, c.d.line(item))
	return err
}

func (c *configDecoder) service(item *yaml.Node, f string) error {
	if err := c.d.charge(item, f, entryCost); err != nil {
		return err
	}
	s, err := c.d.service(len(c.cfg.Services), item)
	c.cfg.Services = append(c.cfg.Services, s)
	c.lines.services = append(c.lines.services, c.d.line(item))
	return err
}

func (c *configDecoder) policy(item *yaml.Node, f string) error {
	if err := c.d.charge(item, f, entryCost); err != nil {
		return err
	}
	p, err := c.d.policy(len(c.cfg.Policies), item)
	c.cfg.Policies = append(c.cfg.Policies, p)
	c.lines.policies = append(c.lines.policies, c.d.line(item))
	return err
}

// finish checks what needs all entries and returns the config.
func (c *configDecoder) finish() (*LocalConfig, error) {
	if err := c.cfg.checkDuplicates(c.d.source, &c.lines); err != nil {
		return nil, err
	}
	if err := c.finishTraffic(); err != nil {
		return nil, err
	}
	return c.cfg, nil
}

// parseDocument parses the first YAML document of data into a node tree (a zero node for an
// empty input) and fails if a second, well-formed document follows. One decoder reads both,
// so the first document is parsed once and its tree is the only one alive at a time.
func parseDocument(data []byte) (yaml.Node, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return yaml.Node{}, nil // no document at all: an empty config
		}
		return yaml.Node{}, fmt.Errorf("parse YAML: %w", err)
	}
	var next yaml.Node
	if dec.Decode(&next) == nil {
		return yaml.Node{}, errors.New("more than one YAML document")
	}
	return root, nil
}

// Snapshot builds a snapshot from the config, with its traffic policies (Snapshot.Traffic; nil
// if it has none). It can be called any number of times.
func (c *LocalConfig) Snapshot() (*Snapshot, error) {
	snap, err := NewSnapshot(c.Workloads, c.Services, c.Policies)
	if err != nil || len(c.DestinationRules) == 0 && len(c.VirtualServices) == 0 {
		return snap, err
	}
	ti, err := NewTrafficIndex(c.DestinationRules, c.VirtualServices)
	if err != nil {
		return nil, err
	}
	return snap.WithTraffic(ti), nil
}

// entryLines are the YAML lines of the entries, by kind and index.
type entryLines struct{ workloads, services, policies []int }

func (c *LocalConfig) checkDuplicates(source string, lines *entryLines) error {
	dup := func(kind string, i int, label, field, key string, first int, lines []int) error {
		return &ConfigError{Source: source, Entry: fmt.Sprintf("%s[%d] %s", kind, i, label), Field: field,
			Line: lines[i], Err: fmt.Errorf("duplicate %s %q (first in %s[%d])", field, key, kind, first)}
	}
	uids := make(map[string]int, len(c.Workloads))
	for i, w := range c.Workloads {
		if j, ok := uids[w.UID]; ok {
			return dup("workloads", i, fmt.Sprintf("(uid %q)", w.UID), "uid", w.UID, j, lines.workloads)
		}
		uids[w.UID] = i
	}
	svcs := make(map[string]int, len(c.Services))
	for i, s := range c.Services {
		if j, ok := svcs[s.Key()]; ok {
			return dup("services", i, fmt.Sprintf("(service %q)", s.Key()), "hostname", s.Key(), j, lines.services)
		}
		svcs[s.Key()] = i
	}
	pols := make(map[string]int, len(c.Policies))
	for i, p := range c.Policies {
		if j, ok := pols[p.Key()]; ok {
			return dup("policies", i, fmt.Sprintf("(policy %q)", p.Key()), "name", p.Key(), j, lines.policies)
		}
		pols[p.Key()] = i
	}
	return nil
}
