// Command testbed runs the node proxy in a simulated cluster made of network namespaces.
//
// Usage:
//
//	testbed [-ztunnel PATH] [-scenario S] [-settle D] [-v] demo   run a scenario; exit 0 only if it passes
//	testbed [-ztunnel PATH] [-scenario S] [-settle D] [-v] up     build a scenario's topology and keep it until interrupted
//	testbed [-v] [-all] down            remove the leftovers of earlier runs whose process is gone
//
// -scenario is s1 (locality failover, the default), s2 (two networks joined by east-west
// gateways), s3 (cross-region weighted distribution and failover), s4l4 (a 90/10 canary by
// weighted TCP routes), s5 (multicluster failover with cluster priority; the demo waits out a
// 1 min ejection) or, for demo only, all (every scenario in turn). -ztunnel defaults to
// "ztunnel" in PATH. Needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ztunnel-go/ztunnel/testbed"
)

func main() {
	ztunnel := flag.String("ztunnel", "", `path of the proxy binary (default: "ztunnel" in PATH)`)
	verbose := flag.Bool("v", false, "debug logging (every ip command)")
	all := flag.Bool("all", false, "with down: also remove the namespaces of runs that left no state directory\n(e.g. tests killed by a timeout) when no process runs in them")
	scenario := flag.String("scenario", "s1", "the scenario: s1 (locality failover), s2 (two networks, east-west gateways),\n"+
		"s3 (cross-region distribution and failover), s4l4 (canary by weighted TCP routes),\n"+
		"s5 (multicluster failover with cluster priority) or, with demo, all")
	settle := flag.Duration("settle", 0, "after a config change, wait this `duration` instead of watching the proxy logs\nfor msg=\"local config loaded\" sha256=... (for proxies that do not log it)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] demo|up|down\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	// Flags may also follow the command: testbed demo -ztunnel bin/ztunnel.
	if flag.NArg() >= 1 {
		cmd, rest := flag.Arg(0), flag.Args()[1:]
		flag.CommandLine.Parse(rest)
		if flag.NArg() != 0 {
			flag.Usage()
			os.Exit(2)
		}
		os.Args = append(os.Args[:1], cmd)
	} else {
		flag.Usage()
		os.Exit(2)
	}
	command := os.Args[1]
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, command, *scenario, testbed.Config{Ztunnel: *ztunnel, Logger: logger, ConfigSettle: *settle}, *all); err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		stop()
		os.Exit(1)
	}
}

// scenarios are the scenarios demo runs, in the order of -scenario all.
var scenarios = []struct {
	name string
	run  func(context.Context, testbed.Config, io.Writer) error
	up   func(context.Context, testbed.Config) error
}{
	{"s1", testbed.RunS1, upS1},
	{"s2", testbed.RunS2, upS2},
	{"s3", testbed.RunS3, upS3},
	{"s4l4", testbed.RunS4, upS4},
	{"s5", runS5, upS5},
}

// runS5 runs S5 with the scenario's 1 min ejection time.
func runS5(ctx context.Context, cfg testbed.Config, out io.Writer) error {
	fmt.Fprintf(out, "S5 uses the scenario's base ejection time T = %v: step 3 waits it out.\n", testbed.S5DefaultEjectionTime)
	return testbed.RunS5(ctx, cfg, testbed.S5Options{}, out)
}

func run(ctx context.Context, cmd, scenario string, cfg testbed.Config, sweep bool) error {
	switch cmd {
	case "down":
		removed, err := testbed.Cleanup(ctx, "", cfg.Logger)
		fmt.Printf("removed %d run(s) %v\n", len(removed), removed)
		if err != nil || !sweep {
			return err
		}
		removed, err = testbed.SweepUnrecorded(ctx, "", cfg.Logger)
		fmt.Printf("removed the namespaces of %d unrecorded run(s) %v\n", len(removed), removed)
		return err
	case "demo", "up":
	default:
		return fmt.Errorf("unknown command %q (want demo, up or down)", cmd)
	}
	var names []string
	selected := scenarios[:0:0]
	for _, s := range scenarios {
		names = append(names, s.name)
		if s.name == scenario || scenario == "all" && cmd == "demo" {
			selected = append(selected, s)
		}
	}
	if len(selected) == 0 {
		want := strings.Join(names, ", ")
		if cmd == "demo" {
			want += " or all"
		}
		return fmt.Errorf("-scenario %q: want %s", scenario, want)
	}
	bin, err := findZtunnel(cfg.Ztunnel)
	if err != nil {
		return err
	}
	cfg.Ztunnel = bin
	if cmd == "up" {
		return selected[0].up(ctx, cfg)
	}
	var failed []string
	for _, s := range selected {
		if len(selected) > 1 {
			fmt.Printf("\n######## scenario %s\n", strings.ToUpper(s.name))
		}
		if err := s.run(ctx, cfg, os.Stdout); err != nil {
			if len(selected) == 1 {
				return err
			}
			fmt.Fprintln(os.Stderr, "testbed:", err)
			failed = append(failed, strings.ToUpper(s.name))
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenario(s) %s failed", strings.Join(failed, ", "))
	}
	if len(selected) > 1 {
		fmt.Printf("\nall %d scenarios passed\n", len(selected))
	}
	return nil
}

// findZtunnel resolves the proxy binary.
func findZtunnel(path string) (string, error) {
	if path == "" {
		path = "ztunnel"
	}
	p, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("proxy binary: %w (build it with `go build ./cmd/ztunnel` and pass -ztunnel)", err)
	}
	return p, nil
}

// upS1 builds the S1 topology, prints how to reach it and waits for an interrupt.
func upS1(ctx context.Context, cfg testbed.Config) (err error) {
	s, err := testbed.BuildS1(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	c := s.Cluster
	fmt.Printf("S1 topology is up (run %s, work dir %s, config %s).\n\n", c.RunID(), c.Dir(), c.ConfigPath())
	for _, n := range []string{"worker1", "worker2", "worker3"} {
		fmt.Printf("node %-8s  netns %-12s  proxy log %s\n", n, c.NodeNetNS(n), c.ProxyLog(n))
	}
	fmt.Println()
	for _, p := range c.Pods() {
		fmt.Printf("pod %-30s %-12s on %-8s netns %s\n", p.Namespace()+"/"+p.Name(), p.IP(), p.Node(), p.NetNSName())
	}
	fmt.Printf("\nTry:\n  ip netns exec %s curl -s http://%s:%d/hello\n", s.Client.NetNSName(), testbed.S1HelloworldVIP, testbed.HelloworldPort)
	fmt.Printf("  ip netns exec %s curl -s http://%s:%d/hello\n", s.Client.NetNSName(), testbed.S1LocalVIP, testbed.HelloworldPort)
	fmt.Println("\nPress Ctrl-C to tear down.")
	<-ctx.Done()
	return nil
}

// upS2 builds the S2 topology, prints how to reach it and waits for an interrupt.
func upS2(ctx context.Context, cfg testbed.Config) (err error) {
	s, err := testbed.BuildS2(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	c := s.Cluster
	fmt.Printf("S2 topology is up (run %s, work dir %s).\n\n", c.RunID(), c.Dir())
	for _, n := range []string{testbed.S2Network1, testbed.S2Network2} {
		fmt.Printf("network %s: config %s\n  gateway %s  netns %s  log %s\n", n, c.NetworkConfigPath(n),
			c.GatewayIP(n), c.GatewayNetNS(n), c.GatewayLog(n))
	}
	fmt.Println()
	for _, n := range []string{"c1-worker1", "c1-worker2", "c2-worker1", "c2-worker2"} {
		fmt.Printf("node %-10s  netns %-12s  proxy log %s\n", n, c.NodeNetNS(n), c.ProxyLog(n))
	}
	fmt.Println()
	for _, p := range c.Pods() {
		fmt.Printf("pod %-30s %-12s on %-10s netns %s\n", p.Namespace()+"/"+p.Name(), p.IP(), p.Node(), p.NetNSName())
	}
	fmt.Println("\nTry:")
	for _, cl := range []string{testbed.S2Cluster1, testbed.S2Cluster2} {
		fmt.Printf("  ip netns exec %s curl -s %s\n", s.Clients[cl].NetNSName(), s.HelloURL())
	}
	fmt.Printf("  ip netns exec %s curl -s localhost:15000/config_dump\n", c.NodeNetNS("c1-worker1"))
	fmt.Println("\nPress Ctrl-C to tear down.")
	<-ctx.Done()
	return nil
}

// upS3 builds the S3 topology with step 1's DestinationRule (90/10 distribution), prints how to
// reach it and waits for an interrupt.
func upS3(ctx context.Context, cfg testbed.Config) (err error) {
	s, err := testbed.BuildS3(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	if err := s.Cluster.SetTrafficPolicy(ctx, testbed.S3DistributionPolicy()); err != nil {
		return err
	}
	printTopology(s.Cluster, "S3", []string{"hz-worker", "sh-worker", "hz-client"})
	fmt.Printf("\nDestinationRule reviews distributes 90/10 from cn-hangzhou (see destinationRules in %s).\nTry:\n", s.Cluster.ConfigPath())
	fmt.Printf("  for i in $(seq 20); do ip netns exec %s curl -s %s; done | sort | uniq -c\n", s.Client.NetNSName(), s.ReviewsURL())
	fmt.Println("\nPress Ctrl-C to tear down.")
	<-ctx.Done()
	return nil
}

// upS4 builds the S4 topology with its canary policy, prints how to reach it and waits for an
// interrupt.
func upS4(ctx context.Context, cfg testbed.Config) (err error) {
	s, err := testbed.BuildS4(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	if err := s.Cluster.SetTrafficPolicy(ctx, testbed.S4CanaryPolicy()); err != nil {
		return err
	}
	printTopology(s.Cluster, "S4", []string{"worker1", "worker2", "worker3"})
	fmt.Printf("\nVirtualService helloworld routes 90/10 to subsets v3/v4 (see %s).\nTry:\n", s.Cluster.ConfigPath())
	fmt.Printf("  for i in $(seq 20); do ip netns exec %s curl -s %s; done | sort | uniq -c\n", s.Client.NetNSName(), s.HelloURL())
	fmt.Println("\nPress Ctrl-C to tear down.")
	<-ctx.Done()
	return nil
}

// upS5 builds the S5 topology (S2's with the failoverPriority DestinationRule), prints how to
// reach it and waits for an interrupt.
func upS5(ctx context.Context, cfg testbed.Config) (err error) {
	s, err := testbed.BuildS5(ctx, cfg, testbed.S5Options{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	c := s.Cluster
	printTopology(c, "S5", []string{"c1-worker1", "c1-worker2", "c2-worker1", "c2-worker2"})
	for _, n := range []string{testbed.S2Network1, testbed.S2Network2} {
		fmt.Printf("network %s: config %s, gateway log %s\n", n, c.NetworkConfigPath(n), c.GatewayLog(n))
	}
	fmt.Println("\nDestinationRule helloworld: failoverPriority [topology.istio.io/cluster], outlier detection. Try:")
	for _, cl := range []string{testbed.S2Cluster1, testbed.S2Cluster2} {
		fmt.Printf("  ip netns exec %s curl -s %s\n", s.Clients[cl].NetNSName(), s.HelloURL())
	}
	fmt.Printf("  ip netns exec %s curl -s localhost:15000/config_dump\n", c.NodeNetNS("c1-worker1"))
	fmt.Println("\nPress Ctrl-C to tear down.")
	<-ctx.Done()
	return nil
}

// printTopology prints a scenario's run, its nodes and its pods.
func printTopology(c *testbed.Cluster, name string, nodes []string) {
	fmt.Printf("%s topology is up (run %s, work dir %s).\n\n", name, c.RunID(), c.Dir())
	for _, n := range nodes {
		fmt.Printf("node %-10s  netns %-12s  proxy log %s\n", n, c.NodeNetNS(n), c.ProxyLog(n))
	}
	fmt.Println()
	for _, p := range c.Pods() {
		fmt.Printf("pod %-30s %-12s on %-10s netns %s\n", p.Namespace()+"/"+p.Name(), p.IP(), p.Node(), p.NetNSName())
	}
}
