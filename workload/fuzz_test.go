package workload

import (
	"os"
	"strings"
	"testing"
	"time"
)

// FuzzParseLocalConfig: parsing never panics, and whatever parses also indexes (the parser's
// checks cover everything NewSnapshot rejects).
func FuzzParseLocalConfig(f *testing.F) {
	if data, err := os.ReadFile("testdata/full.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(localhostYAML))
	f.Add([]byte(wl("  services: {ns/a: {80: 8080}}\n  waypoint: {destination: \"ns/w\", hboneMtlsPort: 15008}\n")))
	f.Add([]byte(svc("  endpoints: {u1: {port: {80: 1}}}\n  loadBalancer: {routingPreferences: [Zone]}\n")))
	f.Add([]byte(pol("  rules: [[[{principals: [{Presence: []}], sourceIps: [\"::1\"]}]]]\n")))
	f.Add([]byte(pol("  rules: &r [&c [&m {destinationPorts: [80]}, *m], *c]\n")))
	f.Add([]byte("workloads:\n- &w {uid: u, name: n, namespace: ns, workloadIps: []}\n- *w\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseLocalConfig("fuzz", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz: ") {
				t.Errorf("error %q does not start with the source", err)
			}
			return
		}
		if _, err := cfg.Snapshot(); err != nil {
			t.Errorf("parsed config does not index: %v", err)
		}
	})
}

// Alias expansion is bounded: a "billion laughs" document (100^4 nodes after expansion, from a
// few kilobytes) fails fast instead of expanding.
func TestParseLocalConfigAliasBomb(t *testing.T) {
	repeat := func(first, alias string) string {
		return "[" + first + strings.Repeat(", "+alias, 99) + "]"
	}
	ports := "&d " + repeat("80", "80")
	clause := "&c " + repeat("&m {destinationPorts: "+ports+"}", "*m")
	rule := "&r " + repeat(clause, "*c")
	doc := pol("  rules: " + repeat(rule, "*r") + "\n")
	start := time.Now()
	_, err := ParseLocalConfig("bomb", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "document too large") {
		t.Fatalf("alias bomb: error = %v, want \"document too large\"", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("alias bomb took %v", d)
	}
}
