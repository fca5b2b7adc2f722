package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ztunnel-go/ztunnel/bench/load"
	"github.com/ztunnel-go/ztunnel/bench/stats"
)

// maxConns bounds the connections of one connection-rate measurement.
const maxConns = 10_000_000

// measurement is one traffic figure group measured on one path; it adds its samples to r.
type measurement struct {
	group string // the name -only selects it by
	name  string
	run   func(ctx context.Context, e *env, p *path, r *Results) error
}

var measurements = []measurement{
	{"throughput", "throughput (1 stream, with CPU)", measureThroughput1},
	{"throughput8", "throughput (parallel streams)", measureThroughputN},
	{"rtt", "round-trip latency", measureRTT},
	{"conn", "new connections", measureConnRate},
}

// Groups are the measurement groups Config.Only can select: "memory", the traffic measurements and
// "soak" (which runs only with Config.SoakConns set, or when named).
var Groups = []string{"memory", "throughput", "throughput8", "rtt", "conn", "soak"}

// measureTraffic runs every measurement on every path, Rounds times. Within a round the paths
// alternate for each measurement, and the path that goes first rotates from round to round, so
// slow drift of the machine affects every path alike.
func (e *env) measureTraffic(ctx context.Context, r *Results) error {
	log := e.cfg.Logger
	for round := range e.cfg.Rounds {
		for _, m := range measurements {
			if !e.cfg.runs(m.group) {
				continue
			}
			for i := range e.paths {
				p := e.paths[(i+round)%len(e.paths)]
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := e.checkAlive(); err != nil {
					return err
				}
				if err := m.run(ctx, e, p, r); err != nil {
					return fmt.Errorf("round %d, %s, path %s: %w", round+1, m.name, p.name, err)
				}
			}
		}
		log.Info("round done", "round", round+1, "of", e.cfg.Rounds)
	}
	return nil
}

// warmUp makes a few round trips, a short transfer and a few connections on every path, so that
// certificates, pooled connections and buffers exist before anything is recorded.
func (e *env) warmUp(ctx context.Context) error {
	for _, p := range e.paths {
		if _, err := load.RTT(ctx, p.dial, 1, 100*time.Millisecond, 100); err != nil {
			return fmt.Errorf("warm up %s: %w", p.name, err)
		}
		if _, err := load.Throughput(ctx, p.dial, 1, 200*time.Millisecond); err != nil {
			return fmt.Errorf("warm up %s: %w", p.name, err)
		}
		if _, err := load.ConnRate(ctx, p.dial, 4, 100*time.Millisecond, 1000); err != nil {
			return fmt.Errorf("warm up %s: %w", p.name, err)
		}
	}
	return nil
}

func measureThroughput1(ctx context.Context, e *env, p *path, r *Results) error {
	var res load.ThroughputResult
	cpu, err := cpuDuring(p.pids, func() (err error) {
		res, err = load.Throughput(ctx, p.dial, 1, e.cfg.Duration)
		return err
	})
	if err != nil {
		return err
	}
	r.Add(FigThroughput, p.name, res.Gbps())
	attrs := []any{"path", p.name, "gbps", round3(res.Gbps())}
	if res.Bytes > 0 {
		if perGB := p.addCPUDetail(r, FigCPUPerGB, cpu, 1, float64(res.Bytes)/1e9); len(perGB) > 0 {
			var sum float64
			for _, v := range perGB {
				sum += v
			}
			mean := sum / float64(len(perGB))
			r.Add(FigCPUPerGB, p.name, mean)
			attrs = append(attrs, "cpu_s_per_gb", round3(mean))
		}
	}
	e.cfg.Logger.Info("throughput", attrs...)
	return nil
}

func measureThroughputN(ctx context.Context, e *env, p *path, r *Results) error {
	var res load.ThroughputResult
	cpu, err := cpuDuring(p.pids, func() (err error) {
		res, err = load.Throughput(ctx, p.dial, e.cfg.Streams, e.cfg.Duration)
		return err
	})
	if err != nil {
		return err
	}
	r.Add(FigThroughput8, p.name, res.Gbps())
	if res.Bytes > 0 {
		p.addCPUDetail(r, FigCPUPerGB+"_streams", cpu, 1, float64(res.Bytes)/1e9)
	}
	e.cfg.Logger.Info("parallel throughput", "path", p.name, "streams", e.cfg.Streams, "gbps", round3(res.Gbps()))
	return nil
}

func measureRTT(ctx context.Context, e *env, p *path, r *Results) error {
	for _, size := range []int{1, 1024} {
		var rtts []time.Duration
		cpu, err := cpuDuring(p.pids, func() (err error) {
			rtts, err = load.RTT(ctx, p.dial, size, e.cfg.RTTDuration, e.cfg.RTTMaxCount)
			return err
		})
		if err != nil {
			return err
		}
		if len(rtts) > 0 {
			// CPU per round trip of each proxy: tells per-hop work apart from scheduling delay.
			p.addCPUDetail(r, fmt.Sprintf("rtt%d_cpu_us_per_round_trip", size), cpu, 1e6, float64(len(rtts)))
		}
		us := make([]float64, len(rtts))
		for i, d := range rtts {
			us[i] = float64(d.Nanoseconds()) / 1e3
		}
		ps := stats.Percentiles(us, 50, 99, 99.9)
		if size == 1 {
			r.Add(FigRTT1P50, p.name, ps[0])
			r.Add(FigRTT1P99, p.name, ps[1])
			r.Add(FigRTT1P999, p.name, ps[2])
		} else {
			r.Add(FigRTT1KP50, p.name, ps[0])
			r.Add(FigRTT1KP99, p.name, ps[1])
		}
		r.AddDetail(fmt.Sprintf("rtt%d_round_trips", size), p.name, float64(len(rtts)))
		e.cfg.Logger.Info("round-trip latency", "path", p.name, "bytes", size, "n", len(rtts),
			"p50_us", round3(ps[0]), "p99_us", round3(ps[1]), "p999_us", round3(ps[2]))
	}
	return nil
}

func measureConnRate(ctx context.Context, e *env, p *path, r *Results) error {
	var res load.ConnRateResult
	cpu, err := cpuDuring(p.pids, func() (err error) {
		res, err = load.ConnRate(ctx, p.dial, e.cfg.ConnClients, e.cfg.Duration, maxConns)
		return err
	})
	if err != nil {
		return err
	}
	if res.Done > 0 {
		// CPU per connection of each proxy: steadier than the rate on a busy machine.
		p.addCPUDetail(r, "conn_cpu_us_per_conn", cpu, 1e6, float64(res.Done))
	}
	r.Add(FigConnPerS, p.name, res.PerSecond())
	r.AddDetail("conn_failed", p.name, float64(res.Failed))
	e.cfg.Logger.Info("new connections", "path", p.name, "per_s", round3(res.PerSecond()), "failed", res.Failed)
	return nil
}

// cpuDuring runs fn and returns the CPU seconds each of pids used meanwhile.
func cpuDuring(pids []int, fn func() error) ([]float64, error) {
	before, err := cpuOf(pids)
	if err != nil {
		return nil, err
	}
	if err := fn(); err != nil {
		return nil, err
	}
	after, err := cpuOf(pids)
	if err != nil {
		return nil, err
	}
	for i := range after {
		after[i] -= before[i]
	}
	return after, nil
}

// addCPUDetail records cpu (from cpuDuring on p.pids) as cpu*scale/units for each of p's
// processes, in the detail series name+"/"+process, and returns the values.
func (p *path) addCPUDetail(r *Results, name string, cpu []float64, scale, units float64) []float64 {
	vs := make([]float64, len(cpu))
	for i, c := range cpu {
		vs[i] = c * scale / units
		r.AddDetail(name+"/"+p.pidNames[i], p.name, vs[i])
	}
	return vs
}

// cpuOf returns the CPU seconds of each process.
func cpuOf(pids []int) ([]float64, error) {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		v, err := cpuSeconds(pid)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// round3 rounds to three significant digits for the log.
func round3(v float64) string { return formatValue(v) }
