// Package stats summarizes benchmark samples: medians, nearest-rank percentiles and the spread of
// repeated measurements. Every function copies its input; none modifies it.
package stats
