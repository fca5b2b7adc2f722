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

// buildS2 builds scenario S2's topology (testbed.BuildS2: cluster1 on network1, cluster2 on
// network2, an east-west gateway each, helloworld v1 and v2, a client per cluster) with the
// proxies built for the tests, and tears it down when the test ends. On failure it prints every
// proxy's and gateway's log; with E2E_RACE it fails the test if one reported a data race.
func buildS2(t *testing.T) *testbed.S2 {
	t.Helper()
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := testbed.BuildS2(ctx, testbed.Config{
		Ztunnel:   ztunnelBin,
		ExtraEnv:  proxyEnv(),
		StateRoot: t.TempDir(),
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatalf("build S2: %v", err)
	}
	t.Cleanup(func() {
		logs, _ := filepath.Glob(filepath.Join(s.Cluster.Dir(), "*.log"))
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
		if err := s.Close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
	return s
}

// TestS2 runs scenario S2's steps 1-4 (testbed.S2.Run): from either cluster 40 requests to
// helloworld.sample:5000 see both v1 and v2; the cross-network counters show packets to and from
// the remote gateways only, none to a remote pod or node; each client node proxy's /config_dump
// shows the local endpoint and the remote split-horizon workload with its networkGateway; the
// destination's proxy logs the client's own identity on connections from the gateway's address,
// and no gateway holds a certificate for helloworld or the client.
func TestS2(t *testing.T) {
	s := buildS2(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	err := s.Run(ctx, &out)
	t.Log("S2 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}

// outcome is one request's result in TestS2GatewayOutage.
type outcome struct {
	version string // "" if it failed
	err     error
	elapsed time.Duration
}

// getHello sends n requests from client to helloworld's VIP, each on a new connection, with a
// timeout above the proxy's 10 s connect timeout so that a hang shows as such.
func getHello(ctx context.Context, t *testing.T, s *testbed.S2, client *testbed.Pod, n int) []outcome {
	t.Helper()
	var res []outcome
	for range n {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		start := time.Now()
		body, err := client.HTTPGet(rctx, s.HelloURL())
		cancel()
		o := outcome{err: err, elapsed: time.Since(start)}
		if err == nil {
			v, _, ok := strings.Cut(strings.TrimPrefix(body, "Hello version: "), ", instance: ")
			if !ok {
				t.Fatalf("unexpected helloworld answer %q", body)
			}
			o.version = v
		}
		res = append(res, o)
	}
	return res
}

func countVersions(res []outcome) (map[string]int, int) {
	counts, failed := map[string]int{}, 0
	for _, o := range res {
		if o.err != nil {
			failed++
		} else {
			counts[o.version]++
		}
	}
	return counts, failed
}

// TestS2GatewayOutage stops network2's east-west gateway: requests from cluster1 that land on the
// remote side fail promptly (well within the proxy's 10 s connect timeout) with an access-log
// error naming the gateway, the failed gateway is then avoided so cluster1's local v1 serves
// every request, and cluster2 is unaffected. Started again, the gateway carries traffic to v2
// again without any other process being restarted. Throughout, no packet goes from one network
// to a pod or node of the other.
func TestS2GatewayOutage(t *testing.T) {
	s := buildS2(t)
	c := s.Cluster
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	client1, client2 := s.Clients[testbed.S2Cluster1], s.Clients[testbed.S2Cluster2]
	gw2 := c.GatewayIP(testbed.S2Network2).String() + ":15008"

	counts, failed := countVersions(getHello(ctx, t, s, client1, 20))
	if failed > 0 || counts["v1"] == 0 || counts["v2"] == 0 {
		t.Fatalf("before the outage: %v, %d failed; want both versions, no failure", counts, failed)
	}
	if err := c.ResetCrossNetworkCounters(ctx); err != nil {
		t.Fatal(err)
	}
	nodes := []string{"c1-worker1", "c1-worker2", "c2-worker1", "c2-worker2"}
	pids := map[string]int{}
	for _, n := range nodes {
		pids[n] = c.ProxyPID(n)
	}
	gw1PID := c.GatewayPID(testbed.S2Network1)

	// The gateway goes away.
	if err := c.StopGateway(testbed.S2Network2, 10*time.Second); err != nil {
		t.Fatalf("stop network2's gateway: %v", err)
	}
	clientLog := c.ProxyLog(client1.Node())
	before, err := os.ReadFile(clientLog)
	if err != nil {
		t.Fatal(err)
	}
	res := getHello(ctx, t, s, client1, 20)
	counts, failed = countVersions(res)
	t.Logf("network2's gateway down, from cluster1: %v, %d failed", counts, failed)
	if counts["v2"] > 0 {
		t.Errorf("%d requests answered v2 while network2's gateway is down", counts["v2"])
	}
	// A connection sent to the remote side fails at the gateway before anything was sent, and is
	// tried again on the local endpoint (issue 12): no request fails, and the client's proxy logs
	// each retry with the error naming the gateway; after the first, the gateway is avoided.
	if failed > 0 {
		t.Errorf("%d requests failed; want none (retried on the local endpoint)", failed)
	}
	for i, o := range res {
		if o.elapsed > 10*time.Second {
			t.Errorf("request %d took %v, want promptly (the proxy's connect timeout is 10s)", i+1, o.elapsed)
		}
	}
	var retried []string
	for range 40 {
		after, _ := os.ReadFile(clientLog)
		retried = nil
		for l := range strings.SplitSeq(string(after[len(before):]), "\n") {
			if strings.Contains(l, `msg="upstream connect failed, trying another endpoint"`) {
				retried = append(retried, l)
			}
		}
		if len(retried) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(retried) == 0 {
		t.Error("the client's proxy logged no retry: the first connection to the remote side should have failed at the gateway and been retried")
	}
	for _, l := range retried {
		if !strings.Contains(l, "error=") || !strings.Contains(l, gw2) {
			t.Errorf("retry logged without an error naming the gateway %s: %s", gw2, l)
		}
	}
	counts, failed = countVersions(getHello(ctx, t, s, client2, 10))
	if failed > 0 || counts["v1"]+counts["v2"] != 10 {
		t.Errorf("from cluster2 (its traffic does not use network2's gateway): %v, %d failed; want every request answered", counts, failed)
	}

	// The gateway comes back: the client proxy avoids it for a while after its failure, then v2
	// answers again.
	if err := c.StartGateway(ctx, testbed.S2Network2); err != nil {
		t.Fatalf("start network2's gateway again: %v", err)
	}
	start := time.Now()
	for {
		res := getHello(ctx, t, s, client1, 1)
		if res[0].version == "v2" {
			t.Logf("v2 answered again %v after the gateway came back", time.Since(start).Round(100*time.Millisecond))
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("v2 did not answer within a minute of network2's gateway coming back (last: %+v)", res[0])
		}
		time.Sleep(500 * time.Millisecond)
	}
	counts, failed = countVersions(getHello(ctx, t, s, client1, 40))
	if failed > 0 || counts["v1"] == 0 || counts["v2"] == 0 {
		t.Errorf("after the gateway came back, from cluster1: %v, %d failed; want both versions, no failure", counts, failed)
	}
	for _, n := range nodes {
		if now := c.ProxyPID(n); now != pids[n] {
			t.Errorf("the proxy of %s was restarted (pid %d, was %d)", n, now, pids[n])
		}
	}
	if now := c.GatewayPID(testbed.S2Network1); now != gw1PID {
		t.Errorf("the gateway of network1 was restarted (pid %d, was %d)", now, gw1PID)
	}
	x, err := c.CrossNetworkCounters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("packets crossing networks during the outage and after: %v", x)
	if x.Dropped != 0 {
		t.Errorf("%d packets went from one network to a pod or node of the other (dropped), want 0", x.Dropped)
	}
	if x.ToGateway == 0 {
		t.Error("no packet reached a remote gateway")
	}
}
