package workload

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"unicode/utf16"

	"go.yaml.in/yaml/v3"
)

// countNodes counts the nodes of a yaml.v3 tree, each once (aliases are not followed).
func countNodes(n *yaml.Node) int {
	c := 1
	for _, k := range n.Content {
		c += countNodes(k)
	}
	return c
}

// treeNodes parses every document of data as parseDocument does and returns how many nodes
// their trees have, or false if data does not parse.
func treeNodes(data []byte) (int, bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	total := 0
	for {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			return total, true
		}
		if err != nil {
			return 0, false
		}
		total += countNodes(&root)
	}
}

// utf16LE encodes s as UTF-16LE with a byte-order mark, which yaml.v3 reads too.
func utf16LE(s string) string {
	b := []byte{0xff, 0xfe}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return string(b)
}

// nodeBoundSeeds are documents dense in nodes, of every construct that makes them.
var nodeBoundSeeds = []string{
	"", "a", "-", "- ", ":", "? ", "?", "[", "{", "*a", "&a a", "---", "--- a\n--- b\n...\n--- c\n",
	"[a: b]", "[? a]", "[a, b,]", "{a, b, c}", "{a: , : b, ?}", "{: }", "[[[]], [[]]]", "[{}, {}, {a}]",
	"- - - - x", "-\n-\n-\n", "- {}\n- {}\n", "a:\n b:\n  c:\n", "? a\n? b\n: c\n", ": a\n: b\n",
	"a: &x [1, 2]\nb: *x\nc: [*x, *x]\n", "a: |\n  - b: c\n", "a: 'x - y, z: [w'\n", "a: \"- ,:[{\"\n",
	"a: b # c: d, [e]\n", "a:\n- b\n- c: d\n  e: f\n", "!!map {? !!str a : !!null ''}", "[a\n,b\n,c]",
	"%YAML 1.1\n---\na: b\n", "a: -1\nb: [-1, -2]\n", "a:\u0085- b\n", "[a,\u2028b]",
	utf16LE("a: [1, 2, {b: c}]\n- d\n"), utf16LE("- - x\n- y\n"),
}

// The bound nodeBound computes is never below the node count of the trees yaml.v3 builds.
func TestNodeBoundCoversTree(t *testing.T) {
	seeds := append([]string{}, nodeBoundSeeds...)
	for _, tc := range splitCases {
		seeds = append(seeds, tc.data)
	}
	if full, err := os.ReadFile("testdata/full.yaml"); err == nil {
		seeds = append(seeds, string(full))
	}
	parsed := 0
	for _, s := range seeds {
		n, ok := treeNodes([]byte(s))
		if !ok {
			continue
		}
		parsed++
		if b := nodeBound([]byte(s), 1<<30); b < n {
			t.Errorf("nodeBound(%q) = %d, below the %d nodes yaml.v3 builds", s, b, n)
		}
	}
	if parsed < len(seeds)/2 {
		t.Errorf("only %d of %d seeds parse: the test checks too little", parsed, len(seeds))
	}
}

// The bound is tight enough for real configs: about 2 per node of the bench's shape.
func TestNodeBoundOfGeneratedConfig(t *testing.T) {
	data := bigLocalConfig(1000, 100)
	n, ok := treeNodes(data)
	if !ok {
		t.Fatal("generated config does not parse")
	}
	b := nodeBound(data, 1<<30)
	t.Logf("%d bytes, %d nodes, bound %d (%.1f bytes per bound node)", len(data), n, b, float64(len(data))/float64(b))
	if b > 3*n {
		t.Errorf("bound %d is more than 3 times the %d nodes", b, n)
	}
	if got := nodeBound(data, 100); got <= 100 || got > 110 {
		t.Errorf("nodeBound with limit 100 = %d, want it to stop just above 100", got)
	}
}

func FuzzNodeBound(f *testing.F) {
	for _, s := range nodeBoundSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if n, ok := treeNodes(data); ok {
			if b := nodeBound(data, 1<<30); b < n {
				t.Errorf("nodeBound = %d, below the %d nodes yaml.v3 builds", b, n)
			}
		}
	})
}

func TestHasDocument(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{"", false},
		{"\n\n  \r\n", false},
		{"# a\n   # b: c\r\n#d", false},
		{"\t\n", true}, // left to the parser: yaml.v3 refuses it
		{"# a\rb: c\n", true},
		{"# a\u0085b: c\n", true},
		{"# a\u2028b: c\n", true},
		{"# ünïcödé\n", false},
		{"\xef\xbb\xbf# only a comment after a byte-order mark\n", false},
		{"workloads: []", true},
		{"# head\nworkloads: # list\n", true},
		{"---\n", true},
		{"a#b\n", true},
		{"  ~\n", true},
	} {
		if got := hasDocument([]byte(tc.data)); got != tc.want {
			t.Errorf("hasDocument(%q) = %v, want %v", tc.data, got, tc.want)
		}
		// What hasDocument calls empty, yaml.v3 finds no document in.
		if !tc.want {
			if n, ok := treeNodes([]byte(tc.data)); !ok || n != 0 {
				t.Errorf("yaml.v3 finds %d nodes (ok %v) in %q", n, ok, tc.data)
			}
		}
	}
}

// A config too large to be parsed as a whole reports the error of the piece that failed, with
// the entry's index and the line counted in the whole config, as the whole parse would; one
// that cannot be cut into pieces says it is too large and why.
func TestParseTooLargeForWholeReportsPieceError(t *testing.T) {
	data := string(bigLocalConfig(3000, 100))
	lim := parseLimits{maxBytes: 1 << 20, treeNodes: 1 << 16, treeBytes: 1 << 30, decodeBudget: 1 << 30, aliasBudget: 1 << 30}
	if nodeBound([]byte(data), lim.treeNodes) <= lim.treeNodes {
		t.Fatal("test config is small enough to be parsed whole")
	}
	good := "    name: wl-2500\n"
	for _, tc := range []struct{ name, bad, want string }{
		{"bad IP", "    name: wl-2500\n    workloadIps: [\"10.0.0.300\"]\n", ""},
		{"unknown field", "    name: wl-2500\n    nmae: x\n", ""},
		{"YAML syntax", "    name: [wl-2500\n", ""},
		{"not in pieces", "    name: wl-2500\n\tx: 1\n", "big.yaml: too many YAML nodes to parse at once: up to 65537, limit 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(data, good, tc.bad, 1)
			_, _, err := parseLocalConfig("big.yaml", []byte(bad), lim)
			if tc.want != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
					t.Errorf("error = %v, want %q", err, tc.want)
				}
				return
			}
			_, _, wholeErr := parseWhole("big.yaml", []byte(bad), limitsFor(0))
			if err == nil || wholeErr == nil {
				t.Fatalf("errors %v and %v (whole), want both", err, wholeErr)
			}
			if err.Error() != wholeErr.Error() {
				t.Errorf("error = %q\nwhole parse's: %q", err, wholeErr)
			}
		})
	}
}
