package testbed

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Helpers of the traffic-policy scenarios S3, S4 and S5: many connections at once, the binomial
// bound of a weighted split, and what the client's node proxy shows of outlier detection.

// binomialBound returns the two-sided confidence interval of the number of successes in n
// trials of probability p (normal approximation): the whole counts within z standard deviations
// of n·p, z the standard normal quantile of (1+confidence)/2. For n = 1000, p = 0.9 and a
// confidence of 0.999: z ≈ 3.29, sd ≈ 9.49, [869, 931].
func binomialBound(n int, p, confidence float64) (lo, hi int) {
	z := math.Sqrt2 * math.Erfinv(confidence)
	mean := float64(n) * p
	d := z * math.Sqrt(float64(n)*p*(1-p))
	return max(0, int(math.Ceil(mean-d))), min(n, int(math.Floor(mean+d)))
}

// splitConfidence is the confidence of the bound every weighted split is checked against.
const splitConfidence = 0.999

// getParallel sends n requests GET url from client, each on a new connection, at most parallel
// at a time, and returns the results in the order sent. After 3 timeouts (or when ctx ends) the
// remaining requests are not sent (notSent).
func getParallel(ctx context.Context, client *Pod, url string, n, parallel int) []s1Result {
	res := make([]s1Result, n)
	var (
		mu       sync.Mutex // guards timeouts
		timeouts int
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, max(1, parallel))
	for i := range n {
		sem <- struct{}{}
		mu.Lock()
		stop := timeouts >= 3 || ctx.Err() != nil
		mu.Unlock()
		if stop {
			<-sem
			for j := i; j < n; j++ {
				res[j] = s1Result{err: errors.New("not sent"), notSent: true}
			}
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			start := time.Now()
			body, err := client.HTTPGet(ctx, url)
			x := s1Result{err: err, elapsed: time.Since(start)}
			if err == nil {
				x.version, x.instance, x.err = parseHelloworld(body)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				mu.Lock()
				timeouts++
				mu.Unlock()
			}
			res[i] = x
		}()
	}
	wg.Wait()
	return res
}

// getBatch sends n requests from client (see getParallel) and prints a summary: the count per
// version and every failure.
func (r *scenarioRun) getBatch(ctx context.Context, client *Pod, url string, n, parallel int) []s1Result {
	fmt.Fprintf(r.out, "-- %d x GET %s from %s on %s (each a new connection, %d at a time)\n", n, url, client.Name(), client.Node(), parallel)
	start := time.Now()
	res := getParallel(ctx, client, url, n, parallel)
	counts, failed := versionCounts(res)
	fmt.Fprintf(r.out, "   %d answered in %v: %s", n-failed, time.Since(start).Round(time.Millisecond), formatCounts(counts))
	if failed > 0 {
		fmt.Fprintf(r.out, ", %d failed", failed)
	}
	fmt.Fprintln(r.out)
	shown := 0
	for i, x := range res {
		if x.err != nil && shown < 10 {
			fmt.Fprintf(r.out, "   [%d] error after %v: %v\n", i+1, x.elapsed.Round(time.Millisecond), x.err)
			shown++
		}
	}
	return res
}

// formatCounts formats counts by key, sorted: "v1 903, v2 97".
func formatCounts(counts map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, k+" "+strconv.Itoa(counts[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// instanceCounts counts the successful responses by instance (pod).
func instanceCounts(res []s1Result) map[string]int {
	counts := map[string]int{}
	for _, x := range res {
		if x.err == nil {
			counts[x.instance]++
		}
	}
	return counts
}

// expectAllVersion checks that every request succeeded with version want.
func (r *scenarioRun) expectAllVersion(res []s1Result, want string) {
	counts, failed := versionCounts(res)
	switch {
	case failed > 0:
		r.fail("%d of %d requests failed (answered: %s), want every one to answer %s", failed, len(res), formatCounts(counts), want)
	case counts[want] != len(res):
		r.fail("answered %s, want all %d %s", formatCounts(counts), len(res), want)
	default:
		fmt.Fprintf(r.out, "   ok: all %d answered %s, none failed\n", len(res), want)
	}
}

// expectSplit checks that every request succeeded and that the share of version want is within
// the binomial bound of weight p (splitConfidence).
func (r *scenarioRun) expectSplit(res []s1Result, want string, p float64) {
	counts, failed := versionCounts(res)
	n := len(res) - failed
	lo, hi := binomialBound(n, p, splitConfidence)
	if failed > 0 {
		r.fail("%d of %d connections failed, want none", failed, len(res))
	}
	got := counts[want]
	if got < lo || got > hi {
		r.fail("%s answered %d of %d (%s), want within the two-sided %.1f%% binomial bound of %.0f%%: [%d, %d]",
			want, got, n, formatCounts(counts), 100*splitConfidence, 100*p, lo, hi)
	} else {
		fmt.Fprintf(r.out, "   ok: %s answered %d of %d, within the two-sided %.1f%% binomial bound of %.0f%%: [%d, %d]\n",
			want, got, n, 100*splitConfidence, 100*p, lo, hi)
	}
}

// outlierHost is a host of the outlierDetection section of /config_dump.
type outlierHost struct {
	UID          string `json:"uid"`
	Port         uint16 `json:"port"`
	Ejected      bool   `json:"ejected"`
	EjectedUntil string `json:"ejectedUntil"`
	TimesEjected uint64 `json:"timesEjected"`
}

// outlierCluster is a cluster (service, subset) of the outlierDetection section of /config_dump.
type outlierCluster struct {
	Service string        `json:"service"`
	Subset  string        `json:"subset"`
	Hosts   []outlierHost `json:"hosts"`
}

// outlierHostState returns what the node proxy of node reports of the host uid in the outlier
// detection of service (its "namespace/hostname"), over every subset; false if it reports none.
func (c *Cluster) outlierHostState(ctx context.Context, node, service, uid string) (outlierHost, bool, error) {
	b, err := c.NodeAdminGet(ctx, node, "/config_dump")
	if err != nil {
		return outlierHost{}, false, err
	}
	var d struct {
		OutlierDetection []outlierCluster `json:"outlierDetection"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return outlierHost{}, false, fmt.Errorf("parse config dump of %s: %w", node, err)
	}
	for _, cl := range d.OutlierDetection {
		if cl.Service != service {
			continue
		}
		for _, h := range cl.Hosts {
			if h.UID == uid {
				return h, true, nil
			}
		}
	}
	return outlierHost{}, false, nil
}

// nodeMetric returns the sum of the samples of the metric name whose labels include every pair
// of labels, from the metrics endpoint (:15020/metrics) of node's proxy; false if there is none.
func (c *Cluster) nodeMetric(ctx context.Context, node, name string, labels map[string]string) (float64, bool, error) {
	ns := c.NodeNetNS(node)
	if ns == "" {
		return 0, false, fmt.Errorf("metrics: no node %q", node)
	}
	b, err := netnsGet(ctx, netnsPath(ns), "http://127.0.0.1:15020/metrics")
	if err != nil {
		return 0, false, err
	}
	return sumMetric(string(b), name, labels)
}

// sumMetric sums the samples of metric name in a Prometheus text exposition whose labels include
// every pair of labels; false if there is none.
func sumMetric(text, name string, labels map[string]string) (float64, bool, error) {
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		rest, ok := strings.CutPrefix(l, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		series, value := "", rest
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, false, fmt.Errorf("metric line %q: no closing brace", l)
			}
			series, value = rest[:end+1], rest[end+1:]
		}
		match := true
		for k, v := range labels {
			if !strings.Contains(series, k+"="+strconv.Quote(v)) {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			return 0, false, fmt.Errorf("metric line %q: no value", l)
		}
		f, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric line %q: %w", l, err)
		}
		sum += f
		found = true
	}
	return sum, found, sc.Err()
}

// firstLineWith returns the first of lines containing every part, "" if none.
func firstLineWith(lines []string, parts ...string) string {
	for _, l := range lines {
		if containsEvery(l, parts) {
			return l
		}
	}
	return ""
}

func containsEvery(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// shortLogLine drops the time and level of a proxy log line, for printing.
func shortLogLine(l string) string {
	if i := strings.Index(l, " msg="); i >= 0 {
		return l[i+1:]
	}
	return l
}
