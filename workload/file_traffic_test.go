package workload

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The file's traffic policy is published with its workloads: a reload that removes every rule
// removes them from the store too (a workload push alone would keep them), and a bad rule keeps
// the last good config, policies included.
func TestFileSourceTrafficPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	const host = "reviews.default.svc.cluster.local"
	writeFile(t, path, configWith("one")+drYAML("    subsets: [{name: v1, labels: {version: v1}}]\n"))
	f, logs := startSource(t, path)
	if f.Store.Load().Traffic().Destination(host) == nil {
		t.Fatal("the file's destination rule is not in the store")
	}
	if got := logs.String(); !strings.Contains(got, "destinationRules=1 virtualServices=0") {
		t.Errorf("the load is not logged with the policy counts:\n%s", got)
	}

	writeFile(t, path, configWith("two")+drYAML("    subsets: [{name: v1, labels: {tier: gold}}]\n"))
	deadline := time.Now().Add(3 * time.Second)
	for f.ReloadFailures() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.ReloadFailures() != 1 || !strings.Contains(logs.String(), `unknown label \"tier\"`) {
		t.Fatalf("bad rule: %d reload failures, logs:\n%s", f.ReloadFailures(), logs.String())
	}
	if s := f.Store.Load(); s.Workloads()[0].Name != "one" || s.Traffic().Destination(host).Subsets[0].Labels["version"] != "v1" {
		t.Errorf("after a bad edit the store holds %v with %v, want the last good config", uids(s.Workloads()), s.Traffic().Destinations())
	}

	writeFile(t, path, configWith("three"))
	waitForName(t, f, "three")
	if ti := f.Store.Load().Traffic(); ti != nil {
		t.Errorf("the rules removed from the file are still in the store: %v", ti.Destinations())
	}
}

// Reloading a file at the size limit made of minimal rules, the most entries the budget allows,
// takes a bounded amount of heap, as for workloads (TestFileSourceHostileReloadMemory).
func TestFileSourceHostileTrafficReloadMemory(t *testing.T) {
	const limit = 8 << 20
	for _, tc := range []struct {
		name string
		item func(i int) string
	}{
		{"minimal destination rules", func(i int) string {
			return fmt.Sprintf("- {metadata: {name: r%d, namespace: n}, spec: {host: h%d}}\n", i, i)
		}},
		{"minimal virtual services", func(i int) string {
			return fmt.Sprintf("- {metadata: {name: r%d, namespace: n}, spec: {hosts: [h%d], tcp: [{route: [{destination: {host: a}}]}]}}\n", i, i)
		}},
		{"many subsets", func(i int) string {
			var subsets strings.Builder
			for j := range 50 {
				fmt.Fprintf(&subsets, "{name: s%d, labels: {version: a}},", j)
			}
			return fmt.Sprintf("- {metadata: {name: r%d, namespace: n}, spec: {host: h%d, subsets: [%s{name: b}]}}\n", i, i, subsets.String())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			f, logs := hostileSource(t, path, limit)
			good := f.Store.Load()
			var b strings.Builder
			b.WriteString("destinationRules:\n")
			if strings.Contains(tc.name, "virtual") {
				b.Reset()
				b.WriteString("virtualServices:\n")
			}
			for i := 0; b.Len() < limit-1000; i++ {
				b.WriteString(tc.item(i))
			}
			writeFile(t, path, b.String())
			size := b.Len()
			b.Reset()
			peak := heapPeak(func() {
				f.seen = fileStamp{}
				f.poll()
			})
			t.Logf("%.1f MiB file: heap peak +%.0f MiB (%.1f times the file)", float64(size)/(1<<20),
				float64(peak)/(1<<20), float64(peak)/float64(size))
			if bound := 8*uint64(limit) + 64<<20; peak > bound {
				t.Errorf("heap grew by %d MiB, want at most %d MiB", peak>>20, bound>>20)
			}
			checkRefused(t, f, logs, good, "document too large")
		})
	}
}
