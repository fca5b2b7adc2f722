// Command bench runs the benchmark harness (package bench) and prints a table of the figures; it
// writes results.json (median per figure and path) and detail.json (every sample) into -out.
//
// Usage:
//
//	bench -ztunnel bin/ztunnel [-out bench/out] [-quick] [-rounds N] [-duration D] [-paths direct,mesh,tls,stunnel]
//	bench relay ...   one side of the Go TLS relay pair (started by the harness itself)
//
// Needs root (network namespaces).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ztunnel-go/ztunnel/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		os.Exit(bench.RelayMain(os.Args[2:], os.Stderr))
	}
	var cfg bench.Config
	flag.StringVar(&cfg.Ztunnel, "ztunnel", "bin/ztunnel", "proxy `binary`")
	flag.StringVar(&cfg.Stunnel, "stunnel", "", "stunnel `binary` (default: stunnel or stunnel4 from PATH; the path is skipped if none)")
	out := flag.String("out", "bench/out", "write results.json and detail.json into this `directory`")
	quick := flag.Bool("quick", false, "tiny sizes, one round: a smoke test, not numbers")
	flag.IntVar(&cfg.Rounds, "rounds", 0, "rounds (default 5)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "length of each throughput and connection-rate measurement (default 3s)")
	flag.IntVar(&cfg.SoakConns, "soak", 0, "leak soak: open and close `N` connections through the mesh after the other figures, then report each proxy's growth (-only soak alone: 20000)")
	flag.StringVar(&cfg.ProxyLogLevel, "proxy-log-level", "", "the proxies' LOG_LEVEL (default info)")
	paths := flag.String("paths", "", "comma-separated paths to measure (default: all of direct,mesh,tls,stunnel)")
	only := flag.String("only", "", "comma-separated measurement groups to run (default: all of "+strings.Join(bench.Groups, ",")+")")
	flag.Func("proxy-env", "extra `KEY=VALUE` for both proxies (repeatable; for experiments)", func(kv string) error {
		cfg.ProxyEnv = append(cfg.ProxyEnv, kv)
		return nil
	})
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *paths != "" {
		cfg.Paths = strings.Split(*paths, ",")
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if *quick {
		rounds, d := cfg.Rounds, cfg.Duration
		cfg = cfg.Quick()
		if rounds > 0 {
			cfg.Rounds = rounds
		}
		if d > 0 {
			cfg.Duration = d
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := bench.Run(ctx, cfg)
	if r != nil {
		if werr := r.WriteTable(os.Stdout); werr != nil {
			fmt.Fprintln(os.Stderr, "bench:", werr)
		}
	}
	if err == nil {
		err = r.WriteFiles(*out)
	} else {
		err = fmt.Errorf("%w (no results written)", err)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}
