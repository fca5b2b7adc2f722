package workload

import (
	"bytes"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// LocalConfig is a parsed local config (LOCAL_XDS_PATH file or LOCAL_XDS inline YAML), in
// the schema of the reference ztunnel's LocalConfig (ztunnel-behavior.md §5).
type LocalConfig struct {
	Workloads []*Workload
	Services  []*Service
	Policies  []*Policy
	Raw       []byte // the YAML it was parsed from; nil in FileSource.Last (not retained there)
}

// ParseLocalConfig parses a local config strictly: unknown fields, YAML errors, invalid IPs,
// CIDRs, enums and ports, missing required fields and duplicate workload uids, service keys
// or policy keys are errors. Errors are *ConfigError values naming source, entry, field and
// line, e.g.
//
//	/etc/zt/config.yaml: workloads[2] (uid "c1//v1/Pod/ns/a"): workloadIps[0]: invalid IP "10.0.0.300" (line 14)
//
// source is only used in errors (a file path, or "LOCAL_XDS" for inline YAML). An empty
// document is an empty config. Required fields: workload uid, name, namespace and
// workloadIps (unless hostname is set); service name, namespace and hostname; policy name,
// namespace, scope and action. Workloads get the trust domain, service account, cluster id
// and capacity defaults applied.
func ParseLocalConfig(source string, data []byte) (*LocalConfig, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &ConfigError{Source: source, Err: fmt.Errorf("parse YAML: %w", err)}
	}
	if secondDocument(data) {
		return nil, &ConfigError{Source: source, Err: errors.New("more than one YAML document")}
	}
	cfg := &LocalConfig{Raw: bytes.Clone(data)}
	d := &decoder{source: source, budget: maxNodes, in: newInterner()}
	var lines entryLines
	var doc *yaml.Node
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		doc = root.Content[0]
	}
	err := d.mapping(doc, "", map[string]handler{
		"workloads": func(v *yaml.Node, f string) error {
			return d.seq(v, f, func(item *yaml.Node, _ string) error {
				w, err := d.workload(len(cfg.Workloads), item)
				cfg.Workloads = append(cfg.Workloads, w)
				lines.workloads = append(lines.workloads, item.Line)
				return err
			})
		},
		"services": func(v *yaml.Node, f string) error {
			return d.seq(v, f, func(item *yaml.Node, _ string) error {
				s, err := d.service(len(cfg.Services), item)
				cfg.Services = append(cfg.Services, s)
				lines.services = append(lines.services, item.Line)
				return err
			})
		},
		"policies": func(v *yaml.Node, f string) error {
			return d.seq(v, f, func(item *yaml.Node, _ string) error {
				p, err := d.policy(len(cfg.Policies), item)
				cfg.Policies = append(cfg.Policies, p)
				lines.policies = append(lines.policies, item.Line)
				return err
			})
		},
	})
	if err != nil {
		return nil, err
	}
	if err := cfg.checkDuplicates(source, &lines); err != nil {
		return nil, err
	}
	return cfg, nil
}

// secondDocument reports whether data holds more than one YAML document.
func secondDocument(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var n yaml.Node
	if dec.Decode(&n) != nil {
		return false
	}
	return dec.Decode(&n) == nil
}

// Snapshot builds a snapshot from the config. It can be called any number of times.
func (c *LocalConfig) Snapshot() (*Snapshot, error) {
	return NewSnapshot(c.Workloads, c.Services, c.Policies)
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
