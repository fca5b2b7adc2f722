package workload

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networking "istio.io/api/networking/v1alpha3"
)

// The destinationRules and virtualServices keys of a local config: Istio objects as in
// Kubernetes YAML,
//
//	destinationRules:
//	- apiVersion: networking.istio.io/v1   # optional; v1beta1 and v1alpha3 too
//	  kind: DestinationRule                # optional
//	  metadata: {name: reviews, namespace: default}
//	  spec: {host: reviews, trafficPolicy: {...}, subsets: [...]}
//
// whose spec is parsed by protojson into the istio.io/api type (unknown fields are errors; the
// JSON names of the Kubernetes YAML and the proto names are both accepted) and compiled
// (traffic_compile.go). The spec's YAML is converted to JSON node by node, each node (keys
// included) charged to the decoding budget trafficNodeCost units: the JSON text, the proto
// message kept as the policy's Source and the compiled policy together cost more than the nodes
// of a workload (a config of S3-style rules retains about 15 bytes per unit, under the 18 a
// workload config does).

// trafficNodeCost is what each YAML node of a spec costs the decoding budget.
const trafficNodeCost = 4

// trafficEntry is what the cross-object checks of finish need of a decoded rule or service.
type trafficEntry struct {
	kind  string // "destinationRules" or "virtualServices"
	index int
	label string         // the entry label of errors, e.g. `destinationRules[0] (destination rule "ns/n")`
	line  int            // of the list item
	lines map[string]int // spec field (as TrafficError.Field) -> line, for the fields checkTraffic names
}

// trafficEntries are the rules and services of a config, by key.
type trafficEntries struct {
	dests, routes map[string]*trafficEntry // by "ns/name"; routes includes ignored services
}

func (c *configDecoder) destinationRule(item *yaml.Node, f string) error {
	if err := c.d.charge(item, f, entryCost); err != nil {
		return err
	}
	i := c.trafficCount.dests
	c.trafficCount.dests++
	var dr networking.DestinationRule
	e, err := c.d.trafficObject("destinationRules", i, kindDestinationRule, "DestinationRule", item, &dr)
	if err != nil {
		return err
	}
	if prev := c.traffic.dests[e.key()]; prev != nil {
		return c.dupName(e, prev, item)
	}
	c.traffic.dests[e.key()] = &e.trafficEntry
	d, err := compileDestinationRule(&NamedDestinationRule{Name: e.name, Namespace: e.ns, Spec: &dr}, c.opts())
	if err != nil {
		return c.d.trafficError(&e.trafficEntry, e.refs, err)
	}
	e.keepLines()
	c.cfg.DestinationRules = append(c.cfg.DestinationRules, d)
	return nil
}

func (c *configDecoder) virtualService(item *yaml.Node, f string) error {
	if err := c.d.charge(item, f, entryCost); err != nil {
		return err
	}
	i := c.trafficCount.routes
	c.trafficCount.routes++
	var vs networking.VirtualService
	e, err := c.d.trafficObject("virtualServices", i, kindVirtualService, "VirtualService", item, &vs)
	if err != nil {
		return err
	}
	if prev := c.traffic.routes[e.key()]; prev != nil {
		return c.dupName(e, prev, item)
	}
	c.traffic.routes[e.key()] = &e.trafficEntry
	r, err := compileVirtualService(&NamedVirtualService{Name: e.name, Namespace: e.ns, Spec: &vs}, c.opts())
	if err != nil {
		return c.d.trafficError(&e.trafficEntry, e.refs, err)
	}
	e.keepLines()
	if r != nil {
		c.cfg.VirtualServices = append(c.cfg.VirtualServices, r)
	}
	return nil
}

func (c *configDecoder) dupName(e *decodedTraffic, prev *trafficEntry, item *yaml.Node) error {
	return &ConfigError{Source: c.d.source, Entry: e.label, Field: "metadata.name", Line: c.d.line(item),
		Err: fmt.Errorf("duplicate name %q (first in %s[%d])", e.key(), prev.kind, prev.index)}
}

// opts are the options entries are compiled with. Label keys are checked in finish, once
// every workload is known.
func (c *configDecoder) opts() TrafficOptions { return TrafficOptions{} }

// finishTraffic checks the config's rules and services together (checkTraffic), with the
// label keys its workloads carry, and that they index.
func (c *configDecoder) finishTraffic() error {
	cfg := c.cfg
	if len(cfg.DestinationRules) == 0 && len(cfg.VirtualServices) == 0 {
		return nil
	}
	keys := map[string]bool{}
	for _, w := range cfg.Workloads {
		for k := range w.Labels {
			keys[k] = true
		}
	}
	opts := TrafficOptions{LabelKeys: func(k string) bool { return keys[k] }}
	_, _, errs := checkTraffic(cfg.DestinationRules, cfg.VirtualServices, opts)
	if len(errs) > 0 {
		e := errs[0]
		entries := c.traffic.dests
		if e.Kind == kindVirtualService {
			entries = c.traffic.routes
		}
		if te := entries[e.Namespace+"/"+e.Name]; te != nil {
			return &ConfigError{Source: c.d.source, Entry: te.label, Field: join("spec", e.Field),
				Line: lineOf(te.lines, e.Field, te.line), Err: e.Err}
		}
		return &ConfigError{Source: c.d.source, Err: e}
	}
	if _, err := NewTrafficIndex(cfg.DestinationRules, cfg.VirtualServices); err != nil {
		return &ConfigError{Source: c.d.source, Err: err} // cannot happen: checkTraffic found nothing
	}
	return nil
}

// decodedTraffic is a rule or service being decoded.
type decodedTraffic struct {
	trafficEntry
	name, ns string
	refs     []specRef // per line of the spec's JSON
}

func (e *decodedTraffic) key() string { return e.ns + "/" + e.name }

// keepLines keeps the lines of the fields checkTraffic may name, and lets the rest go.
func (e *decodedTraffic) keepLines() {
	for _, r := range e.refs {
		if crossChecked(r.path) {
			if e.lines == nil {
				e.lines = map[string]int{}
			}
			if _, ok := e.lines[r.path]; !ok {
				e.lines[r.path] = r.line
			}
		}
	}
	e.refs = nil
}

// crossChecked reports whether checkTraffic may name the spec field at path.
func crossChecked(path string) bool {
	return path == "host" || strings.HasPrefix(path, "hosts[") || strings.HasSuffix(path, ".destination.subset") ||
		strings.HasPrefix(path, "subsets[") && strings.Contains(path, ".labels") || strings.Contains(path, "failoverPriority[")
}

// trafficObject decodes entry i of list (a rule or service: apiVersion, kind, metadata, spec)
// into msg.
func (d *decoder) trafficObject(list string, i int, kind, k8sKind string, n *yaml.Node, msg proto.Message) (*decodedTraffic, error) {
	e := &decodedTraffic{trafficEntry: trafficEntry{kind: list, index: i, line: d.line(n)}}
	d.entry = fmt.Sprintf("%s[%d]", list, i)
	meta := mappingValue(n, "metadata")
	if ns, name := scalarValue(meta, "namespace"), scalarValue(meta, "name"); ns != "" && name != "" {
		d.entry += fmt.Sprintf(" (%s %q)", kind, ns+"/"+name)
	}
	e.label = d.entry
	defer func() { d.entry = "" }()
	err := d.mapping(n, "", map[string]handler{
		"apiVersion": enum(d, new(string), oneOf("apiVersion", "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")),
		"kind":       enum(d, new(string), oneOf("kind", k8sKind)),
		"metadata": func(v *yaml.Node, f string) error {
			return d.mapping(v, f, map[string]handler{
				"name":      d.setStr(&e.name),
				"namespace": d.setStr(&e.ns),
			}, "name", "namespace")
		},
		"spec": func(v *yaml.Node, f string) (err error) {
			e.refs, err = d.spec(v, f, msg)
			return err
		},
	}, "metadata", "spec")
	if err == nil && (e.name == "" || e.ns == "") {
		err = d.fail(meta, "metadata", "empty name or namespace")
	}
	return e, err
}

// mappingValue returns the value of key in mapping n (aliases followed), or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// trafficError turns a compile error of entry e into a *ConfigError naming the line of the
// field (or of the nearest enclosing field the spec's lines know).
func (d *decoder) trafficError(e *trafficEntry, refs []specRef, err error) error {
	te, ok := err.(*TrafficError)
	if !ok {
		return &ConfigError{Source: d.source, Entry: e.label, Line: e.line, Err: err}
	}
	lines := make(map[string]int, len(refs))
	for _, r := range refs {
		if _, dup := lines[r.path]; !dup {
			lines[r.path] = r.line
		}
	}
	return &ConfigError{Source: d.source, Entry: e.label, Field: join("spec", te.Field), Line: lineOf(lines, te.Field, e.line), Err: te.Err}
}

// lineOf returns the line of field, or of the nearest field enclosing it that lines has, or def.
func lineOf(lines map[string]int, field string, def int) int {
	for f := field; f != ""; f = parentField(f) {
		if l, ok := lines[f]; ok {
			return l
		}
	}
	if l, ok := lines[""]; ok {
		return l
	}
	return def
}

// parentField strips the last ".name" or "[index]" of a field path.
func parentField(f string) string {
	i := strings.LastIndexAny(f, ".[")
	if strings.HasSuffix(f, "\"]") {
		// A quoted key may hold dots and brackets: its "[" is the one before the opening quote.
		if j := strings.LastIndex(f[:len(f)-2], "[\""); j >= 0 {
			i = j
		}
	}
	if i <= 0 {
		return ""
	}
	return f[:i]
}

// specRef is where one line of a spec's JSON came from.
type specRef struct {
	path string // the field, relative to spec ("" for spec itself)
	line int    // in the YAML
}

// specJSON converts the YAML of a spec to JSON for protojson, one field or list item per line,
// so that a line protojson reports names the YAML node it came from.
type specJSON struct {
	d    *decoder
	buf  []byte
	refs []specRef // refs[i] is JSON line i+1
}

// spec decodes the spec at n (field f) into msg.
func (d *decoder) spec(n *yaml.Node, f string, msg proto.Message) ([]specRef, error) {
	if n.Kind != yaml.MappingNode {
		return nil, d.fail(n, f, "want a mapping, got %s", kindName(n))
	}
	s := &specJSON{d: d, refs: []specRef{{"", d.line(n)}}}
	if err := s.value(n, "", msg.ProtoReflect().Descriptor()); err != nil {
		return nil, err
	}
	if err := protojson.Unmarshal(s.buf, msg); err != nil {
		line, text := protojsonError(err)
		ref := specRef{line: d.line(n)}
		if line >= 1 && line <= len(s.refs) {
			ref = s.refs[line-1]
		}
		return nil, &ConfigError{Source: d.source, Entry: d.entry, Field: join(f, ref.path), Line: ref.line, Err: fmt.Errorf("%s", text)}
	}
	return s.refs, nil
}

func (s *specJSON) newline(path string, n *yaml.Node) {
	s.buf = append(s.buf, '\n')
	s.refs = append(s.refs, specRef{path, s.d.line(n)})
}

// value appends the JSON of node n, whose field path (relative to spec) is path and whose type
// is md: a message, a map entry (for the map's values), or nil (not a message, or unknown).
// Unknown fields are left to protojson, except that the case-insensitive match of a field name
// is suggested; a Duration may be written as Kubernetes does ("1m", "1h30m", as time.ParseDuration
// reads it) as well as in protojson's seconds ("60s").
func (s *specJSON) value(n *yaml.Node, path string, md protoreflect.MessageDescriptor) error {
	field := join("spec", path)
	n, err := s.d.resolve(n, field)
	if err != nil {
		return err
	}
	if err := s.d.charge(n, field, trafficNodeCost-1); err != nil {
		return err
	}
	switch n.Kind {
	case yaml.MappingNode:
		s.buf = append(s.buf, '{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, err := s.d.resolve(n.Content[i], field)
			if err != nil {
				return err
			}
			if err := s.d.charge(k, field, trafficNodeCost-1); err != nil {
				return err
			}
			if k.Kind != yaml.ScalarNode {
				return s.d.fail(k, field, "want a field name, got %s", kindName(k))
			}
			kp := fieldKey(path, k.Value)
			child, err := s.child(md, k, kp)
			if err != nil {
				return err
			}
			if i > 0 {
				s.buf = append(s.buf, ',')
			}
			s.newline(kp, k)
			s.buf = appendJSONString(s.buf, k.Value)
			s.buf = append(s.buf, ':')
			if err := s.value(n.Content[i+1], kp, child); err != nil {
				return err
			}
		}
		s.buf = append(s.buf, '}')
	case yaml.SequenceNode:
		s.buf = append(s.buf, '[')
		for i, item := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			if i > 0 {
				s.buf = append(s.buf, ',')
			}
			s.newline(ip, item)
			if err := s.value(item, ip, md); err != nil {
				return err
			}
		}
		s.buf = append(s.buf, ']')
	case yaml.ScalarNode:
		if md != nil && md.FullName() == "google.protobuf.Duration" && n.ShortTag() == "!!str" {
			s.buf = appendDuration(s.buf, n.Value)
			break
		}
		s.buf = appendScalar(s.buf, n)
	default:
		return s.d.fail(n, field, "unexpected %s", kindName(n))
	}
	return nil
}

// child returns the type of the value of key k in a mapping of type md (see value).
func (s *specJSON) child(md protoreflect.MessageDescriptor, k *yaml.Node, path string) (protoreflect.MessageDescriptor, error) {
	if md == nil {
		return nil, nil
	}
	if md.IsMapEntry() {
		return md.Fields().ByName("value").Message(), nil
	}
	fields := md.Fields()
	fd := fields.ByJSONName(k.Value)
	if fd == nil {
		fd = fields.ByTextName(k.Value)
	}
	if fd == nil {
		hint, best := "", 3 // suggest a field at most 2 edits away
		for i := range fields.Len() {
			name := fields.Get(i).JSONName()
			if d := editDistance(strings.ToLower(name), strings.ToLower(k.Value), best); d < best {
				hint, best = fmt.Sprintf(" (did you mean %q?)", name), d
			}
		}
		return nil, s.d.fail(k, join("spec", path), "unknown field%s", hint)
	}
	return fd.Message(), nil
}

// editDistance returns the Levenshtein distance of a and b, or limit if it is at least limit.
func editDistance(a, b string, limit int) int {
	if len(a)-len(b) >= limit || len(b)-len(a) >= limit {
		return limit
	}
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], limit)
}

// appendDuration appends a duration written as Go (and Kubernetes) write them, "1m30s", in
// protojson's form, "90s"; anything time.ParseDuration does not read is left for protojson.
func appendDuration(b []byte, v string) []byte {
	d, err := time.ParseDuration(v)
	if err != nil {
		return appendJSONString(b, v)
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	return appendJSONString(b, fmt.Sprintf("%s%d.%09ds", sign, d/time.Second, d%time.Second))
}

// appendScalar appends a YAML scalar as JSON: null and booleans as such; numbers as strings,
// which protojson takes for any number field (and a string field then gets the text as
// written, as "version: 3" means in a label); anything else as a string.
func appendScalar(b []byte, n *yaml.Node) []byte {
	switch n.ShortTag() {
	case "!!null":
		return append(b, "null"...)
	case "!!bool":
		var v bool
		if n.Decode(&v) == nil {
			return strconv.AppendBool(b, v)
		}
	case "!!float":
		switch strings.ToLower(n.Value) {
		case ".inf", "+.inf":
			return appendJSONString(b, "Infinity")
		case "-.inf":
			return appendJSONString(b, "-Infinity")
		case ".nan":
			return appendJSONString(b, "NaN")
		}
	}
	return appendJSONString(b, n.Value)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}

// protojsonLine finds the position protojson errors carry.
var protojsonLine = regexp.MustCompile(`\(line (\d+):\d+\):? ?`)

// protojsonValue matches protojson's "invalid value for <type> field <name>: <value>".
var protojsonValue = regexp.MustCompile(`^invalid value for (\w+) (?:field|type) \w*:? ?(.*)$`)

// protojsonError returns the JSON line of a protojson error (0 if none) and its text without
// the "proto:" prefix and position, reworded where it names JSON rather than YAML.
func protojsonError(err error) (int, string) {
	msg := strings.TrimSpace(strings.TrimPrefix(err.Error(), "proto:"))
	line := 0
	if m := protojsonLine.FindStringSubmatchIndex(msg); m != nil {
		line, _ = strconv.Atoi(msg[m[2]:m[3]])
		msg = strings.TrimSpace(msg[:m[0]] + msg[m[1]:])
	}
	if rest, ok := strings.CutPrefix(msg, "syntax error"); ok {
		rest = strings.TrimSpace(rest)
		switch tok, _ := strings.CutPrefix(rest, "unexpected token "); tok {
		case "{":
			return line, "wrong type: got a mapping"
		case "[":
			return line, "wrong type: got a list"
		}
		return line, "wrong type: " + rest
	}
	if m := protojsonValue.FindStringSubmatch(msg); m != nil {
		want := map[string]string{
			"uint32": "a non-negative integer", "uint64": "a non-negative integer", "fixed32": "a non-negative integer",
			"int32": "an integer", "int64": "an integer", "sint32": "an integer",
			"string": "a string", "bool": "true or false", "double": "a number", "float": "a number",
		}[m[1]]
		got := m[2]
		switch got {
		case "{":
			got = "a mapping"
		case "[":
			got = "a list"
		}
		if want != "" {
			return line, fmt.Sprintf("want %s, got %s", want, got)
		}
	}
	return line, msg
}

// labels decodes a workload's labels: {key: value}, keys non-empty. Equal label maps (the
// replicas of a deployment) are shared.
func (d *decoder) labels(n *yaml.Node, field string) (map[string]string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, d.fail(n, field, "want a mapping of label to value, got %s", kindName(n))
	}
	out := make(map[string]string, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, err := d.resolve(n.Content[i], field)
		if err != nil {
			return nil, err
		}
		key, err := d.str(kn, field)
		if err != nil {
			return nil, err
		}
		f := fieldKey(field, key)
		switch _, dup := out[key]; {
		case key == "" || strings.TrimSpace(key) != key:
			return nil, d.fail(kn, field, "invalid label key %q", key)
		case dup:
			return nil, d.fail(kn, f, "label set twice")
		}
		vn, err := d.resolve(n.Content[i+1], f)
		if err != nil {
			return nil, err
		}
		if out[key], err = d.str(vn, f); err != nil {
			return nil, err
		}
	}
	return d.sharedLabels(out), nil
}

// sharedLabels returns the label map equal to m that an earlier workload of the config has,
// else m.
func (d *decoder) sharedLabels(m map[string]string) map[string]string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var enc []byte
	for _, k := range keys {
		enc = strconv.AppendQuote(enc, k)
		enc = strconv.AppendQuote(enc, m[k])
	}
	if shared, ok := d.labelMaps[string(enc)]; ok {
		return shared
	}
	if d.labelMaps == nil {
		d.labelMaps = map[string]map[string]string{}
	}
	d.labelMaps[string(enc)] = m
	return m
}
