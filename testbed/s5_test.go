package testbed

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestS5 runs scenario S5 (multicluster failover with cluster priority and outlier detection,
// on the S2 topology) with the proxies built from ../cmd/ztunnel and a 5 s ejection time.
func TestS5(t *testing.T) {
	skipUnlessRoot(t)
	bin := buildZtunnel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out strings.Builder
	err := RunS5(ctx, Config{Ztunnel: bin, Logger: testLogger(t), StateRoot: t.TempDir()}, S5Options{EjectionTime: 5 * time.Second}, &out)
	t.Log("S5 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}

func TestBuildS5Rejects(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		opts S5Options
	}{
		{Config{Ztunnel: "ztunnel"}, S5Options{EjectionTime: -time.Second}},
		{Config{Ztunnel: "ztunnel"}, S5Options{EjectionTime: time.Microsecond}},
		{Config{Ztunnel: "ztunnel", ControlPlane: true}, S5Options{}},
		{Config{Ztunnel: "ztunnel", Nodes: []NodeSpec{{Name: "x"}}}, S5Options{}},
		{Config{}, S5Options{}},
	} {
		if _, err := BuildS5(context.Background(), tc.cfg, tc.opts); err == nil {
			t.Errorf("BuildS5(%+v, %+v) succeeded", tc.cfg, tc.opts)
		}
	}
}

func TestS5Policy(t *testing.T) {
	s := &S5{ejection: 5 * time.Second}
	b, err := renderTraffic(s.Policy())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"failoverPriority:\n", "- topology.istio.io/cluster\n", "consecutive5xxErrors: 1\n", "baseEjectionTime: 5s\n", "interval: 1s\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("S5 policy lacks %q:\n%s", want, b)
		}
	}
}
