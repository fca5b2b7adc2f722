package testbed

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect/redirecttest"
)

// skipUnlessRoot skips tests that create network namespaces.
func skipUnlessRoot(t *testing.T) {
	t.Helper()
	redirecttest.SkipUnlessRoot(t, "the testbed creates network namespaces")
}

// testLogger sends the step log to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// leftovers lists what of run id still exists: namespaces, root-namespace links, state dir.
func leftovers(t *testing.T, stateRoot, id string) []string {
	t.Helper()
	var left []string
	names, err := listNetNS(id)
	if err != nil {
		t.Fatal(err)
	}
	left = append(left, names...)
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, id) {
			left = append(left, "link: "+l)
		}
	}
	if _, err := os.Stat(filepath.Join(stateRoot, id)); err == nil {
		left = append(left, "state dir")
	}
	return left
}

func TestClusterWithoutProxies(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	stateRoot := t.TempDir()
	c, err := New(ctx, Config{
		Nodes:     []NodeSpec{{Name: "node1", Zone: "z1"}, {Name: "node2"}, {Name: "node3"}},
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
	workDir := c.Dir()

	add := func(name, node string) *Pod {
		p, err := c.AddPod(ctx, PodSpec{Name: name, Namespace: "sample", Node: node})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	client := add("client", "node1")
	local := add("hello-local", "node1")
	remote2 := add("hello-2", "node2")
	remote3 := add("hello-3", "node3")
	if _, err := c.AddPod(ctx, PodSpec{Name: "client", Node: "node2"}); err == nil {
		t.Error("AddPod accepted a duplicate name")
	}
	if _, err := c.AddPod(ctx, PodSpec{Name: "meshed", Node: "node2", Enrolled: true}); err == nil {
		t.Error("AddPod enrolled a pod without proxies")
	}
	for _, p := range []*Pod{local, remote2, remote3} {
		if _, err := p.ServeHelloworld("v-" + p.Node()); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*Pod{local, remote2, remote3} {
		url := fmt.Sprintf("http://%s:%d/hello", p.IP(), HelloworldPort)
		got, err := client.HTTPGet(ctx, url)
		if err != nil {
			t.Fatalf("client -> %s: %v", p.Name(), err)
		}
		if want := HelloworldResponse("v-"+p.Node(), p.Name()); got != want {
			t.Errorf("client -> %s = %q, want %q", p.Name(), got, want)
		}
	}

	// Echo with half-close, across nodes.
	if _, err := remote3.ServeEcho(7000); err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial(ctx, fmt.Sprintf("%s:7000", remote3.IP()))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	conn.(interface{ CloseWrite() error }).CloseWrite()
	buf := make([]byte, 16)
	n, _ := readAll(conn, buf)
	conn.Close()
	if string(buf[:n]) != "ping" {
		t.Errorf("echo = %q, want %q", buf[:n], "ping")
	}

	// The config lists every pod, as TCP workloads.
	cfgData, err := os.ReadFile(c.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"client", "hello-local", "hello-2", "hello-3"} {
		if !strings.Contains(string(cfgData), "name: "+name+"\n") {
			t.Errorf("config lacks pod %s:\n%s", name, cfgData)
		}
	}

	// DeletePod removes the pod's namespace and takes it off the network.
	ns2 := remote2.NetNSName()
	if err := c.DeletePod(ctx, "hello-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(netnsPath(ns2)); err == nil {
		t.Errorf("netns %s still exists after DeletePod", ns2)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	if _, err := client.HTTPGet(short, fmt.Sprintf("http://%s:%d/hello", remote2.IP(), HelloworldPort)); err == nil {
		t.Error("deleted pod still answers")
	}
	cancelShort()
	if c.Pod("hello-2") != nil || len(c.Pods()) != 3 {
		t.Errorf("pods after delete = %d", len(c.Pods()))
	}
	if err := c.DeletePod(ctx, "hello-2"); err == nil {
		t.Error("second DeletePod succeeded")
	}
	cfgData, _ = os.ReadFile(c.ConfigPath())
	if strings.Contains(string(cfgData), "hello-2") {
		t.Errorf("config still lists the deleted pod:\n%s", cfgData)
	}

	id := c.RunID()
	closed = true
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, stateRoot, id); len(left) > 0 {
		t.Errorf("left after Close: %q", left)
	}
	if _, err := os.Stat(workDir); err == nil {
		t.Errorf("work dir %s left after Close", workDir)
	}
	if _, err := c.AddPod(ctx, PodSpec{Name: "late", Node: "node1"}); err == nil {
		t.Error("AddPod after Close succeeded")
	}
}

func readAll(c interface{ Read([]byte) (int, error) }, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestCleanupCrashedRun(t *testing.T) {
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stateRoot := t.TempDir()
	ip := ipRunner{log: testLogger(t)}

	// A "crashed" run: owner process gone, a proxy still running, namespaces and a work dir left.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	id, err := newRunID()
	if err != nil {
		t.Fatal(err)
	}
	runDir := filepath.Join(stateRoot, id)
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeIdent(filepath.Join(runDir, ownerFile), procIdent{pid: dead.ProcessState.Pid(), start: 1}); err != nil {
		t.Fatal(err)
	}
	proxy := exec.Command("sleep", "60")
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Process.Kill(); proxy.Wait() })
	pid, err := identify(proxy.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeIdent(filepath.Join(runDir, proxyPrefix+"node1"), pid); err != nil {
		t.Fatal(err)
	}
	workDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(runDir, workdirFile), []byte(workDir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{id + "-fab", id + "-n1", id + "-n1p2"} {
		if err := ip.addNetNS(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ip.delNetNS(context.Background(), n) })
	}
	if err := ip.run(ctx, "-n", id+"-n1", "link", "add", id+"p2", "type", "veth", "peer", "name", "eth0", "netns", id+"-n1p2"); err != nil {
		t.Fatal(err)
	}

	// A live run (this process) must be left alone.
	liveID := "ztbffff"
	if err := os.MkdirAll(filepath.Join(stateRoot, liveID), 0o755); err != nil {
		t.Fatal(err)
	}
	me, _ := identify(os.Getpid())
	if err := writeIdent(filepath.Join(stateRoot, liveID, ownerFile), me); err != nil {
		t.Fatal(err)
	}

	removed, err := Cleanup(ctx, stateRoot, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != id {
		t.Errorf("Cleanup removed %v, want [%s]", removed, id)
	}
	if left := leftovers(t, stateRoot, id); len(left) > 0 {
		t.Errorf("left after Cleanup: %q", left)
	}
	if _, err := os.Stat(workDir); err == nil {
		t.Error("work dir of the dead run not removed")
	}
	done := make(chan error, 1)
	go func() { done <- proxy.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("proxy of the dead run still running")
	}
	if _, err := os.Stat(filepath.Join(stateRoot, liveID)); err != nil {
		t.Errorf("live run removed: %v", err)
	}
}

// TestSweepUnrecorded: namespaces of a run without a state directory are removed when nothing
// runs in them; a run with a process inside, and a recorded run, are left alone.
func TestSweepUnrecorded(t *testing.T) {
	skipUnlessRoot(t)
	mk := func(name string) {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	}
	exists := func(name string) bool {
		_, err := os.Stat(netnsPath(name))
		return err == nil
	}
	stateRoot := t.TempDir()
	mk("ztbf0a1-n1") // orphan
	mk("ztbf0a1-n1p2")
	mk("ztbf0a2-n1") // busy: a process runs inside
	mk("ztbf0a3-n1") // recorded: has a state directory
	if err := os.Mkdir(filepath.Join(stateRoot, "ztbf0a3"), 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("ip", "netns", "exec", "ztbf0a2-n1", "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	time.Sleep(200 * time.Millisecond) // let it enter the namespace

	removed, err := sweepUnrecorded(context.Background(), stateRoot, testLogger(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != "ztbf0a1" {
		t.Errorf("removed %v, want [ztbf0a1]", removed)
	}
	if exists("ztbf0a1-n1") || exists("ztbf0a1-n1p2") {
		t.Error("the orphan run's namespaces are still there")
	}
	if !exists("ztbf0a2-n1") || !exists("ztbf0a3-n1") {
		t.Error("a busy or recorded run's namespace was removed")
	}
	// With the default minimum age, fresh namespaces are kept.
	mk("ztbf0a4-n1")
	if removed, _ := SweepUnrecorded(context.Background(), stateRoot, testLogger(t)); len(removed) != 0 {
		t.Errorf("removed fresh namespaces: %v", removed)
	}
}
