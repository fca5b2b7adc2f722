package testbed

import (
	"errors"
	"testing"
)

func TestBinomialBound(t *testing.T) {
	for _, tc := range []struct {
		n          int
		p, conf    float64
		wantLo, hi int
	}{
		{1000, 0.9, 0.999, 869, 931}, // sd 9.49, z 3.29: 900 ± 31.2
		{1000, 0.1, 0.999, 69, 131},
		{1000, 0.5, 0.95, 470, 530}, // z 1.96, sd 15.8
		{10, 1, 0.999, 10, 10},
		{10, 0, 0.999, 0, 0},
		{100, 0.99, 0.999, 96, 100}, // clamped to n
	} {
		lo, hi := binomialBound(tc.n, tc.p, tc.conf)
		if lo != tc.wantLo || hi != tc.hi {
			t.Errorf("binomialBound(%d, %v, %v) = [%d, %d], want [%d, %d]", tc.n, tc.p, tc.conf, lo, hi, tc.wantLo, tc.hi)
		}
	}
}

func TestSumMetric(t *testing.T) {
	const text = `# HELP ztunnel_outlier_ejections_total Hosts ejected
# TYPE ztunnel_outlier_ejections_total counter
ztunnel_outlier_ejections_total{reason="consecutive_5xx",service="default/reviews.default.svc.cluster.local",subset=""} 2
ztunnel_outlier_ejections_total{reason="consecutive_gateway",service="default/reviews.default.svc.cluster.local",subset=""} 1
ztunnel_outlier_ejections_total{reason="consecutive_5xx",service="sample/helloworld.sample.svc.cluster.local",subset=""} 5
ztunnel_outlier_ejections_total_extra{service="default/reviews.default.svc.cluster.local"} 100
ztunnel_upstream_retries_total 3
`
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
		found  bool
	}{
		{"ztunnel_outlier_ejections_total", map[string]string{"service": "default/reviews.default.svc.cluster.local"}, 3, true},
		{"ztunnel_outlier_ejections_total", nil, 8, true},
		{"ztunnel_outlier_ejections_total", map[string]string{"service": "other"}, 0, false},
		{"ztunnel_upstream_retries_total", nil, 3, true},
		{"ztunnel_missing", nil, 0, false},
	} {
		got, found, err := sumMetric(text, tc.name, tc.labels)
		if err != nil || got != tc.want || found != tc.found {
			t.Errorf("sumMetric(%s, %v) = %v, %v, %v; want %v, %v", tc.name, tc.labels, got, found, err, tc.want, tc.found)
		}
	}
	if _, _, err := sumMetric("m{a=\"b\" 1\n", "m", nil); err == nil {
		t.Error("sumMetric accepted a line without closing brace")
	}
	if _, _, err := sumMetric("m{a=\"b\"}\n", "m", nil); err == nil {
		t.Error("sumMetric accepted a line without value")
	}
}

func TestExpectSplit(t *testing.T) {
	res := func(v1, v2, failed int) []s1Result {
		var out []s1Result
		for range v1 {
			out = append(out, s1Result{version: "v1"})
		}
		for range v2 {
			out = append(out, s1Result{version: "v2"})
		}
		for range failed {
			out = append(out, s1Result{err: errors.New("refused")})
		}
		return out
	}
	for _, tc := range []struct {
		v1, v2, failed int
		ok             bool
	}{
		{900, 100, 0, true},
		{869, 131, 0, true},
		{931, 69, 0, true},
		{868, 132, 0, false},
		{932, 68, 0, false},
		{1000, 0, 0, false},
		{899, 100, 1, false}, // a failed connection fails the check
	} {
		r := &scenarioRun{name: "test", out: discard{}}
		r.expectSplit(res(tc.v1, tc.v2, tc.failed), "v1", 0.9)
		if ok := len(r.failures) == 0; ok != tc.ok {
			t.Errorf("expectSplit(v1 %d, v2 %d, failed %d): passed %v, want %v (%v)", tc.v1, tc.v2, tc.failed, ok, tc.ok, r.failures)
		}
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
