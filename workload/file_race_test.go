//go:build race

package workload

// raceEnabled: the race detector slows parsing about tenfold; tests of tens of MiB skip.
const raceEnabled = true
