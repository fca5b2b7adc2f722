package e2e

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// scenarioConfig is the testbed config of a scenario test: the proxies built for the tests.
func scenarioConfig(t *testing.T) testbed.Config {
	return testbed.Config{
		Ztunnel:   ztunnelBin,
		ExtraEnv:  proxyEnv(),
		StateRoot: t.TempDir(),
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
}

// cleanupScenario tears a scenario's cluster down when the test ends (close). On failure it
// prints every proxy's and gateway's log first; with E2E_RACE it fails the test if one reported
// a data race.
func cleanupScenario(t *testing.T, c *testbed.Cluster, close func() error) {
	t.Cleanup(func() {
		logs, _ := filepath.Glob(filepath.Join(c.Dir(), "*.log"))
		for _, l := range logs {
			b, err := os.ReadFile(l)
			if err != nil {
				continue
			}
			if bytes.Contains(b, []byte("DATA RACE")) {
				t.Errorf("%s reported a data race:\n%s", filepath.Base(l), b)
			} else if t.Failed() {
				t.Logf("%s:\n%s", filepath.Base(l), tail(string(b), 40))
			}
		}
		if err := close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
}

// TestS3 runs scenario S3 (testbed.S3.Run) on hz-worker (reviews v1, cn-hangzhou), sh-worker
// (reviews v2, cn-shanghai) and a hangzhou client node:
//   - DestinationRule reviews distributing cn-hangzhou/* 90, cn-shanghai/* 10 with outlier
//     detection after 1 error: of 1000 connections none fails and v1's count is within the
//     two-sided 99.9% binomial bound of 90% ([869, 931]);
//   - distribution off: all v1; v1 deleted from the config: all v2, none failing;
//   - v1 back (all v1), then its server killed with the config unchanged: all v2 and none
//     failing, the client proxy logged the retry (failed=v1, next=v2) and upstream.attempts=2,
//     its /config_dump shows v1 ejected (timesEjected >= 1) and its
//     ztunnel_outlier_ejections_total for reviews is at least 1.
//
// A failure lists what was seen: counts and bound, the log lines missing, the host's state.
func TestS3(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := testbed.BuildS3(ctx, scenarioConfig(t))
	if err != nil {
		t.Fatalf("build S3: %v", err)
	}
	cleanupScenario(t, s.Cluster, s.Close)
	var out strings.Builder
	err = s.Run(ctx, &out)
	t.Log("S3 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}
