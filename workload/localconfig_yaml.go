package workload

import (
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ConfigError is an error in a local config. It names where the problem is: the source
// (file path or "LOCAL_XDS"), the entry (e.g. `workloads[2] (uid "c1//v1/Pod/ns/a")`), the
// field inside the entry (e.g. "workloadIps[0]") and the YAML line.
type ConfigError struct {
	Source string
	Entry  string // "" for errors outside any entry
	Field  string // "" when the error is about the entry (or document) as a whole
	Line   int    // 1-based; 0 if unknown
	Err    error
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	for _, part := range []string{e.Entry, e.Field} {
		if part != "" {
			b.WriteString(": ")
			b.WriteString(part)
		}
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	return b.String()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// decoder walks a yaml.Node tree. Every method takes the field path of the node it decodes
// and returns *ConfigError values naming it.
type decoder struct {
	source string
	entry  string // label of the entry being decoded
	lim    parseLimits
	budget int // left of lim.decodeBudget: bounds the nodes visited and the entries
	// aliasBudget is what is left of lim.aliasBudget: each alias resolved takes the nodes it
	// expands to (aliases in it expanded too), so that a "billion laughs" fails at its first
	// large alias instead of being walked until budget runs out.
	aliasBudget int
	expanded    map[*yaml.Node]int // expansion of anchored nodes; expanding while being computed
	// lineBase is added to node lines: the line before the piece being decoded when a config
	// is parsed in pieces (see splitConfig), else 0.
	lineBase int
	in       *interner // required: shares (and copies) what the config keeps

	// Bulk allocation of what the config keeps (see arena.go).
	workloads []Workload       // preallocated workload structs, taken from the front
	reserved  int              // workloads expected beyond those in workloads
	addrs     slab[netip.Addr] // workload IPs

	// labelMaps shares equal workload label maps: canonical encoding -> map.
	labelMaps map[string]map[string]string

	// Scratch space reused across entries; the interner copies what it keeps.
	ips   []netip.Addr
	ports map[uint16]uint16
	svcs  map[string]map[uint16]uint16
}

func newDecoder(source string, in *interner, lim parseLimits) *decoder {
	return &decoder{source: source, lim: lim, budget: lim.decodeBudget, aliasBudget: lim.aliasBudget, in: in,
		ports: make(map[uint16]uint16), svcs: make(map[string]map[uint16]uint16)}
}

// handler decodes the value of one mapping field; field is its path.
type handler func(v *yaml.Node, field string) error

func (d *decoder) fail(n *yaml.Node, field, format string, args ...any) error {
	return &ConfigError{Source: d.source, Entry: d.entry, Field: field, Line: d.line(n), Err: fmt.Errorf(format, args...)}
}

// line returns the line of n in the whole config; 0 if unknown.
func (d *decoder) line(n *yaml.Node) int {
	if n == nil || n.Line == 0 {
		return 0
	}
	return d.lineBase + n.Line
}

// resolve follows aliases and charges the budget for the node, and the alias budget for
// what an alias expands to.
func (d *decoder) resolve(n *yaml.Node, field string) (*yaml.Node, error) {
	alias := n
	for depth := 0; n != nil && n.Kind == yaml.AliasNode; depth++ {
		if depth > 100 || n.Alias == nil {
			return nil, d.fail(n, field, "unresolvable alias")
		}
		n = n.Alias
	}
	if n != alias {
		d.aliasBudget -= d.expansion(n, d.aliasBudget)
		if d.aliasBudget < 0 {
			return nil, d.fail(alias, field, "%w", d.lim.aliasError())
		}
	}
	return n, d.charge(n, field, 1)
}

// expanding marks an anchored node whose expansion is being computed: an alias inside it
// that refers to it expands without end.
const expanding = -1

// expansion returns the number of nodes n stands for with every alias in it expanded, or a
// number above limit as soon as that is known (an alias to an enclosing node counts as
// above any limit). Anchored nodes, the only ones aliases refer to, are computed once.
func (d *decoder) expansion(n *yaml.Node, limit int) int {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return 1
		}
		n = n.Alias
	}
	if n.Anchor != "" {
		switch v, ok := d.expanded[n]; {
		case ok && v == expanding:
			return limit + 1
		case ok:
			return v
		}
		if d.expanded == nil {
			d.expanded = make(map[*yaml.Node]int)
		}
		d.expanded[n] = expanding
	}
	total := 1
	for _, c := range n.Content {
		if total += d.expansion(c, limit-total); total > limit {
			total = limit + 1
			break
		}
	}
	if n.Anchor != "" {
		d.expanded[n] = total
	}
	return total
}

// charge takes units from the budget; running out is an error at node n.
func (d *decoder) charge(n *yaml.Node, field string, units int) error {
	d.budget -= units
	if d.budget < 0 {
		return d.fail(n, field, "%w", d.lim.decodeError())
	}
	return nil
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "a document"
}

func join(field, name string) string {
	if field == "" {
		return name
	}
	return field + "." + name
}

// mapping decodes a mapping whose keys must all be in fields. Null values count as absent.
// Each name in required must be present.
func (d *decoder) mapping(n *yaml.Node, field string, fields map[string]handler, required ...string) error {
	n, err := d.resolve(n, field)
	if err != nil {
		return err
	}
	if isNull(n) {
		empty := &yaml.Node{Kind: yaml.MappingNode}
		if n != nil {
			empty.Line = n.Line
		}
		n = empty
	}
	if n.Kind != yaml.MappingNode {
		return d.fail(n, field, "want a mapping, got %s", kindName(n))
	}
	present := make(map[string]bool, len(n.Content)/2) // keys in the document
	seen := make(map[string]bool, len(n.Content)/2)    // keys with a non-null value
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return d.fail(k, field, "want a field name, got %s", kindName(k))
		}
		h, ok := fields[k.Value]
		if !ok {
			return d.fail(k, join(field, k.Value), "unknown field%s", suggest(k.Value, fields))
		}
		if present[k.Value] {
			return d.fail(k, join(field, k.Value), "field set twice")
		}
		present[k.Value] = true
		rv, err := d.resolve(v, join(field, k.Value))
		if err != nil {
			return err
		}
		if isNull(rv) {
			continue
		}
		seen[k.Value] = true
		if err := h(rv, join(field, k.Value)); err != nil {
			return err
		}
	}
	for _, r := range required {
		if !seen[r] {
			return d.fail(n, join(field, r), "missing required field")
		}
	}
	return nil
}

// nonEmpty fails at the first of the fields of mapping n, given as name and decoded value pairs,
// whose value is empty: "" or a tag without a value ("!x") is not null, so it passes the
// required check of mapping, but an empty key is no key.
func (d *decoder) nonEmpty(n *yaml.Node, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			at := mappingValue(n, pairs[i])
			if at == nil {
				at = n
			}
			return d.fail(at, pairs[i], "empty value")
		}
	}
	return nil
}

// suggest returns a hint naming the known field that differs only in case from name.
func suggest(name string, fields map[string]handler) string {
	for f := range fields {
		if strings.EqualFold(f, name) {
			return fmt.Sprintf(" (did you mean %q?)", f)
		}
	}
	return ""
}

// scalarValue looks up the string value of field name in mapping n without decoding the
// rest; "" if absent or not a scalar. Used to label entries before decoding them.
func scalarValue(n *yaml.Node, name string) string {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name && n.Content[i+1].Kind == yaml.ScalarNode && !isNull(n.Content[i+1]) {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// seq decodes a list (null = empty), calling fn for each item.
func (d *decoder) seq(n *yaml.Node, field string, fn func(item *yaml.Node, field string) error) error {
	return d.seqItems(n, field, 0, false, fn)
}

// seqOnce is seq for a list decoded only once (a top-level list of entries): each item is
// dropped from the tree once decoded, so that the garbage collector can reclaim the parsed
// YAML of decoded entries while the rest is decoded. A list with an anchor is left intact
// (an alias may decode it again); aliased items stay reachable through their aliases.
// Its items are numbered from first in field paths: a list parsed in pieces continues the
// numbering of the pieces before.
func (d *decoder) seqOnce(n *yaml.Node, field string, first int, fn func(item *yaml.Node, field string) error) error {
	return d.seqItems(n, field, first, true, fn)
}

func (d *decoder) seqItems(n *yaml.Node, field string, first int, release bool, fn func(item *yaml.Node, field string) error) error {
	n, err := d.resolve(n, field)
	if err != nil || isNull(n) {
		return err
	}
	if n.Kind != yaml.SequenceNode {
		return d.fail(n, field, "want a list, got %s", kindName(n))
	}
	release = release && n.Anchor == ""
	for i, item := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, first+i)
		item, err := d.resolve(item, f)
		if err != nil {
			return err
		}
		if err := fn(item, f); err != nil {
			return err
		}
		if release {
			n.Content[i] = nil
		}
	}
	return nil
}
