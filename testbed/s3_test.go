package testbed

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestS3 runs scenario S3 (cross-region distribution and failover under a DestinationRule) with
// the proxies built from ../cmd/ztunnel.
func TestS3(t *testing.T) {
	skipUnlessRoot(t)
	bin := buildZtunnel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	err := RunS3(ctx, Config{Ztunnel: bin, Logger: testLogger(t), StateRoot: t.TempDir()}, &out)
	t.Log("S3 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}

func TestBuildS3Rejects(t *testing.T) {
	for _, cfg := range []Config{
		{Ztunnel: "ztunnel", Nodes: []NodeSpec{{Name: "x"}}},
		{Ztunnel: "ztunnel", Gateways: []GatewaySpec{{Node: "x"}}},
		{Ztunnel: "ztunnel", ControlPlane: true},
		{},
	} {
		if _, err := BuildS3(context.Background(), cfg); err == nil {
			t.Errorf("BuildS3(%+v) succeeded", cfg)
		}
	}
}
