package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/ztunnel-go/ztunnel/bench/stats"
)

// Figure names: the keys of results.json.
const (
	FigThroughput  = "throughput_gbps"
	FigThroughput8 = "throughput8_gbps"
	FigRTT1P50     = "rtt1_p50_us"
	FigRTT1P99     = "rtt1_p99_us"
	FigRTT1P999    = "rtt1_p999_us"
	FigRTT1KP50    = "rtt1k_p50_us"
	FigRTT1KP99    = "rtt1k_p99_us"
	FigConnPerS    = "conn_per_s"
	FigCPUPerGB    = "cpu_s_per_gb"
	FigRSSIdle     = "rss_idle_mb"
	FigRSSPerConn  = "rss_per_conn_kib"
	// The leak soak (-soak N): what each proxy holds after N connections opened and closed, beyond
	// what it held before.
	FigSoakGoroutines = "soak_goroutines_growth"
	FigSoakFDs        = "soak_fds_growth"
	FigSoakRSS        = "soak_rss_growth_mb"
)

// Path names: the keys inside each figure.
const (
	PathDirect  = "direct"
	PathMesh    = "mesh"
	PathTLS     = "tls"
	PathStunnel = "stunnel"
)

// Figures lists the figures in table order.
var Figures = []string{FigThroughput, FigThroughput8, FigRTT1P50, FigRTT1P99, FigRTT1P999, FigRTT1KP50,
	FigRTT1KP99, FigConnPerS, FigCPUPerGB, FigRSSIdle, FigRSSPerConn, FigSoakGoroutines, FigSoakFDs, FigSoakRSS}

// Paths lists the paths in table order.
var Paths = []string{PathDirect, PathMesh, PathTLS, PathStunnel}

// baseline returns the path a figure's ratios are taken against, "" for none.
func baseline(fig string) string {
	switch fig {
	case FigCPUPerGB:
		return PathTLS
	case FigRSSIdle, FigRSSPerConn, FigSoakGoroutines, FigSoakFDs, FigSoakRSS:
		return ""
	default:
		return PathDirect
	}
}

// higherIsBetter reports whether larger values of fig are better (for the table's wording only).
func higherIsBetter(fig string) bool {
	return fig == FigThroughput || fig == FigThroughput8 || fig == FigConnPerS
}

// Results collects the samples of a run.
type Results struct {
	// samples: figure -> path -> one value per round (or per proxy for memory).
	samples map[string]map[string][]float64
	// detail: extra series for detail.json and the table notes, e.g. "cpu_s_per_gb/node1" -> path -> values.
	detail map[string]map[string][]float64
	// Meta is copied into detail.json (settings, versions).
	Meta map[string]any
}

// NewResults returns an empty Results.
func NewResults() *Results {
	return &Results{samples: map[string]map[string][]float64{}, detail: map[string]map[string][]float64{},
		Meta: map[string]any{}}
}

// Add records one sample of fig on path. NaN and infinite values are dropped.
func (r *Results) Add(fig, path string, v float64) { add(r.samples, fig, path, v) }

// AddDetail records one sample of a detail series (detail.json only).
func (r *Results) AddDetail(series, path string, v float64) { add(r.detail, series, path, v) }

func add(m map[string]map[string][]float64, k, path string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	if m[k] == nil {
		m[k] = map[string][]float64{}
	}
	m[k][path] = append(m[k][path], v)
}

// Samples returns the samples of fig on path.
func (r *Results) Samples(fig, path string) []float64 { return slices.Clone(r.samples[fig][path]) }

// Medians returns figure -> path -> median over the samples, with only the figures and paths that
// have samples: the content of results.json.
func (r *Results) Medians() map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for fig, byPath := range r.samples {
		for path, xs := range byPath {
			if len(xs) == 0 {
				continue
			}
			if out[fig] == nil {
				out[fig] = map[string]float64{}
			}
			out[fig][path] = stats.Median(xs)
		}
	}
	return out
}

// detailEntry is one series in detail.json.
type detailEntry struct {
	stats.Summary
	Samples []float64 `json:"samples"`
	// Ratio is the median divided by the baseline path's median, when the figure has one.
	Ratio *float64 `json:"ratio,omitempty"`
}

// detailDoc is detail.json.
type detailDoc struct {
	Meta    map[string]any                    `json:"meta"`
	Figures map[string]map[string]detailEntry `json:"figures"`
	Detail  map[string]map[string]detailEntry `json:"detail,omitempty"`
}

func entries(m map[string]map[string][]float64, withRatio bool) map[string]map[string]detailEntry {
	out := map[string]map[string]detailEntry{}
	for k, byPath := range m {
		out[k] = map[string]detailEntry{}
		for path, xs := range byPath {
			e := detailEntry{Summary: stats.Summarize(xs), Samples: xs}
			if b := baseline(k); withRatio && b != "" && b != path && len(byPath[b]) > 0 {
				ratio := e.Median / stats.Median(byPath[b])
				if !math.IsNaN(ratio) && !math.IsInf(ratio, 0) {
					e.Ratio = &ratio
				}
			}
			out[k][path] = e
		}
	}
	return out
}

// WriteFiles writes dir/results.json (Medians) and dir/detail.json (every sample, summaries,
// ratios and Meta), creating dir.
func (r *Results) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	for _, f := range []struct {
		name string
		v    any
	}{
		{"results.json", r.Medians()},
		{"detail.json", detailDoc{Meta: r.Meta, Figures: entries(r.samples, true), Detail: entries(r.detail, false)}},
	} {
		b, err := json.MarshalIndent(f.v, "", "  ")
		if err != nil {
			return fmt.Errorf("write results: encode %s: %w", f.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
	}
	return nil
}

// WriteTable prints one row per figure and one column per path: the median, the spread of the
// samples (±half the range, relative to the median) and the ratio to the figure's baseline.
func (r *Results) WriteTable(w io.Writer) error {
	var paths []string
	for _, p := range Paths {
		for _, byPath := range r.samples {
			if len(byPath[p]) > 0 {
				paths = append(paths, p)
				break
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\t%s\tratio to\n", strings.Join(paths, "\t"))
	for _, fig := range Figures {
		byPath := r.samples[fig]
		if len(byPath) == 0 {
			continue
		}
		base := baseline(fig)
		var baseMed float64
		if xs := byPath[base]; base != "" && len(xs) > 0 {
			baseMed = stats.Median(xs)
		}
		cells := []string{fig}
		for _, p := range paths {
			xs := byPath[p]
			if len(xs) == 0 {
				cells = append(cells, "-")
				continue
			}
			s := stats.Summarize(xs)
			cell := formatValue(s.Median)
			if s.N > 1 && !math.IsNaN(s.Spread) {
				cell += fmt.Sprintf(" ±%.0f%%", s.Spread*50)
			}
			if baseMed != 0 && p != base {
				cell += fmt.Sprintf(" (%.2fx)", s.Median/baseMed)
			}
			cells = append(cells, cell)
		}
		note := base
		if note == "" {
			note = "-"
		}
		if higherIsBetter(fig) {
			note += " (higher is better)"
		}
		cells = append(cells, note)
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	var series []string
	for k := range r.detail {
		series = append(series, k)
	}
	slices.Sort(series)
	for _, k := range series {
		var parts []string
		for _, p := range Paths {
			if xs := r.detail[k][p]; len(xs) > 0 {
				parts = append(parts, p+" "+formatValue(stats.Median(xs)))
			}
		}
		fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(parts, ", "))
	}
	return nil
}

// formatValue prints about three significant digits.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
