package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"

	networking "istio.io/api/networking/v1alpha3"
)

// Scenario S4 at L4 (shared/SCENARIOS.md): a canary split by weighted TCP routes, per connection.
var (
	// S4HelloworldVIP is the VIP of helloworld.sample.
	S4HelloworldVIP = netip.MustParseAddr("10.96.0.40")
)

// s4Connections is the number of connections of the canary check.
const s4Connections = 1000

// S4 is the topology of scenario S4 at L4: three helloworld servers behind helloworld.sample:5000,
// two replicas of v3 (helloworld-v3-a on worker2, helloworld-v3-b on worker3) and one of v4
// (helloworld-v4 on worker3), and the client pod "sleep" on worker1. No node has locality
// labels: only the route's weights decide.
type S4 struct {
	Cluster *Cluster
	Client  *Pod
	hello   ServiceSpec
}

var s4Nodes = []NodeSpec{{Name: "worker1"}, {Name: "worker2"}, {Name: "worker3"}}

// s4Replicas: pod name, version, node.
var s4Replicas = []struct{ name, version, node string }{
	{"helloworld-v3-a", "v3", "worker2"},
	{"helloworld-v3-b", "v3", "worker3"},
	{"helloworld-v4", "v4", "worker3"},
}

// BuildS4 builds the S4 topology with cfg (whose Nodes must be empty: S4 defines them) and
// starts the helloworld servers. It needs cfg.Ztunnel: traffic policy is applied by the proxies.
func BuildS4(ctx context.Context, cfg Config) (_ *S4, err error) {
	if len(cfg.Nodes) > 0 || len(cfg.Gateways) > 0 {
		return nil, errors.New("build S4: Config.Nodes and Config.Gateways must be empty, S4 defines its nodes")
	}
	if cfg.Ztunnel == "" {
		return nil, errors.New("build S4: Config.Ztunnel is required (the proxies apply the traffic policy)")
	}
	if cfg.ControlPlane {
		return nil, errors.New("build S4: Config.ControlPlane is not supported (the fake istiod serves no traffic policy)")
	}
	cfg.Nodes = s4Nodes
	c, err := New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("build S4: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	s := &S4{Cluster: c, hello: ServiceSpec{Name: "helloworld", Namespace: "sample", VIP: S4HelloworldVIP,
		Ports: map[uint16]uint16{HelloworldPort: HelloworldPort}}}
	if err := c.AddService(ctx, s.hello); err != nil {
		return nil, fmt.Errorf("build S4: %w", err)
	}
	for _, r := range s4Replicas {
		p, err := c.AddPod(ctx, PodSpec{
			Name: r.name, Namespace: "sample", ServiceAccount: "helloworld", Node: r.node, Enrolled: true,
			Services: map[string]map[uint16]uint16{s.hello.ConfigKey(): {HelloworldPort: HelloworldPort}},
			Labels:   map[string]string{"app": "helloworld", "version": r.version},
		})
		if err != nil {
			return nil, fmt.Errorf("build S4: %w", err)
		}
		if _, err := p.ServeHelloworld(r.version); err != nil {
			return nil, fmt.Errorf("build S4: %w", err)
		}
	}
	s.Client, err = c.AddPod(ctx, PodSpec{Name: "sleep", Namespace: "sample", ServiceAccount: "sleep",
		Node: "worker1", Enrolled: true, Labels: map[string]string{"app": "sleep"}})
	if err != nil {
		return nil, fmt.Errorf("build S4: %w", err)
	}
	return s, nil
}

// Close tears the cluster down.
func (s *S4) Close() error { return s.Cluster.Close() }

// HelloURL is the URL the client requests: helloworld's VIP on port 5000.
func (s *S4) HelloURL() string {
	return fmt.Sprintf("http://%s:%d/hello", S4HelloworldVIP, HelloworldPort)
}

// S4CanaryPolicy is the canary of S4: DestinationRule helloworld with subsets v3 and v4 by the version label,
// VirtualService helloworld with one tcp route sending 90% to v3 and 10% to v4.
func S4CanaryPolicy() TrafficPolicy {
	route := func(subset string, weight int32) *networking.RouteDestination {
		return &networking.RouteDestination{Destination: &networking.Destination{Host: "helloworld", Subset: subset}, Weight: weight}
	}
	return TrafficPolicy{
		DestinationRules: []DestinationRule{{Name: "helloworld", Namespace: "sample", Spec: &networking.DestinationRule{
			Host: "helloworld",
			Subsets: []*networking.Subset{
				{Name: "v3", Labels: map[string]string{"version": "v3"}},
				{Name: "v4", Labels: map[string]string{"version": "v4"}},
			},
		}}},
		VirtualServices: []VirtualService{{Name: "helloworld", Namespace: "sample", Spec: &networking.VirtualService{
			Hosts: []string{"helloworld"},
			Tcp:   []*networking.TCPRoute{{Route: []*networking.RouteDestination{route("v3", 90), route("v4", 10)}}},
		}}},
	}
}

// RunS4 builds the S4 topology, runs its step (S4.Run), prints it to out and tears everything
// down. On failure it also prints the tail of every proxy log. The error lists every expectation
// that did not hold.
func RunS4(ctx context.Context, cfg Config, out io.Writer) (err error) {
	s, err := BuildS4(ctx, cfg)
	if err != nil {
		return err
	}
	return runBuilt(s.Cluster, s.Close, out, func() error { return s.Run(ctx, out) })
}

// Run runs S4 at L4: with DestinationRule helloworld (subsets v3 and v4 by the version label)
// and VirtualService helloworld (tcp route: 90 to subset v3, 10 to subset v4), 1000 connections
// from the client all succeed and v3's count is within the two-sided 99.9% binomial bound of
// 90%. It prints the count per replica too (balancing is per connection: the two v3 replicas
// share v3's connections at random), but asserts only the weights.
func (s *S4) Run(ctx context.Context, out io.Writer) error {
	return runSteps("S4", out, func(r *scenarioRun) error { return s.run(ctx, r) })
}

// run runs the step of Run, recording failed expectations in r. An error means it could not be
// carried out.
func (s *S4) run(ctx context.Context, r *scenarioRun) error {
	r.step("1. canary: tcp route 90 to subset v3, 10 to subset v4, per connection")
	fmt.Fprintln(r.out, "-- DestinationRule helloworld: subsets v3 {version: v3}, v4 {version: v4}")
	fmt.Fprintln(r.out, "   VirtualService helloworld: tcp route [{subset v3, weight 90}, {subset v4, weight 10}]")
	if err := s.Cluster.SetTrafficPolicy(ctx, S4CanaryPolicy()); err != nil {
		return err
	}
	res := r.getBatch(ctx, s.Client, s.HelloURL(), s4Connections, trafficParallel)
	r.expectSplit(res, "v3", 0.9)
	fmt.Fprintf(r.out, "   per replica (each connection balanced on its own; L7 per-request balancing is a waypoint's job): %s\n",
		formatCounts(instanceCounts(res)))
	return nil
}
