// Command testbed runs the node proxy in a simulated cluster made of network namespaces.
//
// Usage:
//
//	testbed [-ztunnel PATH] [-settle D] [-v] demo   run scenario S1 (locality failover); exit 0 only if it passes
//	testbed [-ztunnel PATH] [-settle D] [-v] up     build the S1 topology and keep it until interrupted
//	testbed [-v] [-all] down            remove the leftovers of earlier runs whose process is gone
//
// -ztunnel defaults to "ztunnel" in PATH. Needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/ztunnel-go/ztunnel/testbed"
)

func main() {
	ztunnel := flag.String("ztunnel", "", `path of the proxy binary (default: "ztunnel" in PATH)`)
	verbose := flag.Bool("v", false, "debug logging (every ip command)")
	all := flag.Bool("all", false, "with down: also remove the namespaces of runs that left no state directory\n(e.g. tests killed by a timeout) when no process runs in them")
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
	if err := run(ctx, command, testbed.Config{Ztunnel: *ztunnel, Logger: logger, ConfigSettle: *settle}, *all); err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, cfg testbed.Config, sweep bool) error {
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
	bin, err := findZtunnel(cfg.Ztunnel)
	if err != nil {
		return err
	}
	cfg.Ztunnel = bin
	if cmd == "demo" {
		return testbed.RunS1(ctx, cfg, os.Stdout)
	}
	return up(ctx, cfg)
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

// up builds the S1 topology, prints how to reach it and waits for an interrupt.
func up(ctx context.Context, cfg testbed.Config) (err error) {
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
