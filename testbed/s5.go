package testbed

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// Scenario S5 (shared/SCENARIOS.md): multicluster failover with cluster priority, on the S2
// topology.

// S5DefaultEjectionTime is the base ejection time of scenario S5.
const S5DefaultEjectionTime = time.Minute

const (
	// s5Requests is the number of requests of each check of steps 1 and 2.
	s5Requests = 50
	// s5Interval is the outlier detection interval of S5.
	s5Interval = time.Second
	// s5ReturnMargin is how long after the ejection time v1 may take to answer again: the
	// interval check that ends the ejection, and the requests.
	s5ReturnMargin = 10 * time.Second
	// s5AfterReturn is the number of requests that must all answer v1 once it answered again.
	s5AfterReturn = 20
)

// S5Options configures scenario S5.
type S5Options struct {
	// EjectionTime is the DestinationRule's outlierDetection.baseEjectionTime, how long the dead
	// v1 stays ejected. Zero: S5DefaultEjectionTime (1 minute, as the scenario says); tests pass
	// a shorter one. At least a millisecond (Istio's minimum).
	EjectionTime time.Duration
}

// S5 is the topology of scenario S5: the S2 topology (cluster1 on network1 with helloworld v1,
// cluster2 on network2 with v2, an east-west gateway each, a client per cluster) with
// DestinationRule helloworld: localityLbSetting failoverPriority [topology.istio.io/cluster] and
// outlier detection (consecutive5xxErrors 1, interval 1s, baseEjectionTime S5Options.EjectionTime).
type S5 struct {
	*S2
	ejection time.Duration
}

// BuildS5 builds the S5 topology with cfg (as BuildS2, whose Nodes and Gateways must be empty)
// and sets its DestinationRule.
func BuildS5(ctx context.Context, cfg Config, opts S5Options) (_ *S5, err error) {
	if opts.EjectionTime < 0 || opts.EjectionTime > 0 && opts.EjectionTime < time.Millisecond {
		return nil, fmt.Errorf("build S5: ejection time %v: want at least 1ms (or zero for %v)", opts.EjectionTime, S5DefaultEjectionTime)
	}
	if cfg.ControlPlane {
		return nil, errors.New("build S5: Config.ControlPlane is not supported (the fake istiod serves no traffic policy)")
	}
	s2, err := BuildS2(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("build S5: %w", err)
	}
	s := &S5{S2: s2, ejection: cmp.Or(opts.EjectionTime, S5DefaultEjectionTime)}
	if err := s.Cluster.SetTrafficPolicy(ctx, s.Policy()); err != nil {
		return nil, errors.Join(fmt.Errorf("build S5: %w", err), s.Close())
	}
	return s, nil
}

// EjectionTime is the base ejection time of the DestinationRule.
func (s *S5) EjectionTime() time.Duration { return s.ejection }

// Policy is S5's traffic policy: DestinationRule helloworld with localityLbSetting
// failoverPriority [topology.istio.io/cluster] and outlier detection (consecutive5xxErrors 1,
// interval 1s, baseEjectionTime EjectionTime).
func (s *S5) Policy() TrafficPolicy {
	return TrafficPolicy{DestinationRules: []DestinationRule{{Name: "helloworld", Namespace: "sample", Spec: &networking.DestinationRule{
		Host: "helloworld",
		TrafficPolicy: &networking.TrafficPolicy{
			LoadBalancer: &networking.LoadBalancerSettings{LocalityLbSetting: &networking.LocalityLoadBalancerSetting{
				Enabled:          wrapperspb.Bool(true),
				FailoverPriority: []string{"topology.istio.io/cluster"},
			}},
			OutlierDetection: &networking.OutlierDetection{
				Consecutive_5XxErrors: wrapperspb.UInt32(1),
				Interval:              durationpb.New(s5Interval),
				BaseEjectionTime:      durationpb.New(s.ejection),
			},
		},
	}}}}
}

// RunS5 builds the S5 topology, runs its steps (S5.Run), prints every step to out and tears
// everything down. On failure it also prints the tail of every proxy and gateway log. The error
// lists every expectation that did not hold.
func RunS5(ctx context.Context, cfg Config, opts S5Options, out io.Writer) (err error) {
	s, err := BuildS5(ctx, cfg, opts)
	if err != nil {
		return err
	}
	return runBuilt(s.Cluster, s.Close, out, func() error { return s.Run(ctx, out) })
}

// Run runs the steps of S5 on a freshly built topology (it kills and restarts v1's server, so
// it runs once):
//  1. Each client node proxy's /config_dump lists the other cluster's split-horizon workload for
//     helloworld with that cluster's clusterId (failoverPriority on the cluster label needs it);
//     50 requests from cluster1 all answer v1, 50 from cluster2 all answer v2.
//  2. v1's server dies (the config unchanged): 50 requests from cluster1 all answer v2 and none
//     fails (the first is retried through network2's gateway); cluster1's client proxy logged the
//     retry and shows v1 ejected in its /config_dump and ztunnel_outlier_ejections_total.
//  3. v1's server comes back: requests from cluster1 (one per interval, none failing) answer v2
//     until v1's ejection is over, then v1, within the ejection time and a margin of the restart
//     and not before the ejection ends; then 20 requests all answer v1.
func (s *S5) Run(ctx context.Context, out io.Writer) error {
	return runSteps("S5", out, func(r *scenarioRun) error { return s.run(ctx, r) })
}

// run runs the steps of Run, recording failed expectations in r. An error means a step could not
// be carried out.
func (s *S5) run(ctx context.Context, r *scenarioRun) error {
	c, url := s.Cluster, s.HelloURL()
	client1, client2 := s.Clients[S2Cluster1], s.Clients[S2Cluster2]
	v1 := s.replica(S2Cluster1)
	fmt.Fprintf(r.out, "-- DestinationRule helloworld: localityLbSetting {enabled: true, failoverPriority: [topology.istio.io/cluster]},\n"+
		"   outlierDetection {consecutive5xxErrors: 1, interval: %v, baseEjectionTime: %v}\n", s5Interval, s.ejection)

	r.step("1. each cluster answers its own version")
	for _, cl := range []string{S2Cluster1, S2Cluster2} {
		s.checkRemoteClusterID(ctx, r, cl)
	}
	r.expectAllVersion(r.getBatch(ctx, client1, url, s5Requests, trafficParallel), "v1")
	r.expectAllVersion(r.getBatch(ctx, client2, url, s5Requests, trafficParallel), "v2")

	r.step("2. v1's server dies (the config still lists it)")
	v1.StopServers()
	clientLog := c.ProxyLog(client1.Node())
	logStart := fileSize(clientLog)
	// One at a time: the first connection meets the dead endpoint, the others find it ejected.
	r.expectAllVersion(r.getBatch(ctx, client1, url, s5Requests, 1), "v2")
	h := checkEjection(ctx, r, c, client1.Node(), s.hello.ConfigKey(), v1.rec.UID(), s.splitHorizonUID(S2Network2), clientLog, logStart)

	r.step(fmt.Sprintf("3. v1's server comes back: v1 again once its ejection (%v) is over", s.ejection))
	if _, err := v1.ServeHelloworld("v1"); err != nil {
		return err
	}
	restarted := time.Now()
	until, err := time.Parse(time.RFC3339, h.EjectedUntil)
	if err != nil {
		until = time.Time{} // not ejected (already reported): no lower bound
	}
	deadline := restarted.Add(s.ejection + s5ReturnMargin)
	fmt.Fprintf(r.out, "-- GET %s from %s every %v until v1 answers (at most %v)\n", url, client1.Name(), s5Interval,
		deadline.Sub(restarted).Round(time.Second))
	var firstV1 time.Time
	polled, failed := map[string]int{}, 0
	for firstV1.IsZero() && time.Now().Before(deadline) && ctx.Err() == nil {
		x := getParallel(ctx, client1, url, 1, 1)[0]
		switch {
		case x.err != nil:
			failed++
			fmt.Fprintf(r.out, "   error after %v: %v\n", x.elapsed.Round(time.Millisecond), x.err)
		case x.version == "v1":
			firstV1 = time.Now()
		default:
			polled[x.version]++
		}
		if firstV1.IsZero() {
			select {
			case <-ctx.Done():
			case <-time.After(s5Interval):
			}
		}
	}
	fmt.Fprintf(r.out, "   while v1 was ejected: %s\n", formatCounts(polled))
	if failed > 0 {
		r.fail("%d requests failed while v1 was ejected, want none", failed)
	}
	switch {
	case firstV1.IsZero():
		r.fail("v1 did not answer within %v of its restart (ejection time %v, ejected until %s)",
			time.Since(restarted).Round(time.Second), s.ejection, cmp.Or(h.EjectedUntil, "?"))
		return nil
	case !until.IsZero() && firstV1.Before(until):
		r.fail("v1 answered at %s, before its ejection ended (%s)", firstV1.UTC().Format(time.RFC3339Nano), h.EjectedUntil)
	default:
		fmt.Fprintf(r.out, "   ok: v1 answered again %v after its restart, once its ejection was over (ejected until %s)\n",
			firstV1.Sub(restarted).Round(100*time.Millisecond), h.EjectedUntil)
	}
	r.expectAllVersion(r.getBatch(ctx, client1, url, s5AfterReturn, 1), "v1")
	return nil
}

// splitHorizonUID is the UID of the split-horizon workload that stands for helloworld's
// endpoints on network (behind its gateway).
func (s *S5) splitHorizonUID(network string) string {
	return network + "/SplitHorizonWorkload/" + GatewayNamespace + "/eastwestgateway/" + s.Cluster.GatewayIP(network).String() +
		"/" + s.hello.ConfigKey()
}

// checkRemoteClusterID checks that the client node proxy of cluster lists the other cluster's
// split-horizon workload for helloworld with that cluster's clusterId.
func (s *S5) checkRemoteClusterID(ctx context.Context, r *scenarioRun, cluster string) {
	node := s2ClientNodes[cluster]
	other, _, otherNet := s2Other(cluster)
	uid := s.splitHorizonUID(otherNet)
	b, err := s.Cluster.NodeAdminGet(ctx, node, "/config_dump")
	if err != nil {
		r.fail("%v", err)
		return
	}
	var d struct {
		Workloads []struct {
			UID       string `json:"uid"`
			ClusterID string `json:"clusterId"`
		} `json:"workloads"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		r.fail("parse config dump of %s: %v", node, err)
		return
	}
	for _, w := range d.Workloads {
		if w.UID != uid {
			continue
		}
		if w.ClusterID != other {
			r.fail("%s: split-horizon workload %s has clusterId %q, want %q (failoverPriority on topology.istio.io/cluster needs it)",
				node, uid, w.ClusterID, other)
		} else {
			fmt.Fprintf(r.out, "   ok: %s lists the split-horizon workload %s with clusterId %s\n", node, uid, w.ClusterID)
		}
		return
	}
	r.fail("%s: no split-horizon workload %s in the config dump", node, uid)
}
