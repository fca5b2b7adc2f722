package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestS4 runs scenario S4 at L4 (testbed.S4.Run): helloworld.sample:5000 with two v3 replicas
// and one v4, DestinationRule subsets v3/v4 by the version label and VirtualService tcp route
// 90 → v3, 10 → v4: of 1000 connections none fails and v3's count is within the two-sided 99.9%
// binomial bound of 90% ([869, 931]). The per-replica counts are printed, not asserted.
func TestS4(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := testbed.BuildS4(ctx, scenarioConfig(t))
	if err != nil {
		t.Fatalf("build S4: %v", err)
	}
	cleanupScenario(t, s.Cluster, s.Close)
	var out strings.Builder
	err = s.Run(ctx, &out)
	t.Log("S4 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}
