package bench

import (
	"net/netip"
	"testing"

	"github.com/ztunnel-go/ztunnel/workload"
)

// TestSyntheticConfigParses feeds the synthetic config to the proxy's own strict parser.
func TestSyntheticConfigParses(t *testing.T) {
	data, err := syntheticConfig(1000, 100)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := workload.ParseLocalConfig("synthetic", data)
	if err != nil {
		t.Fatalf("the proxy rejects the synthetic config: %v", err)
	}
	if len(cfg.Workloads) != 1000 || len(cfg.Services) != 100 {
		t.Fatalf("parsed %d workloads, %d services; want 1000, 100", len(cfg.Workloads), len(cfg.Services))
	}
	snap, err := workload.NewSnapshot(cfg.Workloads, cfg.Services, cfg.Policies)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	svc := snap.ServiceByVIP("", netip.MustParseAddr("10.97.0.1"))
	if svc == nil {
		t.Fatal("no service on the first VIP 10.97.0.1")
	}
	if len(svc.Endpoints) != 10 {
		t.Errorf("service %s has %d endpoints, want 1000/100 = 10", svc.Hostname, len(svc.Endpoints))
	}
	if w := snap.WorkloadByAddr("", netip.MustParseAddr("10.100.3.232")); w == nil || w.Name != "wl-999" {
		t.Errorf("workload on 10.100.3.232 = %v, want wl-999 (the 1000th address from 10.100.0.1)", w)
	}
}

func TestSyntheticIP(t *testing.T) {
	base := netip.MustParseAddr("10.100.0.1")
	for _, tc := range []struct {
		i    int
		want string
	}{{0, "10.100.0.1"}, {254, "10.100.0.255"}, {255, "10.100.1.0"}, {maxSynthWorkloads - 1, "10.103.208.144"}} {
		if got := synthIP(base, tc.i).String(); got != tc.want {
			t.Errorf("synthIP(%d) = %s, want %s", tc.i, got, tc.want)
		}
	}
}

func TestSyntheticConfigBounds(t *testing.T) {
	for _, c := range [][2]int{{-1, 1}, {1, 0}, {maxSynthWorkloads + 1, 1}, {1, maxSynthServices + 1}} {
		if _, err := syntheticConfig(c[0], c[1]); err == nil {
			t.Errorf("syntheticConfig(%d, %d): no error", c[0], c[1])
		}
	}
}
