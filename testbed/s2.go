package testbed

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
)

// Scenario S2 (shared/SCENARIOS.md): two networks joined by east-west gateways.
var (
	// S2HelloworldVIP is the VIP of helloworld.sample, published on both networks.
	S2HelloworldVIP = netip.MustParseAddr("10.96.0.20")
)

// s2Requests is the number of requests from each cluster in step 1.
const s2Requests = 40

// S2 cluster, network and node names.
const (
	S2Cluster1, S2Cluster2 = "cluster1", "cluster2"
	S2Network1, S2Network2 = "network1", "network2"
)

// S2 is the topology of scenario S2: cluster1 on network1 (nodes c1-worker1 and c1-worker2) and
// cluster2 on network2 (c2-worker1 and c2-worker2), an east-west gateway per network on each
// cluster's worker2, helloworld v1 on c1-worker2 and v2 on c2-worker2 behind one service
// helloworld.sample (VIP on both networks, no routing preference), and a client pod on each
// cluster's worker1.
type S2 struct {
	Cluster *Cluster
	// Clients are the client pods by cluster ID (S2Cluster1, S2Cluster2).
	Clients map[string]*Pod
	hello   ServiceSpec
}

var s2Nodes = []NodeSpec{
	{Name: "c1-worker1", Network: S2Network1, Cluster: S2Cluster1, Region: "region1", Zone: "zone1"},
	{Name: "c1-worker2", Network: S2Network1, Cluster: S2Cluster1, Region: "region1", Zone: "zone1"},
	{Name: "c2-worker1", Network: S2Network2, Cluster: S2Cluster2, Region: "region2", Zone: "zone1"},
	{Name: "c2-worker2", Network: S2Network2, Cluster: S2Cluster2, Region: "region2", Zone: "zone1"},
}

// s2Replicas: helloworld version -> node.
var s2Replicas = []struct{ version, node string }{{"v1", "c1-worker2"}, {"v2", "c2-worker2"}}

// s2ClientNodes: cluster -> the node of its client pod.
var s2ClientNodes = map[string]string{S2Cluster1: "c1-worker1", S2Cluster2: "c2-worker1"}

// BuildS2 builds the S2 topology with cfg (whose Nodes and Gateways must be empty: S2 defines
// them) and starts the helloworld servers. It needs cfg.Ztunnel: the gateways run the proxy.
func BuildS2(ctx context.Context, cfg Config) (_ *S2, err error) {
	if len(cfg.Nodes) > 0 || len(cfg.Gateways) > 0 {
		return nil, errors.New("build S2: Config.Nodes and Config.Gateways must be empty, S2 defines them")
	}
	if cfg.Ztunnel == "" {
		return nil, errors.New("build S2: Config.Ztunnel is required (the gateways and node proxies run it)")
	}
	cfg.Nodes = s2Nodes
	cfg.Gateways = []GatewaySpec{{Node: "c1-worker2"}, {Node: "c2-worker2"}}
	c, err := New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("build S2: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	s := &S2{
		Cluster: c,
		Clients: map[string]*Pod{},
		hello: ServiceSpec{Name: "helloworld", Namespace: "sample", VIP: S2HelloworldVIP,
			Ports: map[uint16]uint16{HelloworldPort: HelloworldPort}},
	}
	if err := c.AddService(ctx, s.hello); err != nil {
		return nil, fmt.Errorf("build S2: %w", err)
	}
	for _, r := range s2Replicas {
		p, err := c.AddPod(ctx, PodSpec{
			Name: "helloworld-" + r.version, Namespace: "sample", ServiceAccount: "helloworld", Node: r.node, Enrolled: true,
			Services: map[string]map[uint16]uint16{s.hello.ConfigKey(): {HelloworldPort: HelloworldPort}},
			Labels:   map[string]string{"app": "helloworld", "version": r.version},
		})
		if err != nil {
			return nil, fmt.Errorf("build S2: %w", err)
		}
		if _, err := p.ServeHelloworld(r.version); err != nil {
			return nil, fmt.Errorf("build S2: %w", err)
		}
	}
	for _, cl := range []string{S2Cluster1, S2Cluster2} {
		p, err := c.AddPod(ctx, PodSpec{Name: "sleep-" + cl, Namespace: "sample", ServiceAccount: "sleep",
			Node: s2ClientNodes[cl], Enrolled: true, Labels: map[string]string{"app": "sleep"}})
		if err != nil {
			return nil, fmt.Errorf("build S2: %w", err)
		}
		s.Clients[cl] = p
	}
	return s, nil
}

// Close tears the cluster down.
func (s *S2) Close() error { return s.Cluster.Close() }

// HelloURL is the URL the clients request: helloworld's VIP on port 5000.
func (s *S2) HelloURL() string {
	return fmt.Sprintf("http://%s:%d/hello", S2HelloworldVIP, HelloworldPort)
}

// RunS2 builds the S2 topology, runs its steps (S2.Run, then S2.RunOutage), prints every step to
// out and tears everything down. On failure it also prints the tail of every proxy and gateway
// log. The error lists every expectation that did not hold.
func RunS2(ctx context.Context, cfg Config, out io.Writer) (err error) {
	s, err := BuildS2(ctx, cfg)
	if err != nil {
		return err
	}
	return runBuilt(s.Cluster, s.Close, out, func() error {
		return runSteps("S2", out, func(r *scenarioRun) error { return s.run(ctx, r) },
			func(r *scenarioRun) error { return s.runOutage(ctx, r) })
	})
}

// Run runs the steps of S2 that leave the topology as it is:
//  1. From each cluster, 40 requests to helloworld.sample:5000 all succeed and see both v1 and v2.
//  2. The cross-network counters show traffic to and from the remote gateways only, both ways,
//     nothing dropped (no packet went to a pod or node of the other network).
//  3. Each client's node proxy's /config_dump shows the local helloworld endpoint with its address
//     and the remote one as the split-horizon workload with its networkGateway, not the remote pod.
//  4. The inner TLS is end to end: each destination's node proxy logged the remote client's own
//     identity on a connection that came from the gateway's address, and no gateway holds a
//     certificate for helloworld's identity.
func (s *S2) Run(ctx context.Context, out io.Writer) error {
	return runSteps("S2", out, func(r *scenarioRun) error { return s.run(ctx, r) })
}

// run runs the steps of Run, recording failed expectations in r. An error means a step could not
// be carried out.
func (s *S2) run(ctx context.Context, r *scenarioRun) error {
	c := s.Cluster
	if err := c.ResetCrossNetworkCounters(ctx); err != nil {
		return err
	}

	r.step("1. requests from each cluster see both versions")
	for _, cl := range []string{S2Cluster1, S2Cluster2} {
		res := r.get(ctx, s.Clients[cl], s.HelloURL(), s2Requests)
		r.expectOK(res)
		r.expectVersions(res, "v1", "v2")
	}

	r.step("2. cross-network traffic went only to the remote gateways")
	x, err := c.CrossNetworkCounters(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.out, "-- packets crossing networks: %v\n", x)
	for _, dir := range [][2]string{{S2Network1, S2Network2}, {S2Network2, S2Network1}} {
		to := x.ByRule[xnetToGateway+":"+dir[0]+":"+dir[1]]
		from := x.ByRule[xnetFromGateway+":"+dir[1]+":"+dir[0]]
		if to == 0 || from == 0 {
			r.fail("%s -> gateway of %s: %d packets, replies %d; want both > 0", dir[0], dir[1], to, from)
		}
	}
	if x.Dropped != 0 {
		r.fail("%d packets went from a pod of one network to a pod or node of the other (dropped), want 0", x.Dropped)
	} else {
		fmt.Fprintln(r.out, "   ok: nothing went to the other network except its gateway, and only replies came back")
	}

	r.step("3. each client node proxy's config dump shows the local endpoint and the remote network gateway")
	for _, cl := range []string{S2Cluster1, S2Cluster2} {
		s.checkConfigDump(ctx, r, cl)
	}

	r.step("4. the inner TLS is end to end: the gateway relays, the destination sees the client")
	for _, cl := range []string{S2Cluster1, S2Cluster2} {
		s.checkEndToEnd(ctx, r, cl)
	}
	return nil
}

// s2Other is the other cluster and its network.
func s2Other(cluster string) (otherCluster, network, otherNetwork string) {
	if cluster == S2Cluster1 {
		return S2Cluster2, S2Network1, S2Network2
	}
	return S2Cluster1, S2Network2, S2Network1
}

// s2Replica returns the helloworld pod of a cluster.
func (s *S2) replica(cluster string) *Pod {
	if cluster == S2Cluster1 {
		return s.Cluster.Pod("helloworld-v1")
	}
	return s.Cluster.Pod("helloworld-v2")
}

// dumpWorkload is the part of a /config_dump workload S2 checks.
type dumpWorkload struct {
	UID            string   `json:"uid"`
	WorkloadIPs    []string `json:"workloadIps"`
	Network        string   `json:"network"`
	Capacity       uint32   `json:"capacity"`
	NetworkGateway *struct {
		Destination   string `json:"destination"`
		HBONEMTLSPort uint16 `json:"hboneMtlsPort"`
	} `json:"networkGateway"`
}

// configDump is the part of /config_dump S2 reads.
type configDump struct {
	Workloads    []dumpWorkload `json:"workloads"`
	Certificates []struct {
		Identity string `json:"identity"`
	} `json:"certificates"`
}

// parseConfigDump decodes a /config_dump body.
func parseConfigDump(b []byte) (configDump, error) {
	var d configDump
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("parse config dump: %w", err)
	}
	return d, nil
}

// checkConfigDump checks the config dump of the client node proxy of cluster.
func (s *S2) checkConfigDump(ctx context.Context, r *scenarioRun, cluster string) {
	node := s2ClientNodes[cluster]
	other, _, otherNet := s2Other(cluster)
	fmt.Fprintf(r.out, "-- GET localhost:15000/config_dump on %s (%s)\n", node, cluster)
	b, err := s.Cluster.NodeAdminGet(ctx, node, "/config_dump")
	if err != nil {
		r.fail("%v", err)
		return
	}
	d, err := parseConfigDump(b)
	if err != nil {
		r.fail("%s: %v", node, err)
		return
	}
	local, remote := s.replica(cluster), s.replica(other)
	gwIP := s.Cluster.GatewayIP(otherNet)
	splitUID := otherNet + "/SplitHorizonWorkload/" + GatewayNamespace + "/eastwestgateway/" + gwIP.String() + "/" + s.hello.ConfigKey()
	byUID := map[string]dumpWorkload{}
	for _, w := range d.Workloads {
		byUID[w.UID] = w
	}
	localUID := cluster + "//v1/Pod/sample/" + local.Name()
	if w, ok := byUID[localUID]; !ok || !slices.Equal(w.WorkloadIPs, []string{local.IP().String()}) {
		r.fail("%s: local endpoint %s with address %s not in the config dump (got %+v)", node, localUID, local.IP(), w)
	} else {
		fmt.Fprintf(r.out, "   ok: local endpoint %s workloadIps %v\n", localUID, w.WorkloadIPs)
	}
	w, ok := byUID[splitUID]
	wantDest := otherNet + "/" + gwIP.String()
	switch {
	case !ok:
		r.fail("%s: remote workload %s not in the config dump", node, splitUID)
	case w.NetworkGateway == nil || w.NetworkGateway.Destination != wantDest || w.NetworkGateway.HBONEMTLSPort != GatewayHBONEPort:
		r.fail("%s: remote workload %s has networkGateway %+v, want %s port %d", node, splitUID, w.NetworkGateway, wantDest, GatewayHBONEPort)
	case len(w.WorkloadIPs) != 0 || w.Network != otherNet || w.Capacity != 1:
		r.fail("%s: remote workload %s: workloadIps %v network %q capacity %d, want none, %q, 1", node, splitUID, w.WorkloadIPs, w.Network, w.Capacity, otherNet)
	default:
		fmt.Fprintf(r.out, "   ok: remote workload %s network %s networkGateway %s:%d capacity %d\n",
			splitUID, w.Network, w.NetworkGateway.Destination, w.NetworkGateway.HBONEMTLSPort, w.Capacity)
	}
	remoteUID := other + "//v1/Pod/sample/" + remote.Name()
	if _, ok := byUID[remoteUID]; ok {
		r.fail("%s: the remote pod %s is listed itself, want only its split-horizon workload", node, remoteUID)
	}
}

// checkEndToEnd checks that connections from cluster's client reached the other cluster's
// replica with the client's own identity, relayed by the other network's gateway, which holds no
// certificate for the replica's identity.
func (s *S2) checkEndToEnd(ctx context.Context, r *scenarioRun, cluster string) {
	other, _, otherNet := s2Other(cluster)
	dst := s.replica(other)
	gwIP := s.Cluster.GatewayIP(otherNet)
	clientID := spiffeID("sample", "sleep")
	logPath := s.Cluster.ProxyLog(dst.Node())
	n, err := countInboundFrom(logPath, gwIP, clientID)
	if err != nil {
		r.fail("%v", err)
	} else if n == 0 {
		r.fail("%s (%s): no inbound connection from the gateway's address %s with src.identity=%s in %s",
			dst.Node(), dst.Name(), gwIP, clientID, logPath)
	} else {
		fmt.Fprintf(r.out, "   ok: %s logged %d inbound connections to %s from %s (the gateway of %s) with src.identity=%s\n",
			dst.Node(), n, dst.Name(), gwIP, otherNet, clientID)
	}
	b, err := s.Cluster.GatewayAdminGet(ctx, otherNet, "/config_dump")
	if err != nil {
		r.fail("%v", err)
		return
	}
	d, err := parseConfigDump(b)
	if err != nil {
		r.fail("gateway of %s: %v", otherNet, err)
		return
	}
	var ids []string
	for _, c := range d.Certificates {
		ids = append(ids, c.Identity)
	}
	helloID := spiffeID("sample", "helloworld")
	if slices.Contains(ids, helloID) || slices.Contains(ids, clientID) {
		r.fail("gateway of %s holds certificates %v, want none for %s or %s", otherNet, ids, helloID, clientID)
	} else {
		fmt.Fprintf(r.out, "   ok: the gateway of %s holds certificates only for %v\n", otherNet, ids)
	}
}

// countInboundFrom counts the access-log lines of inbound connections in a proxy log whose source
// address is from and whose source identity is id.
func countInboundFrom(logPath string, from netip.Addr, id string) (int, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return 0, fmt.Errorf("read proxy log: %w", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "direction=inbound") && strings.Contains(l, " src.addr="+from.String()+":") &&
			(strings.Contains(l, " src.identity="+id+" ") || strings.Contains(l, ` src.identity="`+id+`"`)) {
			n++
		}
	}
	return n, sc.Err()
}

// s2OutageRequests is the number of requests of each check of RunOutage.
const s2OutageRequests = 20

// RunOutage runs the gateway outage steps of S2:
//  5. network2's gateway stops: requests from cluster1 never answer v2, those that fail fail
//     promptly (no hang), local v1 keeps answering; cluster2's requests (through network1's
//     gateway and locally) all succeed.
//  6. network2's gateway starts again: without restarting anything else, requests from cluster1
//     reach v2 again (the client proxy avoids a failed gateway for a while, so this polls for up
//     to a minute), then every request succeeds.
func (s *S2) RunOutage(ctx context.Context, out io.Writer) error {
	return runSteps("S2", out, func(r *scenarioRun) error { return s.runOutage(ctx, r) })
}

// runOutage runs the steps of RunOutage, recording failed expectations in r. An error means a
// step could not be carried out.
func (s *S2) runOutage(ctx context.Context, r *scenarioRun) error {
	c := s.Cluster
	pids := map[string]int{}
	for _, n := range s2Nodes {
		pids[n.Name] = c.ProxyPID(n.Name)
	}
	gw1PID := c.GatewayPID(S2Network1)

	r.step("5. network2's gateway goes away")
	if err := c.StopGateway(S2Network2, 10*time.Second); err != nil {
		return err
	}
	clientLog := c.ProxyLog(s2ClientNodes[S2Cluster1])
	logStart := fileSize(clientLog)
	res := r.get(ctx, s.Clients[S2Cluster1], s.HelloURL(), s2OutageRequests)
	counts, failed := versionCounts(res)
	switch {
	case counts["v2"] > 0:
		r.fail("%d requests answered v2 while network2's gateway is down", counts["v2"])
	case counts["v1"] == 0:
		r.fail("no request answered v1: local traffic stopped with the remote gateway")
	}
	r.expectPromptFailures(res)
	if counts["v2"] == 0 && counts["v1"] > 0 {
		fmt.Fprintf(r.out, "   ok: %d answered v1 (local), %d failed promptly, none reached v2\n", counts["v1"], failed)
	}
	// A connection the client's proxy sent toward the dead gateway is tried again on the local
	// endpoint before the client sees anything (issue 12): the proxy logs each such retry.
	var retried []string
	for range 20 {
		if retried = logLinesSince(clientLog, logStart, `msg="upstream connect failed, trying another endpoint"`); len(retried) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(retried) > 0 {
		l := retried[0]
		if i := strings.Index(l, " error="); i >= 0 {
			l = l[i+1:]
		}
		fmt.Fprintf(r.out, "   %d connection(s) retried on the local endpoint after the gateway failed: %s\n", len(retried), l)
	}
	if failed > 0 {
		// Each failed request has its access-log line, with the error, in the client's proxy log.
		var logged []string
		for range 20 {
			if logged = logLinesSince(clientLog, logStart, `msg="connection failed"`); len(logged) >= failed {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(logged) < failed {
			r.fail("%d requests failed, but the client's proxy logged %d failed connections (%s)", failed, len(logged), clientLog)
		}
		if len(logged) > 0 {
			l := logged[0]
			if i := strings.Index(l, " error="); i >= 0 {
				l = l[i+1:]
			}
			fmt.Fprintf(r.out, "   the client's proxy logged the failure: %s\n", l)
		}
	}
	res = r.get(ctx, s.Clients[S2Cluster2], s.HelloURL(), s2OutageRequests/2)
	r.expectOK(res)

	r.step("6. network2's gateway comes back")
	if err := c.StartGateway(ctx, S2Network2); err != nil {
		return err
	}
	fmt.Fprintf(r.out, "-- GET %s from %s every 500ms until v2 answers (at most 60s)\n", s.HelloURL(), s.Clients[S2Cluster1].Name())
	start := time.Now()
	seen := false
	for !seen && time.Since(start) < time.Minute && ctx.Err() == nil {
		body, err := s.Clients[S2Cluster1].HTTPGet(ctx, s.HelloURL())
		if err == nil {
			if v, _, perr := parseHelloworld(body); perr == nil && v == "v2" {
				seen = true
				break
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	if !seen {
		r.fail("v2 did not answer within %v of network2's gateway coming back", time.Since(start).Round(time.Second))
	} else {
		fmt.Fprintf(r.out, "   ok: v2 answered %v after the gateway came back\n", time.Since(start).Round(100*time.Millisecond))
	}
	res = r.get(ctx, s.Clients[S2Cluster1], s.HelloURL(), s2OutageRequests)
	r.expectOK(res)
	r.expectVersions(res, "v1", "v2")
	for name, pid := range pids {
		if now := c.ProxyPID(name); now != pid {
			r.fail("the proxy of %s was restarted (pid %d, was %d)", name, now, pid)
		}
	}
	if now := c.GatewayPID(S2Network1); now != gw1PID {
		r.fail("the gateway of network1 was restarted (pid %d, was %d)", now, gw1PID)
	}
	return nil
}

// versionCounts counts the successful responses by version, and the failures.
func versionCounts(res []s1Result) (map[string]int, int) {
	counts, failed := map[string]int{}, 0
	for _, x := range res {
		if x.err != nil {
			failed++
		} else {
			counts[x.version]++
		}
	}
	return counts, failed
}

// fileSize returns the size of the file at path, 0 if it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logLinesSince returns the complete lines of the file at path from byte offset on that contain
// substr.
func logLinesSince(path string, offset int64, substr string) []string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return nil
	}
	var out []string
	for l := range strings.SplitSeq(string(b[offset:]), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// scenarioRun collects the output and the failed expectations of one scenario run.
type scenarioRun struct {
	name     string
	out      io.Writer
	stepName string
	failures []string
}

// runBuilt runs a built scenario (run), then tears its topology down with closeFn; when run
// fails it first prints the tail of every proxy log of c to out. The error joins both.
func runBuilt(c *Cluster, closeFn func() error, out io.Writer, run func() error) (err error) {
	defer func() {
		if err != nil {
			c.writeProxyLogTails(out, 30)
		}
		if cerr := closeFn(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	return run()
}

// runSteps runs a scenario's steps in order, recording their expectations in one scenarioRun
// named name: an error (a step that could not be carried out) aborts; otherwise the result lists
// every expectation that did not hold.
func runSteps(name string, out io.Writer, steps ...func(*scenarioRun) error) error {
	r := &scenarioRun{name: name, out: out}
	for _, step := range steps {
		if err := step(r); err != nil {
			return r.abort(err)
		}
	}
	return r.result()
}

func (r *scenarioRun) step(name string) {
	r.stepName = name
	fmt.Fprintf(r.out, "\n== %s step %s\n", r.name, name)
}

func (r *scenarioRun) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.failures = append(r.failures, "step "+r.stepName+": "+msg)
	fmt.Fprintf(r.out, "   FAIL: %s\n", msg)
}

func (r *scenarioRun) abort(err error) error {
	r.fail("%v", err)
	return r.result()
}

func (r *scenarioRun) result() error {
	if len(r.failures) == 0 {
		fmt.Fprintf(r.out, "\n%s passed\n", r.name)
		return nil
	}
	fmt.Fprintf(r.out, "\n%s failed: %d expectation(s) did not hold\n", r.name, len(r.failures))
	return fmt.Errorf("%s: %d expectation(s) failed:\n  %s", r.name, len(r.failures), strings.Join(r.failures, "\n  "))
}

// get sends n requests from client, each on a new connection, and prints every response.
func (r *scenarioRun) get(ctx context.Context, client *Pod, url string, n int) []s1Result {
	fmt.Fprintf(r.out, "-- %d x GET %s from %s on %s\n", n, url, client.Name(), client.Node())
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
		body, err := client.HTTPGet(ctx, url)
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

// expectOK checks that every request succeeded.
func (r *scenarioRun) expectOK(res []s1Result) {
	_, failed := versionCounts(res)
	if failed > 0 {
		r.fail("%d of %d requests failed", failed, len(res))
	} else {
		fmt.Fprintf(r.out, "   ok: all %d succeeded\n", len(res))
	}
}

// expectVersions checks that the successful responses came from exactly the given versions.
func (r *scenarioRun) expectVersions(res []s1Result, want ...string) {
	counts, _ := versionCounts(res)
	got := slices.Sorted(maps.Keys(counts))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		r.fail("versions seen %v (counts %v), want exactly %v", got, counts, want)
	} else {
		fmt.Fprintf(r.out, "   ok: versions %v\n", counts)
	}
}

// expectPromptFailures checks that no request hung: each failure came before most of the client's
// timeout.
func (r *scenarioRun) expectPromptFailures(res []s1Result) {
	const hang = DefaultRequestTimeout * 4 / 5
	slow := 0
	for _, x := range res {
		if x.err != nil && (x.notSent || x.elapsed >= hang) {
			slow++
		}
	}
	if slow > 0 {
		r.fail("%d of %d requests hung for %v or more instead of failing promptly", slow, len(res), hang)
	}
}
