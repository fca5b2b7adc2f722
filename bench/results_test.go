package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sampleResults() *Results {
	r := NewResults()
	for _, v := range []float64{10, 12, 11} {
		r.Add(FigThroughput, PathDirect, v)
	}
	for _, v := range []float64{2, 3, 4} {
		r.Add(FigThroughput, PathMesh, v)
	}
	r.Add(FigCPUPerGB, PathMesh, 2)
	r.Add(FigCPUPerGB, PathTLS, 1)
	r.Add(FigRSSIdle, PathMesh, 30)
	r.Add(FigRSSIdle, PathMesh, 32)
	r.Add(FigConnPerS, PathTLS, math.NaN()) // dropped
	r.AddDetail("cpu_s_per_gb/node1", PathMesh, 2.5)
	r.Meta["rounds"] = 3
	return r
}

// TestResultsJSONShape checks results.json: figure -> path -> median, only what was measured.
func TestResultsJSONShape(t *testing.T) {
	dir := t.TempDir()
	if err := sampleResults().WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]float64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("results.json is not figure -> path -> number: %v\n%s", err, b)
	}
	want := map[string]map[string]float64{
		FigThroughput: {PathDirect: 11, PathMesh: 3},
		FigCPUPerGB:   {PathMesh: 2, PathTLS: 1},
		FigRSSIdle:    {PathMesh: 31},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results.json (-want +got):\n%s", diff)
	}

	b, err = os.ReadFile(filepath.Join(dir, "detail.json"))
	if err != nil {
		t.Fatal(err)
	}
	var detail struct {
		Meta    map[string]any
		Figures map[string]map[string]struct {
			N       int
			Median  float64
			Spread  float64
			Samples []float64
			Ratio   *float64
		}
		Detail map[string]map[string]struct{ Samples []float64 }
	}
	if err := json.Unmarshal(b, &detail); err != nil {
		t.Fatalf("detail.json: %v\n%s", err, b)
	}
	mesh := detail.Figures[FigThroughput][PathMesh]
	if mesh.N != 3 || mesh.Median != 3 || mesh.Spread != 2.0/3 || mesh.Ratio == nil || *mesh.Ratio != 3.0/11 {
		t.Errorf("detail mesh throughput = %+v, want n 3, median 3, spread 2/3, ratio 3/11", mesh)
	}
	if r := detail.Figures[FigThroughput][PathDirect].Ratio; r != nil {
		t.Errorf("the baseline has a ratio %v", *r)
	}
	if r := detail.Figures[FigCPUPerGB][PathMesh].Ratio; r == nil || *r != 2 {
		t.Errorf("cpu ratio to tls = %v, want 2", r)
	}
	if r := detail.Figures[FigRSSIdle][PathMesh].Ratio; r != nil {
		t.Errorf("memory has a ratio %v, want none (no baseline)", *r)
	}
	if !cmp.Equal(detail.Detail["cpu_s_per_gb/node1"][PathMesh].Samples, []float64{2.5}) || detail.Meta["rounds"] != 3.0 {
		t.Errorf("detail series or meta lost: %+v %+v", detail.Detail, detail.Meta)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleResults().WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(out, "\n")
	if f := strings.Fields(lines[0]); !cmp.Equal(f, []string{"figure", "direct", "mesh", "tls", "ratio", "to"}) {
		t.Errorf("header = %q (stunnel has no samples and must not be a column)", lines[0])
	}
	for _, want := range []string{
		"throughput_gbps", "11.0 ±9%", "3 ±33% (0.27x)", // median, half range / median, ratio to direct
		"cpu_s_per_gb", "2 (2.00x)", // ratio to tls
		"rss_idle_mb", "31.0 ±3%",
		"cpu_s_per_gb/node1: mesh 2.5",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "conn_per_s") {
		t.Errorf("table has a row without samples:\n%s", out)
	}
}
