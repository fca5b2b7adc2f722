package workload

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parsing a large local config in pieces. yaml.v3 builds a node tree of the whole document
// before anything is decoded: for 10 000 workloads (3.8 MB of YAML) that is ~80 MB of nodes,
// and the heap the runtime grows for it (and its metadata) stays reserved long after. A config
// in the plain block style that generators write,
//
//	workloads:
//	  - uid: ...
//	    name: ...
//	services:
//	- name: ...
//
// can instead be cut at its top-level keys and between list items, and parsed one piece at a
// time. The cut is textual, so it is used only when every line is of a kind it understands,
// and only as a fast path: if any piece fails to parse or to decode, the config is parsed as a
// whole and the error comes from there, exactly as without the fast path. A cut inside a
// multi-line construct (a quoted or flow scalar spanning lines) leaves that construct
// unterminated in its piece, which then fails to parse; an alias to an anchor in another
// piece fails to resolve. Both fall back.
//
// A config too large to be parsed as a whole (see parseLimits.checkTree) does not fall back:
// the error is the failing piece's, with the entry's index and the line counted in the whole
// config. That is the whole parse's error too, except in the cases above, which a config that
// large cannot use.

// minSplitSize is the config size from which the fast path is tried; smaller ones parse as a
// whole (cheaply).
const minSplitSize = 64 << 10

// splitChunk is the size of the runs of list items parsed at once.
const splitChunk = 64 << 10

// parseSplit parses data in pieces of whole list items of about chunk bytes. It returns
// errNoSplit if data is not in a shape splitConfig handles, else the first error of a piece:
// a *ConfigError, with lines counted in data.
func parseSplit(source string, data []byte, chunk int, lim parseLimits) (*LocalConfig, error) {
	pieces, ok := splitConfig(data, chunk)
	if !ok {
		return nil, errNoSplit
	}
	return decodePieces(source, pieces, lim)
}

// errNoSplit: the config is not in a shape splitConfig can cut.
var errNoSplit = errors.New("config is not in the plain block style")

// pieceKind says how a piece is decoded.
type pieceKind uint8

const (
	pieceRaw   pieceKind = iota // a whole top-level field ("key: value" with what follows): a mapping
	pieceHead                   // "key:" of a list field (and comments): a mapping of key to null
	pieceItems                  // a run of items of the list field key: a block sequence
)

// piece is a run of whole lines of a config.
type piece struct {
	kind  pieceKind
	key   string // the top-level field
	text  []byte
	line  int // line number of the first line of text (1-based)
	items int // list items starting in text (pieceItems)
}

// splitConfig cuts data into pieces covering all of it, in order, with runs of list items cut
// into pieces of about chunk bytes. It reports false if data is
// not in the shape it handles: top-level fields of the config (listFields) at column 0 (each at most once), each either followed on the next lines by a block list ("-"
// items, all at one indentation, with their content indented more), or with its value on the
// same line (the field is then one piece). Blank and comment lines may be anywhere, and a
// document start marker ("---") before the first field. Lines may end in CR LF. No tabs in
// indentation, other CRs, byte-order marks, directives or other document markers.
func splitConfig(data []byte, chunk int) ([]piece, bool) {
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		return nil, false
	}
	const (
		stNone  = iota // before the first field
		stRaw          // in a field whose value is parsed with it
		stHead         // after "key:", before its first item
		stItems        // in the items of a list field
	)
	var (
		pieces    []piece
		state     = stNone
		key       string
		indent    int // of the items of the current list field
		items     int // items in the current, unflushed piece
		start     = 0 // offset of the first line of the current piece
		startLine = 1
		seen      = map[string]bool{}
		line      int  // of the line at pos
		started   bool // a document start marker was seen
	)
	flush := func(end, endLine int, kind pieceKind) {
		pieces = append(pieces, piece{kind: kind, key: key, text: data[start:end], line: startLine, items: items})
		start, startLine, items = end, endLine, 0
	}
	closeField := func(end, endLine int) {
		switch state {
		case stRaw, stHead: // stHead: "key:" with nothing after it, a null value
			flush(end, endLine, pieceRaw)
		case stItems:
			flush(end, endLine, pieceItems)
		}
	}
	for pos := 0; pos < len(data); {
		line++
		next := len(data)
		if i := bytes.IndexByte(data[pos:], '\n'); i >= 0 {
			next = pos + i + 1
		}
		l := bytes.TrimSuffix(bytes.TrimSuffix(data[pos:next], []byte("\n")), []byte("\r"))
		rest := bytes.TrimLeft(l, " ")
		ind := len(l) - len(rest)
		switch {
		case bytes.IndexByte(l, '\r') >= 0, len(rest) > 0 && rest[0] == '\t':
			return nil, false
		case state == stNone && !started && isDocStart(l):
			started = true
			pos = next // part of the first piece
			continue
		case ind == 0 && (bytes.HasPrefix(l, []byte("---")) || bytes.HasPrefix(l, []byte("...")) || bytes.HasPrefix(l, []byte("%"))):
			return nil, false
		}
		if len(rest) == 0 || rest[0] == '#' { // blank or comment: part of the current piece
			pos = next
			continue
		}
		item := bytes.Equal(rest, []byte("-")) || bytes.HasPrefix(rest, []byte("- "))
		switch {
		case state == stItems && ind == indent && item:
			if pos-start >= chunk { // cut before this item
				flush(pos, line, pieceItems)
			}
			items++
		case state == stHead && item:
			flush(pos, line, pieceHead)
			state, indent, items = stItems, ind, 1
		case ind == 0 && !item:
			name, inline, ok := fieldLine(l)
			if !ok || seen[name] {
				return nil, false
			}
			seen[name] = true
			closeField(pos, line)
			key, state = name, stHead
			if inline {
				state = stRaw
			}
		case state == stItems && ind > indent:
		case state == stHead && ind > 0: // a value other than a block list
			state = stRaw
		case state == stRaw && ind > 0:
		default:
			return nil, false
		}
		pos = next
	}
	if state == stNone {
		return nil, false
	}
	closeField(len(data), line+1)
	return pieces, true
}

// isDocStart reports whether l is a document start marker with nothing after it but a comment.
func isDocStart(l []byte) bool {
	rest, ok := bytes.CutPrefix(l, []byte("---"))
	if !ok {
		return false
	}
	if len(rest) == 0 {
		return true
	}
	rest = bytes.TrimLeft(rest, " ")
	return len(rest) < len(l)-3 && (len(rest) == 0 || rest[0] == '#')
}

// fieldLine parses a top-level field line "name:" or "name: value"; inline reports whether a
// value (not just a comment) follows the colon. Only the config's fields are accepted.
func fieldLine(l []byte) (name string, inline, ok bool) {
	k, v, found := bytes.Cut(l, []byte(":"))
	if !found || (len(v) > 0 && v[0] != ' ') {
		return "", false, false
	}
	if !slices.Contains(listFields, string(k)) {
		return "", false, false
	}
	name = string(k)
	v = bytes.TrimLeft(v, " ")
	return name, len(v) > 0 && v[0] != '#', true
}

// decodePieces decodes a config cut by splitConfig. Any error means: parse it as a whole if
// that can be afforded.
func decodePieces(source string, pieces []piece, lim parseLimits) (*LocalConfig, error) {
	c := newConfigDecoder(source, lim)
	d := c.d
	d.budget-- // the top-level mapping, as when parsed whole
	handlers := c.handlers()
	for i, p := range pieces {
		shape := func() error {
			return &ConfigError{Source: source, Line: p.line,
				Err: errors.New("the lines from here do not parse on their own as the list items or field they look like")}
		}
		if err := lim.checkTree(p.text); err != nil {
			return nil, &ConfigError{Source: source, Line: p.line, Err: err}
		}
		var root yaml.Node
		if err := yaml.Unmarshal(p.text, &root); err != nil {
			return nil, pieceYAMLError(source, p.line, err)
		}
		if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
			return nil, shape()
		}
		n := root.Content[0]
		d.lineBase = p.line - 1
		clear(d.expanded) // aliases of this piece cannot refer to the trees of others: let them go
		switch p.kind {
		case pieceRaw:
			if n.Kind != yaml.MappingNode || len(n.Content) != 2 || n.Content[0].Value != p.key {
				return nil, shape()
			}
			if err := d.mapping(n, "", handlers); err != nil {
				return nil, err
			}
		case pieceHead:
			if n.Kind != yaml.MappingNode || len(n.Content) != 2 || n.Content[0].Value != p.key || !isNull(n.Content[1]) {
				return nil, shape()
			}
			d.budget -= 2 // the field's value and list, as when parsed whole
			if p.key == "workloads" {
				c.reserveWorkloads(itemsOf(pieces[i+1:], p.key))
			}
		case pieceItems:
			if n.Kind != yaml.SequenceNode {
				return nil, shape()
			}
			if err := c.list(p.key, n, p.key); err != nil {
				return nil, err
			}
		}
	}
	d.lineBase = 0
	return c.finish()
}

// pieceYAMLError is the error of parsing the piece that starts at line first: yaml.v3's
// "yaml: line N: ..." with N counted in the whole config, worded as when parsed whole.
func pieceYAMLError(source string, first int, err error) error {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
		if num, tail, ok := strings.Cut(rest, ":"); ok {
			if n, perr := strconv.Atoi(num); perr == nil {
				return &ConfigError{Source: source, Err: fmt.Errorf("parse YAML: yaml: line %d:%s", first-1+n, tail)}
			}
		}
	}
	return &ConfigError{Source: source, Line: first, Err: fmt.Errorf("parse YAML of the lines from here: %w", err)}
}

// itemsOf counts the list items of field key in the pieces that follow its head.
func itemsOf(pieces []piece, key string) int {
	n := 0
	for _, p := range pieces {
		if p.kind != pieceItems || p.key != key {
			break
		}
		n += p.items
	}
	return n
}
