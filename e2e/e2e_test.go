package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// ztunnelBin is the proxy binary built once for all tests.
var ztunnelBin string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "zt-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		ztunnelBin = filepath.Join(dir, "ztunnel")
		args := []string{"build", "-o", ztunnelBin}
		if os.Getenv("E2E_RACE") != "" {
			args = append(args, "-race") // the proxies run with the race detector
		}
		out, err := exec.Command("go", append(args, "../cmd/ztunnel")...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "go build ../cmd/ztunnel: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// proxyEnv is extra environment for every proxy: with E2E_RACE, a data race kills the proxy
// (and so fails the test) instead of only being printed to its log.
func proxyEnv(extra ...string) []string {
	if os.Getenv("E2E_RACE") != "" {
		extra = append(extra, "GORACE=halt_on_error=1")
	}
	return extra
}

func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces, iptables rules and transparent sockets")
	}
}

// newCluster builds a testbed cluster with the proxies built for the tests and tears it down
// when the test ends. On failure it prints the proxies' logs; with E2E_RACE it fails the
// test if a proxy reported a data race.
func newCluster(t *testing.T, cfg testbed.Config) *testbed.Cluster {
	t.Helper()
	skipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg.Ztunnel = ztunnelBin
	cfg.ExtraEnv = proxyEnv(cfg.ExtraEnv...)
	cfg.StateRoot = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	c, err := testbed.New(ctx, cfg)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		for _, n := range cfg.Nodes {
			b, err := os.ReadFile(c.ProxyLog(n.Name))
			if err != nil {
				continue
			}
			if bytes.Contains(b, []byte("DATA RACE")) {
				t.Errorf("proxy on %s reported a data race:\n%s", n.Name, b)
			} else if t.Failed() {
				t.Logf("proxy log of %s:\n%s", n.Name, tail(string(b), 60))
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
	return c
}

// twoNodes builds a two-node cluster with proxies reading a local config file.
func twoNodes(t *testing.T) *testbed.Cluster {
	t.Helper()
	return newCluster(t, testbed.Config{Nodes: []testbed.NodeSpec{
		{Name: "node1", Region: "r1", Zone: "z1"},
		{Name: "node2", Region: "r1", Zone: "z2"},
	}})
}

func addPod(t *testing.T, c *testbed.Cluster, spec testbed.PodSpec) *testbed.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := c.AddPod(ctx, spec)
	if err != nil {
		t.Fatalf("add pod %s: %v", spec.Name, err)
	}
	return p
}

// server is a TCP server inside a pod that records how many connections reached it and
// their source addresses, and runs handle for each.
type server struct {
	accepted atomic.Int32
	sources  chan netip.Addr
}

func serve(t *testing.T, p *testbed.Pod, port uint16, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := p.NetNS().Listen(context.Background(), "tcp", fmt.Sprintf("0.0.0.0:%d", port), redirect.SocketOptions{})
	if err != nil {
		t.Fatalf("listen in pod %s: %v", p.Name(), err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &server{sources: make(chan netip.Addr, 100)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			select {
			case s.sources <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap():
			default:
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return s
}

// echo sends back what it reads until EOF, then half-closes. It copies through a buffer rather
// than splice(2) (io.Copy between TCP sockets), which holds two pipe descriptors per connection
// for its whole life: the flood tests hold thousands of these servers' connections.
func echo(c net.Conn) {
	io.Copy(struct{ io.Writer }{c}, c)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

func dial(t *testing.T, p *testbed.Pod, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, p.Name(), err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// waitLog waits until the node's proxy log has a line containing every one of parts.
func waitLog(t *testing.T, c *testbed.Cluster, node string, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(c.ProxyLog(node))
		for _, line := range strings.Split(string(b), "\n") {
			if containsAll(line, parts) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line on %s with %q", node, parts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// TestMeshHalfClose sends traffic through both proxies over HBONE and checks that a
// half-close in either direction leaves the other direction working, and that the server
// sees the client's own address.
func TestMeshHalfClose(t *testing.T) {
	c := twoNodes(t)
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	srv := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", Enrolled: true})

	// Client → server half-close: the server answers after it has read everything.
	s1 := serve(t, srv, 7001, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes: %s", len(b), b[:min(len(b), 16)])
	})
	conn := dial(t, client, netip.AddrPortFrom(srv.IP(), 7001).String())
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if _, err := conn.Write(payload); err != nil {
		t.Fatalf("write: %v", err)
	}
	conn.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read reply after half-close: %v", err)
	}
	if want := fmt.Sprintf("got %d bytes: 0123456789abcdef", len(payload)); string(reply) != want {
		t.Fatalf("reply = %q, want %q", reply, want)
	}
	if src := <-s1.sources; src != client.IP() {
		t.Errorf("server saw source %s, want the client's own address %s", src, client.IP())
	}
	waitLog(t, c, "node1", "connection complete", "direction=outbound", "protocol=HBONE",
		"dst.addr="+netip.AddrPortFrom(srv.IP(), 7001).String())
	waitLog(t, c, "node2", "connection complete", "direction=inbound", "protocol=HBONE",
		"src.identity=spiffe://cluster.local/ns/default/sa/default")

	// Server → client half-close: the server speaks first and stops writing, then reads.
	got := make(chan string, 1)
	serve(t, srv, 7002, func(c net.Conn) {
		io.WriteString(c, "hello")
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	conn = dial(t, client, netip.AddrPortFrom(srv.IP(), 7002).String())
	hello, err := io.ReadAll(conn)
	if err != nil || string(hello) != "hello" {
		t.Fatalf("read until the server's half-close: %q, %v", hello, err)
	}
	if _, err := io.WriteString(conn, "world"); err != nil {
		t.Fatalf("write after the server half-closed: %v", err)
	}
	conn.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "world" {
			t.Fatalf("server read %q after its half-close, want %q", s, "world")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server never got the client's data after half-closing")
	}
}

// TestPlainTCPToNonMeshPod: a mesh client reaches a pod outside the mesh on another node over
// plain TCP through its proxy, and an address unknown to the mesh is passed through.
func TestPlainTCPToNonMeshPod(t *testing.T) {
	c := twoNodes(t)
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	legacy := addPod(t, c, testbed.PodSpec{Name: "legacy", Node: "node2"})
	unknown := addPod(t, c, testbed.PodSpec{Name: "unknown", Node: "node2", OmitFromConfig: true})
	for _, p := range []*testbed.Pod{legacy, unknown} {
		s := serve(t, p, 9000, echo)
		addr := netip.AddrPortFrom(p.IP(), 9000).String()
		conn := dial(t, client, addr)
		if _, err := io.WriteString(conn, "ping "+p.Name()); err != nil {
			t.Fatal(err)
		}
		conn.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(conn)
		if err != nil || string(b) != "ping "+p.Name() {
			t.Fatalf("echo through %s: %q, %v", p.Name(), b, err)
		}
		if s.accepted.Load() != 1 {
			t.Errorf("%s accepted %d connections, want 1", p.Name(), s.accepted.Load())
		}
		// The connection went through the client's proxy as plain TCP.
		waitLog(t, c, "node1", "connection complete", "direction=outbound", "protocol=TCP", "dst.addr="+addr)
	}
}

// TestWrongIdentityRefused: the client's proxy refuses a tunnel to a server that presents a
// certificate for another identity, even one signed by the mesh CA. The same kind of server
// with the right identity works, so the refusal is about the identity.
func TestWrongIdentityRefused(t *testing.T) {
	c := twoNodes(t)
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	caCert, caKey := c.CAFiles()
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{CertFile: caCert, KeyFile: caKey})
	if err != nil {
		t.Fatal(err)
	}
	// Each target is in the config as an HBONE workload with service account "helloworld", but
	// no proxy serves it: the test plays that node's proxy, presenting the certificate of sa.
	try := func(name, sa string) (got string, handled int32) {
		target := addPod(t, c, testbed.PodSpec{Name: name, Node: "node2", ServiceAccount: "helloworld", Protocol: "HBONE"})
		cert, err := ca.Issue(context.Background(), certs.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := target.NetNS().Listen(context.Background(), "tcp", "0.0.0.0:15008", redirect.SocketOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var served atomic.Int32
		srv := &hbone.Server{
			TLSConfig: certs.ServerTLSConfig(func(context.Context) (*certs.WorkloadCert, error) { return cert, nil }),
			Handler: hbone.HandlerFunc(func(ctx context.Context, r *hbone.Request) {
				served.Add(1)
				st, err := r.Accept(nil)
				if err != nil {
					return
				}
				io.Copy(st, st)
				st.CloseWrite()
			}),
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close(); ln.Close() })

		conn := dial(t, client, netip.AddrPortFrom(target.IP(), 8080).String())
		io.WriteString(conn, "hi")
		conn.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(conn)
		return string(b), served.Load()
	}
	if got, n := try("good", "helloworld"); got != "hi" || n != 1 {
		t.Fatalf("with the right identity: got %q, handler ran %d times (want the echo, once)", got, n)
	}
	if got, n := try("impostor", "evil"); got != "" || n != 0 {
		t.Fatalf("with a wrong identity: got %q, handler ran %d times (want nothing: the tunnel must be refused)", got, n)
	}
	waitLog(t, c, "node1", "connection failed", "spiffe://cluster.local/ns/default/sa/evil")
}

// TestProxyPortsRefused: plaintext to a pod's HBONE port never reaches the application, and a
// pod cannot make its own proxy loop.
func TestProxyPortsRefused(t *testing.T) {
	c := twoNodes(t)
	srv := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", Enrolled: true})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	outsider := addPod(t, c, testbed.PodSpec{Name: "outsider", Node: "node1"})
	app := serve(t, srv, 8080, echo)

	conn := dial(t, outsider, netip.AddrPortFrom(srv.IP(), 15008).String())
	io.WriteString(conn, "CONNECT "+netip.AddrPortFrom(srv.IP(), 8080).String()+" HTTP/1.1\r\nHost: x\r\n\r\n")
	b, _ := io.ReadAll(conn)
	if bytes.Contains(b, []byte("HTTP/")) || bytes.Contains(b, []byte("CONNECT")) {
		t.Fatalf("plaintext on 15008 got an HTTP answer: %q", b)
	}
	if n := app.accepted.Load(); n != 0 {
		t.Fatalf("the application received %d connections from a plaintext 15008 client", n)
	}

	for _, port := range []uint16{15001, 15006, 15008} {
		// The proxy may reset the connection before the dial even returns: that is a refusal too.
		conn, err := client.Dial(context.Background(), fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "loop?")
		b, _ := io.ReadAll(conn)
		conn.Close()
		if len(b) != 0 {
			t.Errorf("connection to own proxy port %d answered %q", port, b)
		}
	}
	waitLog(t, c, "node1", "connection failed", "would loop")
	// The mesh still works after all that.
	conn = dial(t, client, netip.AddrPortFrom(srv.IP(), 8080).String())
	io.WriteString(conn, "ok")
	conn.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(conn); err != nil || string(b) != "ok" {
		t.Fatalf("echo after refusals: %q, %v", b, err)
	}
}

// TestUnenrollRemovesRulesAndListeners: when the node agent removes a pod from the mesh, its
// redirection rules and the proxy's listeners inside it are gone, and it is reached as a plain
// TCP workload.
func TestUnenrollRemovesRulesAndListeners(t *testing.T) {
	c := twoNodes(t)
	srv := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", Enrolled: true})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	outsider := addPod(t, c, testbed.PodSpec{Name: "outsider", Node: "node1"})
	serve(t, srv, 8080, echo)
	hboneAddr := netip.AddrPortFrom(srv.IP(), 15008).String()

	rules := func() string {
		out, err := exec.Command("ip", "netns", "exec", srv.NetNSName(), "iptables-save").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save in %s: %v\n%s", srv.NetNSName(), err, out)
		}
		ipRules, _ := exec.Command("ip", "netns", "exec", srv.NetNSName(), "ip", "rule").CombinedOutput()
		return string(out) + string(ipRules)
	}
	if r := rules(); !strings.Contains(r, "ISTIO_PRERT") || !strings.Contains(r, "0x111/0xfff") {
		t.Fatalf("enrolled pod lacks redirection rules:\n%s", r)
	}
	conn := dial(t, outsider, hboneAddr) // the HBONE listener is up
	conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.UnenrollPod(ctx, "server"); err != nil {
		t.Fatal(err)
	}
	if r := rules(); strings.Contains(r, "ISTIO_") || strings.Contains(r, "0x111/0xfff") {
		t.Fatalf("unenrolled pod still has redirection rules:\n%s", r)
	}
	if c, err := outsider.Dial(ctx, hboneAddr); err == nil {
		c.Close()
		t.Fatal("the HBONE listener still accepts after the pod left the mesh")
	} else if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial %s after unenroll: %v, want connection refused", hboneAddr, err)
	}
	addr := netip.AddrPortFrom(srv.IP(), 8080).String()
	conn = dial(t, client, addr)
	io.WriteString(conn, "plain")
	conn.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(conn); err != nil || string(b) != "plain" {
		t.Fatalf("echo after unenroll: %q, %v", b, err)
	}
	waitLog(t, c, "node1", "connection complete", "protocol=TCP", "dst.addr="+addr)
}

// TestBadConfigExitsNonZero: a proxy started with a bad config file exits non-zero with an
// error naming the file, the entry and the field. Needs no root.
func TestBadConfigExitsNonZero(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	bad := "workloads:\n- uid: c1//v1/Pod/default/a\n  name: a\n  namespace: default\n  workloadIps: [\"10.0.0.300\"]\n"
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ztunnelBin)
	cmd.Env = []string{"LOCAL_XDS_PATH=" + path, "INPOD_UDS=" + filepath.Join(dir, "zds.sock")}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("proxy with a bad config: %v, want a non-zero exit", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("proxy with a bad config kept running")
	}
	for _, want := range []string{path, "workloads[0]", "workloadIps[0]", "10.0.0.300"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("error output does not mention %q:\n%s", want, stderr.String())
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
