package workload

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// bigLocalConfig renders a local config shaped like the benchmark harness's synthetic one
// (bench/synthetic.go): nWorkloads HBONE workloads over 50 namespaces, 100 nodes and 200
// service accounts, each an endpoint (80 -> 8080) of service i mod nServices.
func bigLocalConfig(nWorkloads, nServices int) []byte {
	var b strings.Builder
	b.WriteString("workloads:\n")
	for i := range nWorkloads {
		ns := fmt.Sprintf("synth-%d", i%50)
		j := i % nServices
		sns, host := fmt.Sprintf("synth-%d", j%50), fmt.Sprintf("svc-%d.synth-%d.svc.cluster.local", j, j%50)
		fmt.Fprintf(&b, `  - uid: Kubernetes//v1/Pod/%s/wl-%d
    name: wl-%d
    namespace: %s
    serviceAccount: sa-%d
    trustDomain: cluster.local
    workloadIps:
      - 10.%d.%d.%d
    protocol: HBONE
    node: synth-node-%d
    network: ""
    clusterId: Kubernetes
    status: Healthy
    services:
      %s/%s:
        80: 8080
`, ns, i, i, ns, i%200, 100+i/65536, (i/256)%256, i%256, i%100, sns, host)
	}
	b.WriteString("services:\n")
	for j := range nServices {
		fmt.Fprintf(&b, `  - name: svc-%d
    namespace: synth-%d
    hostname: svc-%d.synth-%d.svc.cluster.local
    vips:
      - /10.97.%d.%d
    ports:
      80: 8080
`, j, j%50, j, j%50, j/256, j%256)
	}
	return []byte(b.String())
}

// fileSourceMem loads data through a FileSource, as the proxy does with LOCAL_XDS_PATH, and
// returns the heap the source retains (snapshot, published store, last config) and the bytes
// allocated while loading.
func fileSourceMem(tb testing.TB, data []byte) (retained, allocated uint64) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "config.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f := quietSource(path)
	if err := f.Load(); err != nil {
		tb.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(f)
	allocated = after.TotalAlloc - before.TotalAlloc
	if after.HeapAlloc > before.HeapAlloc {
		retained = after.HeapAlloc - before.HeapAlloc
	}
	return retained, allocated
}

// TestLocalConfigRetainedHeap logs the heap a FileSource holding a 10k-workload/1k-service
// config retains, and fails above 8 MiB (about 840 B per workload; 6.4 MiB today): the parsed
// YAML tree, the raw file or per-entry copies of shared strings being kept would each exceed it.
func TestLocalConfigRetainedHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10k-workload config")
	}
	data := bigLocalConfig(10000, 1000)
	retained, allocated := fileSourceMem(t, data)
	t.Logf("file %.1f MiB; retained %.1f MiB (%d B/workload); allocated while loading %.1f MiB",
		float64(len(data))/(1<<20), float64(retained)/(1<<20), retained/10000, float64(allocated)/(1<<20))
	if retained > 8<<20 {
		t.Errorf("retained heap %d B, want at most 8 MiB", retained)
	}
}

// BenchmarkFileSourceLoad loads a 10k-workload/1k-service local config: parse, index,
// publish. It reports the heap retained afterwards (retained-B).
func BenchmarkFileSourceLoad(b *testing.B) {
	data := bigLocalConfig(10000, 1000)
	retained, _ := fileSourceMem(b, data)
	path := filepath.Join(b.TempDir(), "config.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f := quietSource(path)
		if err := f.Load(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(retained), "retained-B") // after the loop: ResetTimer drops metrics
}

// The default size limit and the budgets it sets fit a config of 100 000 workloads and 10 000
// services in the bench's shape (37 MiB) with room to spare: before they did, its decoding
// stopped at workload 49 932 ("document too large").
func TestFileSourceLoads100kWorkloads(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds a 100k-workload config: too slow with -short or -race")
	}
	data := bigLocalConfig(100000, 10000)
	if len(data)*3/2 > DefaultLocalConfigMaxBytes {
		t.Errorf("the config is %d bytes: less than 1.5 times below the default limit", len(data))
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	size := len(data)
	data = nil
	f := quietSource(path)
	var err error
	peak := heapPeak(func() { err = f.Load() })
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if n, m := len(f.Store.Load().Workloads()), len(f.Last().Services); n != 100000 || m != 10000 {
		t.Errorf("loaded %d workloads, %d services; want 100000, 10000", n, m)
	}
	t.Logf("%.1f MiB file: heap peak while loading +%.0f MiB", float64(size)/(1<<20), float64(peak)/(1<<20))
}

// The budgets are proportional to the size limit, and a config in the bench's shape fits in
// those of a limit as large as itself.
func TestParseBudgetsFitGeneratedConfigAtItsSize(t *testing.T) {
	data := bigLocalConfig(10000, 1000)
	cfg, _, err := parseLocalConfig("big.yaml", data, limitsFor(int64(len(data))))
	if err != nil || len(cfg.Workloads) != 10000 {
		t.Fatalf("parse with a limit of its own size: %v", err)
	}
	_, _, err = parseLocalConfig("big.yaml", data, limitsFor(int64(len(data))/3))
	if err == nil || !strings.Contains(err.Error(), "document too large: more than") {
		t.Errorf("parse with a limit of a third of its size = %v, want the decoding budget's error", err)
	}
}
