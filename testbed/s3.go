package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// Scenario S3 (shared/SCENARIOS.md): cross-region weighted distribution and failover.
var (
	// S3ReviewsVIP is the VIP of reviews.default.
	S3ReviewsVIP = netip.MustParseAddr("10.96.0.30")
)

// S3ReviewsPort is the service port of reviews.default (target port HelloworldPort).
const S3ReviewsPort = 9080

// S3 region and zone names.
const (
	S3Hangzhou, S3HangzhouZone = "cn-hangzhou", "cn-hangzhou-a"
	S3Shanghai, S3ShanghaiZone = "cn-shanghai", "cn-shanghai-a"
)

const (
	// s3Connections is the number of connections of the distribution check.
	s3Connections = 1000
	// s3Requests is the number of requests of every other check.
	s3Requests = 50
	// trafficParallel is how many connections the traffic-policy scenarios open at a time.
	trafficParallel = 8
)

// S3 is the topology of scenario S3: hz-worker (cn-hangzhou/cn-hangzhou-a) runs reviews v1,
// sh-worker (cn-shanghai/cn-shanghai-a) runs reviews v2, both endpoints of reviews.default
// (port 9080, a helloworld server answering its version), and the client pod "sleep" runs on a
// third node in hangzhou, hz-client (cn-hangzhou/cn-hangzhou-a), so that its connections to v1
// cross nodes too.
type S3 struct {
	Cluster *Cluster
	Client  *Pod
	reviews ServiceSpec
}

var s3Nodes = []NodeSpec{
	{Name: "hz-worker", Region: S3Hangzhou, Zone: S3HangzhouZone},
	{Name: "sh-worker", Region: S3Shanghai, Zone: S3ShanghaiZone},
	{Name: "hz-client", Region: S3Hangzhou, Zone: S3HangzhouZone},
}

// s3Replicas: reviews version -> node.
var s3Replicas = []struct{ version, node string }{{"v1", "hz-worker"}, {"v2", "sh-worker"}}

// BuildS3 builds the S3 topology with cfg (whose Nodes must be empty: S3 defines them) and
// starts the reviews servers. It needs cfg.Ztunnel: traffic policy is applied by the proxies.
func BuildS3(ctx context.Context, cfg Config) (_ *S3, err error) {
	if len(cfg.Nodes) > 0 || len(cfg.Gateways) > 0 {
		return nil, errors.New("build S3: Config.Nodes and Config.Gateways must be empty, S3 defines its nodes")
	}
	if cfg.Ztunnel == "" {
		return nil, errors.New("build S3: Config.Ztunnel is required (the proxies apply the traffic policy)")
	}
	if cfg.ControlPlane {
		return nil, errors.New("build S3: Config.ControlPlane is not supported (the fake istiod serves no traffic policy)")
	}
	cfg.Nodes = s3Nodes
	c, err := New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("build S3: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	s := &S3{Cluster: c, reviews: ServiceSpec{Name: "reviews", Namespace: "default", VIP: S3ReviewsVIP,
		Ports: map[uint16]uint16{S3ReviewsPort: HelloworldPort}}}
	if err := c.AddService(ctx, s.reviews); err != nil {
		return nil, fmt.Errorf("build S3: %w", err)
	}
	for _, r := range s3Replicas {
		if _, err := s.addReplica(ctx, r.version, r.node); err != nil {
			return nil, fmt.Errorf("build S3: %w", err)
		}
	}
	s.Client, err = c.AddPod(ctx, PodSpec{Name: "sleep", Namespace: "default", ServiceAccount: "sleep",
		Node: "hz-client", Enrolled: true, Labels: map[string]string{"app": "sleep"}})
	if err != nil {
		return nil, fmt.Errorf("build S3: %w", err)
	}
	return s, nil
}

// addReplica adds the reviews pod "reviews-<version>" on node and starts its server.
func (s *S3) addReplica(ctx context.Context, version, node string) (*Pod, error) {
	p, err := s.Cluster.AddPod(ctx, PodSpec{
		Name: "reviews-" + version, Namespace: "default", ServiceAccount: "bookinfo-reviews", Node: node, Enrolled: true,
		Services: map[string]map[uint16]uint16{s.reviews.ConfigKey(): {S3ReviewsPort: HelloworldPort}},
		Labels:   map[string]string{"app": "reviews", "version": version},
	})
	if err != nil {
		return nil, err
	}
	if _, err := p.ServeHelloworld(version); err != nil {
		return nil, err
	}
	return p, nil
}

// Close tears the cluster down.
func (s *S3) Close() error { return s.Cluster.Close() }

// ReviewsURL is the URL the client requests: reviews' VIP on port 9080.
func (s *S3) ReviewsURL() string {
	return fmt.Sprintf("http://%s:%d/hello", S3ReviewsVIP, S3ReviewsPort)
}

// s3Outlier is the outlier detection of every S3 rule: ejected after 1 error, checked every
// second, for a base ejection time of a minute.
func s3Outlier() *networking.OutlierDetection {
	return &networking.OutlierDetection{
		Consecutive_5XxErrors: wrapperspb.UInt32(1),
		Interval:              durationpb.New(time.Second),
		BaseEjectionTime:      durationpb.New(time.Minute),
	}
}

// s3Rule is the DestinationRule "reviews" with the locality setting l and s3Outlier.
func s3Rule(l *networking.LocalityLoadBalancerSetting) TrafficPolicy {
	return TrafficPolicy{DestinationRules: []DestinationRule{{Name: "reviews", Namespace: "default", Spec: &networking.DestinationRule{
		Host: "reviews",
		TrafficPolicy: &networking.TrafficPolicy{
			LoadBalancer:     &networking.LoadBalancerSettings{LocalityLbSetting: l},
			OutlierDetection: s3Outlier(),
		},
	}}}}
}

// S3DistributionPolicy is the policy of S3's step 1: DestinationRule reviews with
// localityLbSetting distribute from cn-hangzhou/* to cn-hangzhou/* 90 and cn-shanghai/* 10, and
// outlier detection (consecutive5xxErrors 1, interval 1s, baseEjectionTime 1m).
func S3DistributionPolicy() TrafficPolicy {
	return s3Rule(&networking.LocalityLoadBalancerSetting{
		Enabled: wrapperspb.Bool(true),
		Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{{
			From: S3Hangzhou + "/*",
			To:   map[string]uint32{S3Hangzhou + "/*": 90, S3Shanghai + "/*": 10},
		}},
	})
}

// S3FailoverPolicy is the policy of S3's steps 2 and 3: distribution off (localityLbSetting
// enabled: the default failover by region, zone and subzone) and the same outlier detection.
func S3FailoverPolicy() TrafficPolicy {
	return s3Rule(&networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(true)})
}

// RunS3 builds the S3 topology, runs its steps (S3.Run), prints every step to out and tears
// everything down. On failure it also prints the tail of every proxy log. The error lists every
// expectation that did not hold.
func RunS3(ctx context.Context, cfg Config, out io.Writer) (err error) {
	s, err := BuildS3(ctx, cfg)
	if err != nil {
		return err
	}
	return runBuilt(s.Cluster, s.Close, out, func() error { return s.Run(ctx, out) })
}

// Run runs the steps of S3 on a freshly built topology (it deletes, re-adds and kills reviews
// v1, so it runs once):
//  1. Distribution: DestinationRule reviews with localityLbSetting distribute from
//     cn-hangzhou/* to cn-hangzhou/* 90 and cn-shanghai/* 10, and outlier detection
//     (consecutive5xxErrors 1, interval 1s, baseEjectionTime 1m): of 1000 connections from the
//     hangzhou client none fails and v1's count is within the two-sided 99.9% binomial bound of
//     90%.
//  2. Failover by removal: distribution off (localityLbSetting enabled, same outlier detection):
//     50 requests all answer v1; with hangzhou's reviews deleted (gone from the config), 50
//     requests all answer v2, none fails.
//  3. Failover by death: reviews v1 back, 50 requests all answer v1; then its server is stopped,
//     the config unchanged: 50 requests all answer v2 and none fails (the first is retried on
//     v2); the client's node proxy logged the retry (failed=v1 next=v2) and the connection's
//     upstream.attempts=2, its /config_dump shows v1 ejected (timesEjected >= 1), and its
//     ztunnel_outlier_ejections_total for reviews is at least 1.
func (s *S3) Run(ctx context.Context, out io.Writer) error {
	return runSteps("S3", out, func(r *scenarioRun) error { return s.run(ctx, r) })
}

// run runs the steps of Run, recording failed expectations in r. An error means a step could not
// be carried out.
func (s *S3) run(ctx context.Context, r *scenarioRun) error {
	c, url := s.Cluster, s.ReviewsURL()

	r.step("1. distribution 90/10 from cn-hangzhou")
	fmt.Fprintln(r.out, "-- DestinationRule reviews: localityLbSetting.distribute from cn-hangzhou/* to {cn-hangzhou/*: 90, cn-shanghai/*: 10},")
	fmt.Fprintln(r.out, "   outlierDetection {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}")
	if err := c.SetTrafficPolicy(ctx, S3DistributionPolicy()); err != nil {
		return err
	}
	res := r.getBatch(ctx, s.Client, url, s3Connections, trafficParallel)
	r.expectSplit(res, "v1", 0.9)

	r.step("2. failover by removal (distribution off)")
	fmt.Fprintln(r.out, "-- DestinationRule reviews: localityLbSetting {enabled: true}, same outlierDetection")
	if err := c.SetTrafficPolicy(ctx, S3FailoverPolicy()); err != nil {
		return err
	}
	r.expectAllVersion(r.getBatch(ctx, s.Client, url, s3Requests, trafficParallel), "v1")
	fmt.Fprintln(r.out, "-- delete hangzhou's reviews (reviews-v1): it leaves the config")
	if err := c.DeletePod(ctx, "reviews-v1"); err != nil {
		return err
	}
	r.expectAllVersion(r.getBatch(ctx, s.Client, url, s3Requests, trafficParallel), "v2")

	r.step("3. failover by death (only outlier detection can notice)")
	fmt.Fprintln(r.out, "-- hangzhou's reviews comes back")
	v1, err := s.addReplica(ctx, "v1", "hz-worker")
	if err != nil {
		return err
	}
	r.expectAllVersion(r.getBatch(ctx, s.Client, url, s3Requests, trafficParallel), "v1")
	fmt.Fprintln(r.out, "-- reviews-v1's server dies; the config still lists it")
	v1.StopServers()
	clientLog := c.ProxyLog(s.Client.Node())
	logStart := fileSize(clientLog)
	// One at a time: the first connection meets the dead endpoint, the others find it ejected.
	r.expectAllVersion(r.getBatch(ctx, s.Client, url, s3Requests, 1), "v2")
	v2UID := c.Pod("reviews-v2").rec.UID()
	checkEjection(ctx, r, c, s.Client.Node(), s.reviews.ConfigKey(), v1.rec.UID(), v2UID, clientLog, logStart)
	return nil
}

// checkEjection checks what the client's node proxy shows after the endpoint deadUID died and
// connections to service (its config key) were retried on nextUID: the retry log line and
// the access-log line with upstream.attempts=2 in its log after logStart, the endpoint ejected
// in its /config_dump, and ztunnel_outlier_ejections_total for the service. It returns the
// host's state in the config dump.
func checkEjection(ctx context.Context, r *scenarioRun, c *Cluster, node, service, deadUID, nextUID, clientLog string, logStart int64) outlierHost {
	var retry, attempts string
	for range 40 { // the access-log line is written when the connection closes
		lines := logLinesSince(clientLog, logStart, "")
		retry = firstLineWith(lines, `msg="upstream connect failed, trying another endpoint"`, " failed="+deadUID+" ", " next="+nextUID+" ")
		attempts = firstLineWith(lines, `msg="connection complete"`, " upstream.attempts=2 ")
		if retry != "" && attempts != "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if retry == "" {
		r.fail("%s's proxy logged no retry with failed=%s next=%s (%s)", node, deadUID, nextUID, clientLog)
	} else {
		fmt.Fprintf(r.out, "   ok: %s's proxy logged the retry: %s\n", node, shortLogLine(retry))
	}
	if attempts == "" {
		r.fail("%s's proxy logged no completed connection with upstream.attempts=2 (%s)", node, clientLog)
	} else {
		fmt.Fprintf(r.out, "   ok: and the connection's access log: %s\n", shortLogLine(attempts))
	}
	h, ok, err := c.outlierHostState(ctx, node, service, deadUID)
	switch {
	case err != nil:
		r.fail("%v", err)
	case !ok:
		r.fail("%s's /config_dump has no outlierDetection host %s for %s", node, deadUID, service)
	case !h.Ejected || h.TimesEjected < 1:
		r.fail("%s's /config_dump shows %s for %s with ejected=%v timesEjected=%d, want ejected, timesEjected >= 1",
			node, deadUID, service, h.Ejected, h.TimesEjected)
	default:
		fmt.Fprintf(r.out, "   ok: %s's /config_dump: %s ejected until %s, timesEjected %d\n", node, deadUID, h.EjectedUntil, h.TimesEjected)
	}
	n, ok, err := c.nodeMetric(ctx, node, "ztunnel_outlier_ejections_total", map[string]string{"service": service})
	switch {
	case err != nil:
		r.fail("%v", err)
	case !ok || n < 1:
		r.fail("%s's ztunnel_outlier_ejections_total{service=%q} is %v (reported: %v), want >= 1", node, service, n, ok)
	default:
		fmt.Fprintf(r.out, "   ok: %s's ztunnel_outlier_ejections_total{service=%q} = %v\n", node, service, n)
	}
	if retries, ok, err := c.nodeMetric(ctx, node, "ztunnel_upstream_retries_total", nil); err == nil && ok {
		fmt.Fprintf(r.out, "   %s's ztunnel_upstream_retries_total = %v\n", node, retries)
	}
	return h
}
