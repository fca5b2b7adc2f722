package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ztunnel-go/ztunnel/bench/load"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// soakSettle is how long the proxies get to give back what the soak's connections held.
const soakSettle = 10 * time.Second

// soak is the leak soak: SoakConns connections (connect, 1-byte echo, close; 16 at a time) through
// the mesh, then each proxy's goroutines, descriptors and RSS are compared with before, after
// soakSettle. The growth per proxy is the figure (the e2e test TestLeakSoak asserts the margins
// with a smaller count).
func (e *env) soak(ctx context.Context, r *Results) error {
	mesh := e.path(PathMesh)
	if mesh == nil {
		return nil
	}
	log := e.cfg.Logger
	nodes := mesh.pidNames
	usage := func() ([]testbed.ProxyUsage, error) {
		out := make([]testbed.ProxyUsage, len(nodes))
		for i, n := range nodes {
			u, err := e.c.ProxyUsage(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("soak: %w", err)
			}
			out[i] = u
		}
		return out, nil
	}
	before, err := usage()
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := load.ConnRate(ctx, mesh.dial, 16, 24*time.Hour, int64(e.cfg.SoakConns))
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	log.Info("soak done", "conns", res.Done, "failed", res.Failed, "took", time.Since(start).Round(time.Millisecond))
	if err := sleep(ctx, soakSettle); err != nil {
		return err
	}
	after, err := usage()
	if err != nil {
		return err
	}
	for i, n := range nodes {
		b, a := before[i], after[i]
		log.Info("soak", "proxy", n, "before", b.String(), "after", a.String())
		for _, f := range []struct {
			fig string
			v   float64
		}{
			{FigSoakGoroutines, float64(a.Goroutines - b.Goroutines)},
			{FigSoakFDs, float64(a.FDs - b.FDs)},
			{FigSoakRSS, (float64(a.RSSKiB) - float64(b.RSSKiB)) / 1024},
		} {
			r.Add(f.fig, PathMesh, f.v)
			r.AddDetail(f.fig+"/"+n, PathMesh, f.v)
		}
	}
	r.AddDetail("soak_conns_failed", PathMesh, float64(res.Failed))
	return nil
}
