package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "stunnel")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	c, err := Config{Ztunnel: "/zt", Self: "/self"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(c.Paths, Paths) || c.Stunnel != fake {
		t.Errorf("paths %v, stunnel %q; want all paths and %s", c.Paths, c.Stunnel, fake)
	}
	if c.Rounds != 5 || c.Duration != 3*time.Second || c.Streams != 8 || c.ConnClients != 32 ||
		c.Workloads != 10_000 || c.Services != 1_000 || c.HeldConns != 2_000 || c.Settle != 5*time.Second {
		t.Errorf("defaults = %+v", c)
	}
	q, err := Config{Ztunnel: "/zt", Self: "/self"}.Quick().withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if q.Rounds != 1 || q.Workloads >= c.Workloads || q.HeldConns >= c.HeldConns || q.Duration >= c.Duration {
		t.Errorf("Quick did not shrink the run: %+v", q)
	}
}

func TestConfigStunnelMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	c, err := Config{Ztunnel: "/zt", Self: "/self"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(c.Paths, PathStunnel) {
		t.Errorf("paths %v: stunnel kept without a binary", c.Paths)
	}
	// Asked for explicitly, a missing stunnel is an error.
	_, err = Config{Ztunnel: "/zt", Self: "/self", Paths: []string{PathStunnel}}.withDefaults()
	if err == nil || !strings.Contains(err.Error(), "stunnel4") {
		t.Errorf("err = %v, want a hint at the stunnel4 package", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Self: "/self"}, // no proxy
		{Ztunnel: "/zt", Self: "/self", Paths: []string{"envoy"}},
		{Ztunnel: "/zt", Self: "/self", Paths: []string{PathMesh}, Workloads: maxSynthWorkloads + 1},
	} {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("withDefaults(%+v): no error", c)
		}
	}
}
