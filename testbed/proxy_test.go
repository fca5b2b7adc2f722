package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeProxyEnv makes the test binary act as a proxy (see TestMain): "run" serves, "exit" fails.
const fakeProxyEnv = "TESTBED_FAKE_PROXY"

func TestMain(m *testing.M) {
	switch os.Getenv(fakeProxyEnv) {
	case "":
		os.Exit(m.Run())
	case "exit":
		fmt.Fprintln(os.Stderr, "fake proxy: bad config")
		os.Exit(3)
	default:
		fakeProxy()
	}
}

// fakeProxy checks its environment and logs the proxies' "local config loaded" line whenever the
// local config file changes, until killed.
func fakeProxy() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	for _, k := range []string{"LOCAL_XDS_PATH", "CA_CERT", "CA_KEY", "NODE_NAME", "INPOD_UDS", "TRUST_DOMAIN", "CLUSTER_ID"} {
		if os.Getenv(k) == "" {
			log.Error("missing env", "key", k)
			os.Exit(2)
		}
	}
	last := ""
	for {
		b, err := os.ReadFile(os.Getenv("LOCAL_XDS_PATH"))
		if err == nil {
			sum := sha256.Sum256(b)
			if h := hex.EncodeToString(sum[:]); h != last {
				last = h
				log.Info(configLoadedMsg, "path", os.Getenv("LOCAL_XDS_PATH"), "sha256", h)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProxyLifecycle(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stateRoot := t.TempDir()
	c, err := New(ctx, Config{
		Nodes:     []NodeSpec{{Name: "node1"}, {Name: "node2"}},
		Ztunnel:   os.Args[0],
		ExtraEnv:  []string{fakeProxyEnv + "=run"},
		StateRoot: stateRoot,
		Logger:    testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
		}
	})
	var procs []procIdent
	for _, n := range c.nodes {
		procs = append(procs, n.proxy.ident)
		// The proxy runs in its node's namespace.
		var got, want syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", n.proxy.ident.pid), &got); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Stat(netnsPath(n.netns), &want); err != nil {
			t.Fatal(err)
		}
		if got.Ino != want.Ino {
			t.Errorf("proxy of %s runs in netns inode %d, want %d", n.spec.Name, got.Ino, want.Ino)
		}
		if _, err := os.Stat(filepath.Join(stateRoot, c.RunID(), proxyPrefix+n.spec.Name)); err != nil {
			t.Errorf("proxy of %s not recorded: %v", n.spec.Name, err)
		}
	}
	// AddService waits for both proxies to log the new config's hash.
	if err := c.AddService(ctx, ServiceSpec{Name: "s", Namespace: "ns", VIP: netip.MustParseAddr("10.96.0.1"), Ports: map[uint16]uint16{80: 80}}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	hash := c.lastHash
	c.mu.Unlock()
	for _, n := range c.nodes {
		if ok, _ := n.proxy.loaded(hash); !ok {
			t.Errorf("proxy of %s did not report config %s", n.spec.Name, hash)
		}
	}
	if err := c.AddService(ctx, ServiceSpec{Name: "t", Namespace: "ns", VIP: netip.MustParseAddr("10.96.0.1"), Ports: map[uint16]uint16{80: 80}}); err == nil {
		t.Error("AddService accepted a taken VIP")
	}

	// A proxy that dies is reported by WaitConfigApplied at once.
	c.nodes[1].proxy.cmd.Process.Kill()
	<-c.nodes[1].proxy.Done()
	start := time.Now()
	err = c.AddService(ctx, ServiceSpec{Name: "u", Namespace: "ns", VIP: netip.MustParseAddr("10.96.0.2"), Ports: map[uint16]uint16{80: 80}})
	if err == nil || !strings.Contains(err.Error(), "node2 exited") {
		t.Errorf("WaitConfigApplied with a dead proxy = %v, want a node2 exited error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("WaitConfigApplied took %v to notice the dead proxy", time.Since(start))
	}

	id := c.RunID()
	closed = true
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.alive() {
			t.Errorf("proxy %d still running after Close", p.pid)
		}
	}
	if left := leftovers(t, stateRoot, id); len(left) > 0 {
		t.Errorf("left after Close: %q", left)
	}
}

func TestProxyExitFailsNew(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stateRoot := t.TempDir()
	dir := t.TempDir()
	start := time.Now()
	_, err := New(ctx, Config{
		Nodes:     []NodeSpec{{Name: "node1"}},
		Ztunnel:   os.Args[0],
		ExtraEnv:  []string{fakeProxyEnv + "=exit"},
		StateRoot: stateRoot,
		Dir:       dir,
		Logger:    testLogger(t),
	})
	if err == nil || !strings.Contains(err.Error(), "fake proxy: bad config") {
		t.Fatalf("New with a failing proxy = %v, want an error quoting its log", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("New took %v to notice the failed proxy", time.Since(start))
	}
	ents, _ := os.ReadDir(stateRoot)
	if len(ents) != 0 {
		t.Errorf("state dirs left: %v", ents)
	}
	// A caller-given Dir keeps only the proxy log.
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 || filepath.Base(files[0]) != "node1.log" {
		t.Errorf("files left in Dir: %v, want only node1.log", files)
	}
}
