package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/signal"
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
	want := []string{"LOCAL_XDS_PATH", "CA_CERT", "CA_KEY", "NODE_NAME", "INPOD_UDS", "TRUST_DOMAIN", "CLUSTER_ID"}
	if os.Getenv("PROXY_MODE") == gatewayMode {
		// A gateway: no node agent, an identity of its own, HBONE on 15008.
		want = []string{"LOCAL_XDS_PATH", "CA_CERT", "CA_KEY", "NODE_NAME", "TRUST_DOMAIN", "CLUSTER_ID", "NETWORK", "PROXY_WORKLOAD_INFO"}
		ln, err := net.Listen("tcp", ":15008")
		if err != nil {
			log.Error("listen", "error", err)
			os.Exit(2)
		}
		defer ln.Close()
	}
	for _, k := range want {
		if os.Getenv(k) == "" {
			log.Error("missing env", "key", k)
			os.Exit(2)
		}
	}
	// Like the real proxy, exit cleanly on SIGTERM.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		os.Exit(0)
	}()
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
	hash := c.lastHash[""]
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

// TestGatewayLifecycle runs fake proxies (see fakeProxy) on two networks with a gateway each:
// every proxy and gateway loads its own network's file and runs where it should with the
// gateway environment; config changes wait for the gateways too; a stopped gateway is left out
// of the wait and starts again with a new log; Close stops everything.
func TestGatewayLifecycle(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	stateRoot := t.TempDir()
	c, err := New(ctx, Config{
		Nodes:     []NodeSpec{{Name: "a1", Network: "net1", Cluster: "c1"}, {Name: "b1", Network: "net2", Cluster: "c2"}},
		Gateways:  []GatewaySpec{{Node: "a1"}, {Node: "b1"}},
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
	environ := func(pid int) map[string]string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, kv := range strings.Split(string(b), "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		return env
	}
	netnsIno := func(path string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	for _, n := range c.nodes {
		env := environ(n.proxy.ident.pid)
		if env["LOCAL_XDS_PATH"] != c.NetworkConfigPath(n.spec.Network) || env["NETWORK"] != n.spec.Network {
			t.Errorf("proxy of %s: LOCAL_XDS_PATH=%q NETWORK=%q, want %q and %q", n.spec.Name, env["LOCAL_XDS_PATH"],
				env["NETWORK"], c.NetworkConfigPath(n.spec.Network), n.spec.Network)
		}
	}
	var gwProcs []procIdent
	for _, network := range []string{"net1", "net2"} {
		g := c.gatewayOf(network)
		pid := c.GatewayPID(network)
		if pid == 0 {
			t.Fatalf("gateway of %s not running", network)
		}
		gwProcs = append(gwProcs, g.proc.ident)
		env := environ(pid)
		want := map[string]string{
			"PROXY_MODE":          "east-west-gateway",
			"PROXY_WORKLOAD_INFO": "istio-system/istio-eastwestgateway-" + network + "/istio-eastwestgateway",
			"NETWORK":             network,
			"LOCAL_XDS_PATH":      c.NetworkConfigPath(network),
			"NODE_NAME":           g.rec.Node,
			"CLUSTER_ID":          g.rec.Cluster,
			"INPOD_UDS":           "",
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("gateway of %s: %s=%q, want %q", network, k, env[k], v)
			}
		}
		if got, want := netnsIno(fmt.Sprintf("/proc/%d/ns/net", pid)), netnsIno(netnsPath(c.GatewayNetNS(network))); got != want {
			t.Errorf("gateway of %s runs in netns inode %d, want its own %d", network, got, want)
		}
		if c.GatewayLog(network) != filepath.Join(c.Dir(), "gateway-"+network+".log") {
			t.Errorf("gateway of %s logs to %q", network, c.GatewayLog(network))
		}
		// Recorded like the node proxies, so that Cleanup kills it after a crash.
		if got, err := readIdent(filepath.Join(stateRoot, c.RunID(), proxyPrefix+"gw-"+network+".1")); err != nil || got != g.proc.ident {
			t.Errorf("gateway of %s recorded as %v (%v), want %v", network, got, err, g.proc.ident)
		}
	}
	svc := func(name, vip string) ServiceSpec {
		return ServiceSpec{Name: name, Namespace: "ns", VIP: netip.MustParseAddr(vip), Ports: map[uint16]uint16{80: 80}}
	}
	// AddService returns once every proxy and gateway loaded its own network's new file.
	if err := c.AddService(ctx, svc("s", "10.96.0.1")); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	hashes := maps.Clone(c.lastHash)
	c.mu.Unlock()
	if hashes["net1"] == "" || hashes["net1"] == hashes["net2"] || hashes[""] != "" {
		t.Fatalf("config hashes %v, want one per network, all different", hashes)
	}
	for _, g := range c.gateways {
		if ok, _ := g.proc.loaded(hashes[g.rec.Network]); !ok {
			t.Errorf("gateway of %s did not report config %s", g.rec.Network, hashes[g.rec.Network])
		}
	}

	if err := c.StopGateway("net2", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if c.GatewayPID("net2") != 0 || gwProcs[1].alive() {
		t.Fatal("gateway of net2 still running after StopGateway")
	}
	if err := c.StopGateway("net2", time.Second); err == nil {
		t.Error("StopGateway of a stopped gateway succeeded")
	}
	if err := c.AddService(ctx, svc("t", "10.96.0.2")); err != nil {
		t.Fatalf("AddService with a stopped gateway: %v", err)
	}
	if err := c.StartGateway(ctx, "net2"); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.Dir(), "gateway-net2.2.log"); c.GatewayLog("net2") != want {
		t.Errorf("restarted gateway logs to %q, want %q", c.GatewayLog("net2"), want)
	}
	gwProcs = append(gwProcs, c.gatewayOf("net2").proc.ident)
	if err := c.StartGateway(ctx, "net2"); err == nil {
		t.Error("StartGateway of a running gateway succeeded")
	}
	if err := c.StopGateway("net3", time.Second); err == nil {
		t.Error("StopGateway of a network without a gateway succeeded")
	}

	id := c.RunID()
	closed = true
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range gwProcs {
		if p.alive() {
			t.Errorf("gateway %d still running after Close", p.pid)
		}
	}
	if left := leftovers(t, stateRoot, id); len(left) > 0 {
		t.Errorf("left after Close: %q", left)
	}
}
