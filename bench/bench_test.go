package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestQuickRun builds the proxy and the harness and runs `bench -quick`: every figure once, with
// tiny sizes, through the real testbed. It checks the shape of results.json.
func TestQuickRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces")
	}
	if testing.Short() {
		t.Skip("builds binaries and a testbed")
	}
	dir := t.TempDir()
	ztunnel, harness := filepath.Join(dir, "ztunnel"), filepath.Join(dir, "bench")
	for _, b := range [][2]string{{ztunnel, "../cmd/ztunnel"}, {harness, "./cmd/bench"}} {
		if out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	outDir := filepath.Join(dir, "out")
	cmd := exec.CommandContext(ctx, harness, "-quick", "-ztunnel", ztunnel, "-out", outDir)
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench -quick: %v\n%s", err, tail(out, 60))
	}
	b, err := os.ReadFile(filepath.Join(outDir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]map[string]float64
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("results.json: %v\n%s", err, b)
	}
	paths := []string{PathDirect, PathMesh, PathTLS}
	if _, err := exec.LookPath("stunnel"); err == nil {
		paths = append(paths, PathStunnel)
	}
	want := map[string][]string{
		FigCPUPerGB:   paths[1:],
		FigRSSIdle:    {PathMesh},
		FigRSSPerConn: {PathMesh},
	}
	for _, fig := range []string{FigThroughput, FigThroughput8, FigRTT1P50, FigRTT1P99, FigRTT1P999,
		FigRTT1KP50, FigRTT1KP99, FigConnPerS} {
		want[fig] = paths
	}
	for fig, ps := range want {
		for _, p := range ps {
			v, ok := res[fig][p]
			if !ok {
				t.Errorf("results.json: no %s for path %s", fig, p)
				continue
			}
			// Memory per connection may be ~0 with few connections; everything else is positive.
			if v <= 0 && fig != FigRSSPerConn {
				t.Errorf("results.json: %s/%s = %v, want > 0", fig, p, v)
			}
		}
	}
	for fig := range res {
		if !slices.Contains(Figures, fig) {
			t.Errorf("results.json: unexpected key %q", fig)
		}
	}
	if _, err := os.Stat(filepath.Join(outDir, "detail.json")); err != nil {
		t.Error(err)
	}
}

func tail(b []byte, n int) string {
	lines := 0
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			lines++
			if lines > n {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}
