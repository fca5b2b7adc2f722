package workload

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

// cmpStrict compares configs exactly: nil and empty differ (the admin dump shows them apart).
// The sources of traffic policies are proto messages.
var cmpStrict = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	protocmp.Transform(),
}

// checkSplitMatchesWhole parses data in pieces of one list item each (the most cuts) and as a
// whole. Whenever the pieces succeed, the whole must succeed with the same config. It returns
// whether the pieces succeeded.
func checkSplitMatchesWhole(t *testing.T, data []byte) bool {
	t.Helper()
	split, err := parseSplit("test.yaml", data, 1, limitsFor(0))
	if err != nil {
		return false
	}
	whole, _, err := parseWhole("test.yaml", data, limitsFor(0))
	if err != nil {
		t.Fatalf("parsed in pieces, but as a whole: %v\n%s", err, data)
	}
	if diff := cmp.Diff(whole, split, cmpStrict); diff != "" {
		t.Fatalf("pieces differ from whole (-whole +pieces):\n%s\n%s", diff, data)
	}
	return true
}

// splitCases are configs with, for each, whether the fast path must take it (split) or must
// leave it to the whole parse.
var splitCases = []struct {
	name  string
	data  string
	split bool
}{
	{"localhost", localhostYAML, true},
	{"bench shape", string(bigLocalConfig(40, 7)), true},
	{"indented items and comments", "# head\n\nworkloads: # list\n  # first\n  - uid: u1\n    name: a\n    namespace: ns\n    # inside\n    workloadIps:\n    - 10.0.0.1\n\n# between\n  - uid: u2\n    name: b\n    namespace: ns\n    hostname: h\n# tail\n", true},
	{"inline values", "workloads: []\nservices: ~\npolicies:\n", true},
	{"mapping value", "workloads:\n  uid: u1\n", false},
	{"block scalar", "workloads:\n- uid: u1\n  name: |\n    a\n    - b\n  namespace: ns\n  hostname: h\n", true},
	{"flow items", "workloads:\n- {uid: u1, name: a, namespace: ns,\n   workloadIps: [10.0.0.1]}\n- {uid: u2, name: b, namespace: ns, hostname: h}\n", true},
	{"anchor in item", wl("  services: {\"ns/a.b\": &p {80: 8080}, \"ns/c.d\": *p}\n"), true},
	{"alias across items", "workloads:\n- &w {uid: u, name: n, namespace: ns, workloadIps: []}\n- *w\n", false},
	{"quoted scalar across items", "workloads:\n- uid: \"u1\n- x\"\n  name: a\n  namespace: ns\n  hostname: h\n", false},
	{"flow list across lines", "workloads: [\n  {uid: u1, name: a, namespace: ns, hostname: h}\n]\n", false},
	{"field twice", wl("") + wl(""), false},
	{"unknown field", wl("") + "extra: 1\n", false},
	{"document marker", "---\n" + wl(""), true},
	{"document marker after a comment", "# head\n--- # start\n" + wl(""), true},
	{"document marker with content", "--- workloads: []\n", false},
	{"two document markers", "---\n---\n" + wl(""), false},
	{"second document", wl("") + "---\n" + wl(""), false},
	{"crlf", strings.ReplaceAll(wl(""), "\n", "\r\n"), true},
	{"crlf and a lone cr", strings.ReplaceAll(wl(""), "\n", "\r\n") + "# a\rb\n", false},
	{"cr line ends", strings.ReplaceAll(wl(""), "\n", "\r"), false},
	{"tab indentation", "workloads:\n\t- uid: u1\n", false},
	{"bad item", wl("  workloadIps: [\"10.0.0.300\"]\n"), false},
	{"dedent inside list", "workloads:\n  - uid: u1\n name: a\n", false},
}

func TestParseSplitMatchesWhole(t *testing.T) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := append(splitCases[:len(splitCases):len(splitCases)], struct {
		name  string
		data  string
		split bool
	}{"full", string(full), true})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkSplitMatchesWhole(t, []byte(tc.data)); got != tc.split {
				t.Errorf("parsed in pieces: %v, want %v", got, tc.split)
			}
		})
	}
}

// A large config with a bad entry reports the error of the whole parse, line included.
func TestParseLocalConfigLargeError(t *testing.T) {
	data := bigLocalConfig(2000, 100)
	good := "      - 10.100.3.232\n" // workload 1000's IP
	i := strings.Index(string(data), good)
	if i < 0 || len(data) < minSplitSize {
		t.Fatalf("test config is not what the test expects")
	}
	bad := append(append(append([]byte{}, data[:i]...), "      - 10.100.3.300\n"...), data[i+len(good):]...)
	_, err := ParseLocalConfig("big.yaml", bad)
	_, _, wholeErr := parseWhole("big.yaml", bad, limitsFor(0))
	if err == nil || wholeErr == nil || err.Error() != wholeErr.Error() {
		t.Fatalf("error = %v, want the whole parse's %v", err, wholeErr)
	}
	line := strings.Count(string(bad[:i]), "\n") + 1
	want := `big.yaml: workloads[1000] (uid "Kubernetes//v1/Pod/synth-0/wl-1000"): workloadIps[0]: invalid IP "10.100.3.300" (line ` + strconv.Itoa(line) + ")"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// The fast path is what a large generated config takes: the bench's shape in 64 KiB pieces.
func TestParseLocalConfigLargeIsSplit(t *testing.T) {
	data := bigLocalConfig(2000, 100)
	pieces, ok := splitConfig(data, splitChunk)
	if !ok || len(pieces) < 5 {
		t.Fatalf("splitConfig: ok=%v, %d pieces; want it split", ok, len(pieces))
	}
	covered := 0
	for _, p := range pieces {
		covered += len(p.text)
	}
	if covered != len(data) {
		t.Errorf("pieces cover %d bytes of %d", covered, len(data))
	}
	checkSplitMatchesWhole(t, data)
}

// FuzzParseSplit: whatever parses in pieces parses the same as a whole.
func FuzzParseSplit(f *testing.F) {
	for _, tc := range splitCases {
		f.Add([]byte(tc.data))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSplitMatchesWhole(t, data)
	})
}
