package bench

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"time"
)

// Run builds the testbed, measures every figure of cfg on every path and removes the testbed. It
// measures the memory figures first (fresh proxies), then warms every path up, then runs the
// traffic rounds. Any failed measurement ends the run with an error; the results gathered so far
// are returned with it.
func Run(ctx context.Context, cfg Config) (_ *Results, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := NewResults()
	r.Meta = meta(cfg)
	start := time.Now()
	e, err := setup(ctx, cfg)
	if err != nil {
		return r, err
	}
	defer func() {
		if cerr := e.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		r.Meta["duration_s"] = time.Since(start).Seconds()
	}()
	if cfg.runs("memory") {
		if err := e.measureMemory(ctx, r); err != nil {
			return r, err
		}
	}
	if err := e.warmUp(ctx); err != nil {
		return r, err
	}
	if err := e.measureTraffic(ctx, r); err != nil {
		return r, err
	}
	if cfg.SoakConns > 0 && cfg.runs("soak") {
		if err := e.soak(ctx, r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// meta describes the run for detail.json.
func meta(cfg Config) map[string]any {
	m := map[string]any{
		"started":          time.Now().UTC().Format(time.RFC3339),
		"paths":            cfg.Paths,
		"only":             cfg.Only,
		"rounds":           cfg.Rounds,
		"duration_s":       0.0,
		"measure_s":        cfg.Duration.Seconds(),
		"rtt_measure_s":    cfg.RTTDuration.Seconds(),
		"streams":          cfg.Streams,
		"conn_clients":     cfg.ConnClients,
		"workloads":        cfg.Workloads,
		"services":         cfg.Services,
		"held_conns":       cfg.HeldConns,
		"soak_conns":       cfg.SoakConns,
		"proxy_log_level":  cfg.ProxyLogLevel,
		"proxy_env":        cfg.ProxyEnv,
		"ztunnel":          cfg.Ztunnel,
		"stunnel":          cfg.Stunnel,
		"go":               runtime.Version(),
		"cpus":             runtime.NumCPU(),
		"cpu_per_gb_basis": "user+system CPU seconds of each proxy per 10^9 bytes moved, mean of the two proxies",
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	return m
}
