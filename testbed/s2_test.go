package testbed

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestS2 runs scenario S2 (two networks joined by east-west gateways, double HBONE) with the
// proxies built from ../cmd/ztunnel, the gateway outage steps included.
func TestS2(t *testing.T) {
	skipUnlessRoot(t)
	bin := buildZtunnel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out strings.Builder
	err := RunS2(ctx, Config{Ztunnel: bin, Logger: testLogger(t), StateRoot: t.TempDir()}, &out)
	t.Log("S2 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}

func TestBuildS2Rejects(t *testing.T) {
	for _, cfg := range []Config{
		{Ztunnel: "ztunnel", Nodes: []NodeSpec{{Name: "x"}}},
		{Ztunnel: "ztunnel", Gateways: []GatewaySpec{{Node: "x"}}},
		{},
	} {
		if _, err := BuildS2(context.Background(), cfg); err == nil {
			t.Errorf("BuildS2(%+v) succeeded", cfg)
		}
	}
}
