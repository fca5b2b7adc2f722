package testbed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Scenario S1 (shared/SCENARIOS.md): locality failover on one network.
var (
	// S1HelloworldVIP is the VIP of helloworld.sample ([Network, Region, Zone, Subzone], Failover).
	S1HelloworldVIP = netip.MustParseAddr("10.96.0.10")
	// S1LocalVIP is the VIP of helloworld-local.sample ([Node], Strict).
	S1LocalVIP = netip.MustParseAddr("10.96.0.11")
)

// s1Requests is the number of requests per check of steps 1 and 2; step 3 sends twice as many.
const s1Requests = 10

// S1 is the topology of scenario S1: worker1 region/zone1/subzone1, worker2 region/zone1/subzone2,
// worker3 region/zone2/subzone3, a helloworld replica per worker (VERSION = the node's locality
// joined by "."), a client pod "sleep" on worker1, and the services helloworld.sample and
// helloworld-local.sample over the replicas.
type S1 struct {
	Cluster *Cluster
	Client  *Pod
	hello   ServiceSpec
	local   ServiceSpec
}

var s1Nodes = []NodeSpec{
	{Name: "worker1", Region: "region", Zone: "zone1", Subzone: "subzone1"},
	{Name: "worker2", Region: "region", Zone: "zone1", Subzone: "subzone2"},
	{Name: "worker3", Region: "region", Zone: "zone2", Subzone: "subzone3"},
}

// BuildS1 builds the S1 topology with cfg (whose Nodes must be empty: S1 defines its own) and
// starts the helloworld servers. Pods are enrolled when cfg.Ztunnel is set.
func BuildS1(ctx context.Context, cfg Config) (_ *S1, err error) {
	if len(cfg.Nodes) > 0 {
		return nil, errors.New("build S1: Config.Nodes must be empty, S1 defines its nodes")
	}
	cfg.Nodes = s1Nodes
	c, err := New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("build S1: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	s := &S1{
		Cluster: c,
		hello: ServiceSpec{Name: "helloworld", Namespace: "sample", VIP: S1HelloworldVIP,
			Ports: map[uint16]uint16{HelloworldPort: HelloworldPort}, RoutingPreference: []string{"Network", "Region", "Zone", "Subzone"},
			Mode: "Failover"},
		local: ServiceSpec{Name: "helloworld-local", Namespace: "sample", VIP: S1LocalVIP,
			Ports: map[uint16]uint16{HelloworldPort: HelloworldPort}, RoutingPreference: []string{"Node"}, Mode: "Strict"},
	}
	for _, svc := range []ServiceSpec{s.hello, s.local} {
		if err := c.AddService(ctx, svc); err != nil {
			return nil, fmt.Errorf("build S1: %w", err)
		}
	}
	for _, n := range s1Nodes {
		if _, err := s.addReplica(ctx, "helloworld-"+n.Name, n); err != nil {
			return nil, fmt.Errorf("build S1: %w", err)
		}
	}
	s.Client, err = c.AddPod(ctx, PodSpec{Name: "sleep", Namespace: "sample", ServiceAccount: "sleep",
		Node: "worker1", Enrolled: cfg.Ztunnel != "", Labels: map[string]string{"app": "sleep"}})
	if err != nil {
		return nil, fmt.Errorf("build S1: %w", err)
	}
	return s, nil
}

// addReplica adds a helloworld pod on node n (whose locality gives VERSION) and starts its server.
func (s *S1) addReplica(ctx context.Context, name string, n NodeSpec) (*Pod, error) {
	version := strings.Join([]string{n.Region, n.Zone, n.Subzone}, ".")
	p, err := s.Cluster.AddPod(ctx, PodSpec{
		Name: name, Namespace: "sample", ServiceAccount: "helloworld", Node: n.Name,
		Enrolled: s.Cluster.cfg.Ztunnel != "",
		Services: map[string]map[uint16]uint16{
			s.hello.ConfigKey(): {HelloworldPort: HelloworldPort},
			s.local.ConfigKey(): {HelloworldPort: HelloworldPort},
		},
		Labels: map[string]string{"app": "helloworld", "version": version},
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
func (s *S1) Close() error { return s.Cluster.Close() }

// RunS1 builds the S1 topology, runs its steps (see S1.Run), prints every step and response to out
// and tears everything down. On failure it also prints the tail of every proxy log. The error lists
// every expectation that did not hold.
func RunS1(ctx context.Context, cfg Config, out io.Writer) (err error) {
	s, err := BuildS1(ctx, cfg)
	if err != nil {
		return err
	}
	return runBuilt(s.Cluster, s.Close, out, func() error { return s.Run(ctx, out) })
}

// Run runs the three steps of S1 on a freshly built topology (it deletes and replaces pods, so it
// runs once):
//  1. helloworld answers only region.zone1.subzone1; helloworld-local only worker1's replica.
//  2. Without worker1's replica: helloworld answers only region.zone1.subzone2; helloworld-local
//     fails each connection promptly (no fallback, no hang).
//  3. worker3 relabelled region/zone1/subzone2 with a new replica there: helloworld answers only
//     region.zone1.subzone2, from both worker2's and worker3's replicas.
func (s *S1) Run(ctx context.Context, out io.Writer) error {
	r := &s1Run{s: s, out: out}
	helloURL := fmt.Sprintf("http://%s:%d/hello", S1HelloworldVIP, HelloworldPort)
	localURL := fmt.Sprintf("http://%s:%d/hello", S1LocalVIP, HelloworldPort)

	r.step("1. every worker has a replica")
	res := r.get(ctx, helloURL, s1Requests)
	r.expectAll(res, "version", "region.zone1.subzone1")
	res = r.get(ctx, localURL, s1Requests)
	r.expectAll(res, "instance", "helloworld-worker1")

	r.step("2. delete the worker1 replica")
	if err := s.Cluster.DeletePod(ctx, "helloworld-worker1"); err != nil {
		return r.abort(err)
	}
	res = r.get(ctx, helloURL, s1Requests)
	r.expectAll(res, "version", "region.zone1.subzone2")
	res = r.get(ctx, localURL, s1Requests)
	r.expectFailFast(res)

	r.step("3. relabel worker3 as region/zone1/subzone2 and replace its replica")
	if err := s.Cluster.SetNodeLocality("worker3", "region", "zone1", "subzone2"); err != nil {
		return r.abort(err)
	}
	if err := s.Cluster.DeletePod(ctx, "helloworld-worker3"); err != nil {
		return r.abort(err)
	}
	w3 := NodeSpec{Name: "worker3", Region: "region", Zone: "zone1", Subzone: "subzone2"}
	if _, err := s.addReplica(ctx, "helloworld-worker3-relabeled", w3); err != nil {
		return r.abort(err)
	}
	res = r.get(ctx, helloURL, 2*s1Requests)
	r.expectAll(res, "version", "region.zone1.subzone2")
	r.expectInstances(res, "helloworld-worker2", "helloworld-worker3-relabeled")

	return r.result()
}

// s1Run collects the output and the failed expectations of one S1 run.
type s1Run struct {
	s        *S1
	out      io.Writer
	stepName string
	failures []string
}

// s1Result is one request's outcome.
type s1Result struct {
	version, instance string
	err               error
	elapsed           time.Duration
	notSent           bool // skipped after repeated timeouts
}

func (r *s1Run) step(name string) {
	r.stepName = name
	fmt.Fprintf(r.out, "\n== S1 step %s\n", name)
}

func (r *s1Run) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.failures = append(r.failures, "step "+r.stepName+": "+msg)
	fmt.Fprintf(r.out, "   FAIL: %s\n", msg)
}

func (r *s1Run) abort(err error) error {
	r.fail("%v", err)
	return r.result()
}

func (r *s1Run) result() error {
	if len(r.failures) == 0 {
		fmt.Fprintln(r.out, "\nS1 passed")
		return nil
	}
	fmt.Fprintf(r.out, "\nS1 failed: %d expectation(s) did not hold\n", len(r.failures))
	return fmt.Errorf("S1: %d expectation(s) failed:\n  %s", len(r.failures), strings.Join(r.failures, "\n  "))
}

// get sends n requests from the client pod, each on a new connection, and prints every response.
func (r *s1Run) get(ctx context.Context, url string, n int) []s1Result {
	fmt.Fprintf(r.out, "-- %d x GET %s from %s on %s\n", n, url, r.s.Client.Name(), r.s.Client.Node())
	res := make([]s1Result, 0, n)
	timeouts := 0
	for i := range n {
		if timeouts == 3 || ctx.Err() != nil {
			fmt.Fprintf(r.out, "   giving up on the remaining %d requests (%s)\n", n-i,
				cmp.Or(context.Cause(ctx), errors.New("3 timeouts in a row")))
			for range n - i {
				res = append(res, s1Result{err: errors.New("not sent"), notSent: true})
			}
			break
		}
		start := time.Now()
		body, err := r.s.Client.HTTPGet(ctx, url)
		x := s1Result{err: err, elapsed: time.Since(start)}
		if err == nil {
			x.version, x.instance, x.err = parseHelloworld(body)
		}
		if x.err != nil {
			fmt.Fprintf(r.out, "   [%2d] error after %v: %v\n", i+1, x.elapsed.Round(time.Millisecond), x.err)
		} else {
			fmt.Fprintf(r.out, "   [%2d] %s", i+1, body)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			timeouts++
		} else {
			timeouts = 0
		}
		res = append(res, x)
	}
	return res
}

// expectAll checks that every request succeeded with the given version or instance.
func (r *s1Run) expectAll(res []s1Result, field, want string) {
	bad := 0
	for _, x := range res {
		got := x.version
		if field == "instance" {
			got = x.instance
		}
		if x.err != nil || got != want {
			bad++
		}
	}
	if bad > 0 {
		r.fail("%d of %d requests did not answer %s %q", bad, len(res), field, want)
	} else {
		fmt.Fprintf(r.out, "   ok: all %d answered %s %q\n", len(res), field, want)
	}
}

// expectFailFast checks that every request failed, and promptly (not by the client's timeout).
func (r *s1Run) expectFailFast(res []s1Result) {
	const hang = DefaultRequestTimeout * 4 / 5
	answered, slow := 0, 0
	for _, x := range res {
		switch {
		case x.err == nil:
			answered++
		case x.notSent || x.elapsed >= hang:
			slow++
		}
	}
	if answered > 0 {
		r.fail("%d of %d requests were answered, want every connection to fail (strict, no local replica)", answered, len(res))
	}
	if slow > 0 {
		r.fail("%d of %d requests hung for %v or more instead of failing promptly", slow, len(res), hang)
	}
	if answered == 0 && slow == 0 {
		fmt.Fprintf(r.out, "   ok: all %d failed promptly\n", len(res))
	}
}

// expectInstances checks that the successful responses came from exactly the given instances.
func (r *s1Run) expectInstances(res []s1Result, want ...string) {
	seen := map[string]int{}
	for _, x := range res {
		if x.err == nil {
			seen[x.instance]++
		}
	}
	got := slices.Sorted(maps.Keys(seen))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		r.fail("instances seen %v (counts %v), want exactly %v", got, seen, want)
	} else {
		fmt.Fprintf(r.out, "   ok: instances %v\n", seen)
	}
}

// parseHelloworld splits "Hello version: <v>, instance: <i>\n".
func parseHelloworld(body string) (version, instance string, err error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(body), "Hello version: ")
	if ok {
		version, instance, ok = strings.Cut(rest, ", instance: ")
	}
	if !ok || version == "" || instance == "" {
		return "", "", fmt.Errorf("unexpected helloworld response %q", body)
	}
	return version, instance, nil
}
