package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ztunnel-go/ztunnel/bench/load"
	"github.com/ztunnel-go/ztunnel/bench/stats"
)

// rssSamples is how many times each proxy's RSS is read (rssInterval apart) for one figure.
const (
	rssSamples  = 3
	rssInterval = 250 * time.Millisecond
)

// measureMemory loads the proxies with the synthetic config (Workloads, Services), reads their
// idle RSS, then holds HeldConns idle connections through the mesh and reads the growth. Each
// proxy contributes one sample per figure (the median of its reads); per-proxy values go to the
// detail series. The synthetic config is removed again at the end. Run it before any heavy
// traffic, so that the idle figure is not inflated by buffers the runtime has not given back.
func (e *env) measureMemory(ctx context.Context, r *Results) error {
	mesh := e.path(PathMesh)
	if mesh == nil {
		return nil
	}
	log := e.cfg.Logger
	// One connection first: the certificates and the pooled HBONE connection are part of the idle
	// state, not of the per-connection cost.
	h, err := load.Hold(ctx, mesh.dial, 1)
	if err != nil {
		return fmt.Errorf("memory: first mesh connection: %w", err)
	}
	h.Close()
	data, err := syntheticConfig(e.cfg.Workloads, e.cfg.Services)
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	start := time.Now()
	if err := e.c.WriteConfigExtra(ctx, data); err != nil {
		return fmt.Errorf("memory: load %d workloads, %d services: %w", e.cfg.Workloads, e.cfg.Services, err)
	}
	loadTime := time.Since(start)
	r.AddDetail("config_load_s", PathMesh, loadTime.Seconds())
	log.Info("synthetic config loaded", "workloads", e.cfg.Workloads, "services", e.cfg.Services,
		"bytes", len(data), "took", loadTime.Round(time.Millisecond))
	if err := sleep(ctx, e.cfg.Settle); err != nil {
		return err
	}
	idle, err := e.readRSS(ctx, mesh)
	if err != nil {
		return err
	}
	for i, kib := range idle {
		r.Add(FigRSSIdle, PathMesh, kib/1024)
		r.AddDetail(FigRSSIdle+"/"+mesh.pidNames[i], PathMesh, kib/1024)
	}
	log.Info("idle rss", "kib", idle)

	held, err := load.Hold(ctx, mesh.dial, e.cfg.HeldConns)
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	defer held.Close()
	if err := sleep(ctx, e.cfg.Settle); err != nil {
		return err
	}
	busy, err := e.readRSS(ctx, mesh)
	if err != nil {
		return err
	}
	for i := range busy {
		per := (busy[i] - idle[i]) / float64(held.Len())
		r.Add(FigRSSPerConn, PathMesh, per)
		r.AddDetail(FigRSSPerConn+"/"+mesh.pidNames[i], PathMesh, per)
	}
	log.Info("rss with idle connections", "conns", held.Len(), "kib", busy)
	held.Close()
	if err := e.c.WriteConfig(); err != nil {
		return fmt.Errorf("memory: remove synthetic config: %w", err)
	}
	if err := e.c.WaitConfigApplied(ctx); err != nil {
		return fmt.Errorf("memory: remove synthetic config: %w", err)
	}
	return nil
}

// readRSS returns, per process of p, the median of rssSamples reads of its RSS in KiB.
func (e *env) readRSS(ctx context.Context, p *path) ([]float64, error) {
	reads := make([][]float64, len(p.pids))
	for s := range rssSamples {
		if s > 0 {
			if err := sleep(ctx, rssInterval); err != nil {
				return nil, err
			}
		}
		for i, pid := range p.pids {
			kib, err := rssKiB(pid)
			if err != nil {
				return nil, fmt.Errorf("memory: %s proxy: %w", p.pidNames[i], err)
			}
			reads[i] = append(reads[i], kib)
		}
	}
	out := make([]float64, len(p.pids))
	for i, xs := range reads {
		out[i] = stats.Median(xs)
	}
	return out, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
