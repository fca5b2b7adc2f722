package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// s5EjectionTime is the base ejection time of TestS5 (the scenario's is 1 min).
const s5EjectionTime = 5 * time.Second

// TestS5 runs scenario S5 (testbed.S5.Run) on S2's two clusters and networks with
// DestinationRule helloworld: failoverPriority [topology.istio.io/cluster], outlier detection
// after 1 error, 1 s interval, a 5 s base ejection time:
//   - each client proxy lists the other cluster's split-horizon workload with that cluster's
//     clusterId; from cluster1 every request answers v1, from cluster2 every one v2;
//   - v1's server killed (config unchanged): from cluster1 every request answers v2 and none
//     fails (the first is retried through the gateway), v1 is ejected;
//   - v1's server back: v1 answers again once its ejection is over (not before, and within
//     the ejection time and a margin), then every request answers v1.
func TestS5(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := testbed.BuildS5(ctx, scenarioConfig(t), testbed.S5Options{EjectionTime: s5EjectionTime})
	if err != nil {
		t.Fatalf("build S5: %v", err)
	}
	cleanupScenario(t, s.Cluster, s.Close)
	var out strings.Builder
	err = s.Run(ctx, &out)
	t.Log("S5 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}
