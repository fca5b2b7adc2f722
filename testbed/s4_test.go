package testbed

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestS4 runs scenario S4 at L4 (a 90/10 canary by weighted tcp routes to subsets) with the
// proxies built from ../cmd/ztunnel.
func TestS4(t *testing.T) {
	skipUnlessRoot(t)
	bin := buildZtunnel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	err := RunS4(ctx, Config{Ztunnel: bin, Logger: testLogger(t), StateRoot: t.TempDir()}, &out)
	t.Log("S4 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}

func TestBuildS4Rejects(t *testing.T) {
	for _, cfg := range []Config{
		{Ztunnel: "ztunnel", Nodes: []NodeSpec{{Name: "x"}}},
		{Ztunnel: "ztunnel", Gateways: []GatewaySpec{{Node: "x"}}},
		{Ztunnel: "ztunnel", ControlPlane: true},
		{},
	} {
		if _, err := BuildS4(context.Background(), cfg); err == nil {
			t.Errorf("BuildS4(%+v) succeeded", cfg)
		}
	}
}
