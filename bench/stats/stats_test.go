package stats

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, 5, 1, 9, 5}, 5},
	} {
		in := append([]float64(nil), tc.in...)
		if got := Median(in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !cmp.Equal(in, tc.in) {
			t.Errorf("Median modified its input: %v", in)
		}
	}
	if got := Median(nil); !math.IsNaN(got) {
		t.Errorf("Median(nil) = %v, want NaN", got)
	}
}

func TestPercentile(t *testing.T) {
	// 1..1000: the nearest-rank p-th percentile of 1..n is ceil(p/100*n).
	var xs []float64
	for i := 1000; i >= 1; i-- { // reverse order: the function must sort
		xs = append(xs, float64(i))
	}
	for _, tc := range []struct{ p, want float64 }{
		{0, 1}, {50, 500}, {99, 990}, {99.9, 999}, {100, 1000}, {-5, 1}, {150, 1000}, {0.01, 1},
	} {
		if got := Percentile(xs, tc.p); got != tc.want {
			t.Errorf("Percentile(1..1000, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	// Few samples: p99.9 of 10 samples is the maximum, p50 the 5th smallest.
	few := []float64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	if diff := cmp.Diff([]float64{50, 100, 100}, Percentiles(few, 50, 99, 99.9)); diff != "" {
		t.Errorf("Percentiles (-want +got):\n%s", diff)
	}
	got := Percentiles(nil, 50, 99)
	if len(got) != 2 || !math.IsNaN(got[0]) || !math.IsNaN(got[1]) {
		t.Errorf("Percentiles(nil) = %v, want [NaN NaN]", got)
	}
	if !math.IsNaN(Percentile(few, math.NaN())) {
		t.Error("Percentile(xs, NaN) is not NaN")
	}
}

func TestSummarize(t *testing.T) {
	nanEq := cmpopts.EquateNaNs()
	for _, tc := range []struct {
		name string
		in   []float64
		want Summary
	}{
		{"three", []float64{9, 10, 11}, Summary{N: 3, Median: 10, Min: 9, Max: 11, Spread: 0.2}},
		{"one", []float64{4}, Summary{N: 1, Median: 4, Min: 4, Max: 4}},
		{"equal zeros", []float64{0, 0}, Summary{N: 2}},
		{"zero median", []float64{-1, 0, 1}, Summary{N: 3, Median: 0, Min: -1, Max: 1, Spread: math.NaN()}},
		{"negative", []float64{-12, -10, -8}, Summary{N: 3, Median: -10, Min: -12, Max: -8, Spread: 0.4}},
		{"none", nil, Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN(), Spread: math.NaN()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Summarize(tc.in)
			if diff := cmp.Diff(tc.want, got, nanEq, cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("Summarize(%v) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}
