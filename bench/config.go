package bench

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Config configures Run.
type Config struct {
	// Ztunnel is the path of the proxy binary. Required.
	Ztunnel string
	// Self is a binary whose "relay" command runs RelayMain (the harness binary). Empty: this
	// process's executable.
	Self string
	// Stunnel is the stunnel binary. Empty: "stunnel" or "stunnel4" from PATH; if neither is
	// found the stunnel path is left out (with a warning) unless Paths names it explicitly.
	Stunnel string
	// Paths are the paths to measure, from Paths. Nil: all of them.
	Paths []string
	// Only limits the run to these measurement groups (from Groups). Nil: all of them.
	Only []string
	// Rounds is how often every figure is measured on every path. Zero: 5.
	Rounds int
	// Duration is the length of each throughput and connection-rate measurement. Zero: 3 s.
	Duration time.Duration
	// RTTDuration is the length of each latency measurement (per message size). Zero: 2 s.
	RTTDuration time.Duration
	// RTTMaxCount bounds the round trips of one latency measurement. Zero: 1 000 000.
	RTTMaxCount int
	// Streams is the stream count of the parallel throughput figure. Zero: 8.
	Streams int
	// ConnClients is the number of concurrent clients of the connection-rate figure. Zero: 32.
	ConnClients int
	// Workloads and Services size the synthetic config of the idle-memory figure. Zero: 10 000 and
	// 1 000.
	Workloads, Services int
	// SoakConns, if positive, runs the leak soak after the other figures: that many connections
	// opened and closed through the mesh, then what each proxy holds is compared with before
	// (figures soak_*). Zero: no soak, unless Only names "soak" (then 20 000).
	SoakConns int
	// HeldConns is the number of idle connections of the per-connection memory figure. Zero: 2 000.
	HeldConns int
	// Settle is the wait before reading memory figures (the proxy returns parse garbage to the
	// OS a second or two after a config change settles). Zero: 5 s.
	Settle time.Duration
	// ProxyLogLevel is the proxies' LOG_LEVEL. Empty: "info" (as deployed: one access-log line
	// per connection).
	ProxyLogLevel string
	// ProxyEnv are extra KEY=VALUE settings for both proxies (for experiments; the defaults are
	// what is measured normally).
	ProxyEnv []string
	// StateRoot is the testbed's state root. Empty: testbed.DefaultStateRoot.
	StateRoot string
	// Logger receives progress. Nil: slog.Default().
	Logger *slog.Logger
}

// Quick returns c with tiny sizes, so that every figure is measured once in a few seconds: for
// smoke tests, not for numbers.
func (c Config) Quick() Config {
	c.Rounds = 1
	c.Duration = 300 * time.Millisecond
	c.RTTDuration = 200 * time.Millisecond
	c.Workloads, c.Services = 200, 20
	c.HeldConns = 50
	c.Settle = 200 * time.Millisecond
	return c
}

// withDefaults returns c with zero fields set to their defaults; it resolves Self and Stunnel.
func (c Config) withDefaults() (Config, error) {
	if c.Ztunnel == "" {
		return c, fmt.Errorf("bench config: no proxy binary (Ztunnel)")
	}
	if c.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("bench config: find own executable for the relay command: %w", err)
		}
		c.Self = self
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	explicit := c.Paths != nil
	if c.Paths == nil {
		c.Paths = slices.Clone(Paths)
	}
	for _, p := range c.Paths {
		if !slices.Contains(Paths, p) {
			return c, fmt.Errorf("bench config: unknown path %q, want one of %v", p, Paths)
		}
	}
	for _, g := range c.Only {
		if !slices.Contains(Groups, g) {
			return c, fmt.Errorf("bench config: unknown measurement group %q, want one of %v", g, Groups)
		}
	}
	if slices.Contains(c.Paths, PathStunnel) && c.Stunnel == "" {
		for _, name := range []string{"stunnel", "stunnel4"} {
			if p, err := exec.LookPath(name); err == nil {
				c.Stunnel = p
				break
			}
		}
		if c.Stunnel == "" {
			if explicit {
				return c, fmt.Errorf("bench config: path stunnel: no stunnel or stunnel4 in PATH (Debian package stunnel4)")
			}
			c.Logger.Warn("no stunnel in PATH (Debian package stunnel4): leaving out the stunnel path")
			c.Paths = slices.DeleteFunc(c.Paths, func(p string) bool { return p == PathStunnel })
		}
	}
	for _, kv := range c.ProxyEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return c, fmt.Errorf("bench config: proxy env %q: want KEY=VALUE", kv)
		}
	}
	if c.Rounds <= 0 {
		c.Rounds = 5
	}
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	if c.RTTDuration <= 0 {
		c.RTTDuration = 2 * time.Second
	}
	if c.RTTMaxCount <= 0 {
		c.RTTMaxCount = 1_000_000
	}
	if c.Streams <= 0 {
		c.Streams = 8
	}
	if c.ConnClients <= 0 {
		c.ConnClients = 32
	}
	if c.Workloads <= 0 {
		c.Workloads = 10_000
	}
	if c.Services <= 0 {
		c.Services = 1_000
	}
	if c.Workloads > maxSynthWorkloads || c.Services > maxSynthServices {
		return c, fmt.Errorf("bench config: %d workloads, %d services: at most %d and %d",
			c.Workloads, c.Services, maxSynthWorkloads, maxSynthServices)
	}
	if c.SoakConns <= 0 && slices.Contains(c.Only, "soak") {
		c.SoakConns = 20_000
	}
	if c.HeldConns <= 0 {
		c.HeldConns = 2_000
	}
	if c.Settle <= 0 {
		c.Settle = 5 * time.Second
	}
	if c.ProxyLogLevel == "" {
		c.ProxyLogLevel = "info"
	}
	return c, nil
}

// runs reports whether the measurement group g is part of the run.
func (c Config) runs(g string) bool { return c.Only == nil || slices.Contains(c.Only, g) }
