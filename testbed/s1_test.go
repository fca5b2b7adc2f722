package testbed

import (
	"context"
	"flag"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseHelloworld(t *testing.T) {
	v, i, err := parseHelloworld(HelloworldResponse("region.zone1.subzone1", "helloworld-worker1"))
	if err != nil || v != "region.zone1.subzone1" || i != "helloworld-worker1" {
		t.Errorf("parseHelloworld = %q, %q, %v", v, i, err)
	}
	for _, bad := range []string{"", "Hello version: , instance: x", "no service", "Hello version: v1"} {
		if _, _, err := parseHelloworld(bad); err == nil {
			t.Errorf("parseHelloworld(%q) succeeded", bad)
		}
	}
}

// buildZtunnel builds ../cmd/ztunnel into a temporary directory, skipping the test while the
// command does not exist yet.
func buildZtunnel(t *testing.T) string {
	t.Helper()
	src := filepath.Join("..", "cmd", "ztunnel")
	if m, _ := filepath.Glob(filepath.Join(src, "*.go")); len(m) == 0 {
		t.Skip("cmd/ztunnel does not exist yet: nothing to run S1 against")
	}
	bin := filepath.Join(t.TempDir(), "ztunnel")
	out, err := exec.Command("go", "build", "-o", bin, "./"+filepath.ToSlash(src)).CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/ztunnel: %v\n%s", err, out)
	}
	return bin
}

// s1Settle lets TestS1 run against a proxy that does not log `local config loaded sha256=...`:
// go test ./testbed -run TestS1 -args -testbed.settle=2s
var s1Settle = flag.Duration("testbed.settle", 0, "Config.ConfigSettle for TestS1")

func TestS1(t *testing.T) {
	skipUnlessRoot(t)
	bin := buildZtunnel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	err := RunS1(ctx, Config{Ztunnel: bin, Logger: testLogger(t), StateRoot: t.TempDir(), ConfigSettle: *s1Settle}, &out)
	t.Log("S1 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}

// TestS1ControlPlane runs S1 with the proxies configured by the fake istiod (Config.ControlPlane):
// workloads over delta xDS, certificates from its CA.
func TestS1ControlPlane(t *testing.T) {
	skipUnlessRoot(t)
	bin := buildZtunnel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	err := RunS1(ctx, Config{Ztunnel: bin, Logger: testLogger(t), StateRoot: t.TempDir(), ControlPlane: true}, &out)
	t.Log("S1 output:\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}

func TestBuildS1RejectsNodes(t *testing.T) {
	if _, err := BuildS1(context.Background(), Config{Nodes: []NodeSpec{{Name: "x"}}}); err == nil {
		t.Error("BuildS1 accepted caller nodes")
	}
}
