package stats

import (
	"math"
	"slices"
)

// Median returns the median of xs (the mean of the two middle values for an even count), or NaN
// for no samples.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := sorted(xs)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Percentile returns the nearest-rank p-th percentile of xs: the smallest sample such that at least
// p percent of the samples are at most it. p is clamped to [0, 100]; p = 0 gives the minimum. NaN
// for no samples or a NaN p.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 || math.IsNaN(p) {
		return math.NaN()
	}
	return percentileSorted(sorted(xs), p)
}

// Percentiles returns the nearest-rank percentiles ps of xs (see Percentile), sorting once.
func Percentiles(xs []float64, ps ...float64) []float64 {
	out := make([]float64, len(ps))
	if len(xs) == 0 {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	s := sorted(xs)
	for i, p := range ps {
		if math.IsNaN(p) {
			out[i] = math.NaN()
			continue
		}
		out[i] = percentileSorted(s, p)
	}
	return out
}

func percentileSorted(s []float64, p float64) float64 {
	p = min(max(p, 0), 100)
	// The epsilon keeps float error (99.9/100*1000 = 999.0000000000001) from moving up a rank.
	rank := int(math.Ceil(p/100*float64(len(s)) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	return s[rank-1]
}

func sorted(xs []float64) []float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s
}

// Summary describes repeated measurements of one figure.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Spread is (Max-Min)/|Median|: 0.05 means the samples lie within 5 % of the median's size.
	// Zero for fewer than two samples, NaN when the median is 0 and the samples differ.
	Spread float64 `json:"spread"`
}

// Summarize returns the Summary of xs. With no samples every field but N is NaN.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		nan := math.NaN()
		return Summary{Median: nan, Min: nan, Max: nan, Spread: nan}
	}
	s := sorted(xs)
	sum := Summary{N: len(s), Median: Median(s), Min: s[0], Max: s[len(s)-1]}
	switch d := sum.Max - sum.Min; {
	case d == 0:
		sum.Spread = 0
	case sum.Median == 0:
		sum.Spread = math.NaN()
	default:
		sum.Spread = d / math.Abs(sum.Median)
	}
	return sum
}
