package workload

import (
	"bytes"
	"fmt"
)

// What parsing a local config may cost. A file is read only up to its size limit
// (FileSource.MaxBytes), and everything else is bounded in proportion to that limit, so that
// no content under it, however hostile, can make the proxy use more than a few times the limit
// in memory (at most about 6 times in the tests of file_hostile_test.go):
//
//   - The YAML node tree. yaml.v3 builds the tree of a whole document before anything can be
//     checked, at 100 to 250 bytes of heap per node, and a byte of YAML can be a node (a flow
//     list of ints, "{a,a,a}", "- {}" lines). Before any text is parsed, nodeBound counts an
//     upper bound of the nodes its tree can have; a text whose bound exceeds treeNodes is not
//     parsed. A large config in the plain block style is parsed item by item (see
//     localconfig_split.go) and needs room for one item at a time only.
//   - Long scalars and comments. yaml.v3 holds a token being scanned in a buffer grown by
//     doubling, then copies it: one long token costs 6 to 8 times its length. A text parsed
//     at once may be at most treeBytes long, a quarter of the size limit.
//   - Decoding. The decoder charges every node it visits, following aliases, and entryCost
//     for every entry (workload, service, policy, destination rule, virtual service), against
//     decodeBudget: the number of entries is bounded by it, and with them the memory of the
//     result. A node of a destination rule's or virtual service's spec costs trafficNodeCost
//     (localconfig_traffic.go), for its JSON, proto and compiled forms. With the entry cost, the decoded
//     config and its snapshot take about 18 bytes per unit whether its entries are small or
//     large. Each alias resolved is charged what it expands to against aliasBudget, an eighth
//     of that: a "billion laughs" fails at its first large alias, before it is walked.
//   - Nesting needs nothing more: yaml.v3 refuses documents nested deeper than 10 000 levels,
//     and the decoder only descends as deep as the schema does (a policy's rules, the deepest,
//     are lists of lists of lists of mappings).

// DefaultLocalConfigMaxBytes is the size limit of a local config file when FileSource.MaxBytes
// is zero (LOCAL_XDS_MAX_BYTES): 64 MiB. The bench's synthetic config of 100 000 workloads and
// 10 000 services (bench/synthetic.go) is 37 MiB.
const DefaultLocalConfigMaxBytes = 64 << 20

// Budgets per byte of the size limit. The bench's synthetic config has one YAML node per 18
// bytes, a node bound (nodeBound) of one per 7.5 bytes, and needs one decoding unit (21
// nodes and an entry cost per workload) per 10 bytes.
const (
	bytesPerDecodeUnit = 8       // 8 Mi units for the default limit: 220 000 workloads like the bench's
	bytesPerTreeNode   = 64      // 1 Mi for the default limit: at most about 250 MB of nodes
	minBudget          = 1 << 18 // so that any piece of about splitChunk bytes fits (nodeBound <= 3 per byte)
	minTreeBytes       = 1 << 20
	entryCost          = 16 // decoding units per entry on top of its nodes, for its fixed size
)

// parseLimits bound the memory of parsing one config.
type parseLimits struct {
	maxBytes     int64 // the size limit the others derive from (for messages)
	treeNodes    int   // most nodes (as bounded by nodeBound) of one text parsed at once
	treeBytes    int   // longest text parsed at once
	decodeBudget int   // most units of decoding: nodes visited, each alias expanded, and entryCost per entry
	aliasBudget  int   // most nodes aliases expand to, in all
}

// limitsFor returns the limits for a size limit of maxBytes (<= 0: the default).
func limitsFor(maxBytes int64) parseLimits {
	if maxBytes <= 0 {
		maxBytes = DefaultLocalConfigMaxBytes
	}
	return parseLimits{
		maxBytes:     maxBytes,
		treeNodes:    int(max(maxBytes/bytesPerTreeNode, minBudget)),
		treeBytes:    int(max(maxBytes/4, minTreeBytes)),
		decodeBudget: int(max(maxBytes/bytesPerDecodeUnit, minBudget)),
		aliasBudget:  int(max(maxBytes/bytesPerDecodeUnit/8, minBudget)),
	}
}

// checkTree returns an error if text is too large to be parsed at once: too long, or with
// too many nodes.
func (l parseLimits) checkTree(text []byte) error {
	const hint = "; a config in the plain block style (top-level fields at column 0, one \"- \" line per list item) " +
		"is parsed one item at a time and needs room for one item only"
	if len(text) > l.treeBytes {
		return fmt.Errorf("too large to parse at once: %d bytes, limit %d (a quarter of the size limit "+
			"LOCAL_XDS_MAX_BYTES=%d)"+hint, len(text), l.treeBytes, l.maxBytes)
	}
	if bound := nodeBound(text, l.treeNodes); bound > l.treeNodes {
		return fmt.Errorf("too many YAML nodes to parse at once: up to %d, limit %d (one per %d bytes of the size "+
			"limit LOCAL_XDS_MAX_BYTES=%d)"+hint, bound, l.treeNodes, bytesPerTreeNode, l.maxBytes)
	}
	return nil
}

// decodeError is the error for a config that needs more than the decoding budget.
func (l parseLimits) decodeError() error {
	return fmt.Errorf("document too large: more than %d units to decode (one per YAML node, aliases expanded, and %d "+
		"per entry, %d per node of a traffic policy's spec; one unit per %d bytes of the size limit LOCAL_XDS_MAX_BYTES=%d)",
		l.decodeBudget, entryCost, trafficNodeCost, bytesPerDecodeUnit, l.maxBytes)
}

// aliasError is the error for aliases that expand to more than the alias budget.
func (l parseLimits) aliasError() error {
	return fmt.Errorf("document too large: aliases expand to more than %d YAML nodes (one per %d bytes of the "+
		"size limit LOCAL_XDS_MAX_BYTES=%d)", l.aliasBudget, 8*bytesPerDecodeUnit, l.maxBytes)
}

// nodeWeight is how many nodes of a YAML tree a byte can account for (see nodeBound).
var nodeWeight = [256]uint8{':': 3, '?': 3, '{': 3, '[': 2, ',': 2, '*': 1}

// nodeBound returns an upper bound of the number of nodes in the yaml.v3 trees of all the
// documents in data, or a number above limit as soon as the bound exceeds it. It reads every
// byte once and ignores context (quotes, comments), which can only make it larger.
//
// Every node of a tree is a document, an alias, a collection or a scalar (possibly an empty one
// the parser adds for a missing key, value or item), and each is owed to an indicator:
//
//   - "-" followed by a blank, a line break or the end (a block entry, or part of "---"):
//     a block sequence starting at that entry and the entry's item, or a document and its root;
//   - ":" or "?": the mapping starting at that key, the key and the value;
//   - "{": the mapping and its first key and value; "[": the sequence and its first item;
//   - ",": the next item, or the next key and its value;
//   - "*": an alias.
//
// A collection's items that are collections or aliases are counted by their own indicators,
// and an item that is a scalar takes the slot its indicator counted. The first document and
// its root are the 2 the count starts from. yaml.v3 reads UTF-16 too; the indicators' bytes
// are the same there, with a NUL after or before each, which counts as a blank.
func nodeBound(data []byte, limit int) int {
	n := 2
	for i, c := range data {
		if c == '-' {
			if i+1 == len(data) || blankOrBreak(data[i+1]) {
				n += 2
			}
		} else {
			n += int(nodeWeight[c])
		}
		if n > limit {
			return n
		}
	}
	return n
}

// blankOrBreak reports whether b can start what yaml.v3 takes for a blank or a line break
// after "-": space, tab, CR, LF, NUL (also the end of the input), or the first byte of NEL,
// LS or PS (any non-ASCII byte, to be safe).
func blankOrBreak(b byte) bool {
	return b == ' ' || b == '\t' || b == '\r' || b == '\n' || b == 0 || b >= 0x80
}

// hasDocument reports whether data may hold a YAML document: false if it is empty or every line
// is blank (spaces only) or a comment (spaces, then "#"), with a UTF-8 byte-order mark
// ignored. With no content line before it, such a line cannot be inside a scalar, so it is a
// comment. Lines end at LF or CR LF; a line with another of yaml.v3's line breaks (CR, NEL, LS,
// PS) in it, and anything else (tabs included), is left to the parser.
func hasDocument(data []byte) bool {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	for len(data) > 0 {
		line, rest, _ := bytes.Cut(data, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		l := bytes.TrimLeft(line, " ")
		if len(l) > 0 && l[0] != '#' || hasBreak(l) {
			return true
		}
		data = rest
	}
	return false
}

// hasBreak reports whether l holds a line break other than LF: CR, NEL, LS or PS.
func hasBreak(l []byte) bool {
	return bytes.IndexByte(l, '\r') >= 0 || bytes.Contains(l, []byte("\u0085")) ||
		bytes.Contains(l, []byte("\u2028")) || bytes.Contains(l, []byte("\u2029"))
}
