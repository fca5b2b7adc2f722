package zds

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/redirecttest"
)

// podNetNS returns a netns path for a fake pod: a fresh namespace when
// running as root, otherwise our own (still a real netns fd on the wire).
func podNetNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() == 0 {
		return redirecttest.NewNetNS(t).Path
	}
	return "/proc/self/ns/net"
}

func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	ns, err := redirect.OpenNetNS(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	return ns.Inode()
}

func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "ztunnel.sock")
	// A stale socket file is replaced.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Server.Run: %v", err)
		}
	})
	return s, path
}

// startClient runs a Client and returns a stop function that waits for Run.
func startClient(t *testing.T, path string, h Handler, onConnect func(bool)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c := &Client{Path: path, Handler: h, OnConnect: onConnect}
	go func() { done <- c.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Client.Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitEvent(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("handler event %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for handler event %q", want)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEndToEnd(t *testing.T) {
	s, path := startServer(t)
	pod1, pod2 := podNetNS(t), podNetNS(t)
	info := WorkloadInfo{Name: "p", Namespace: "ns", ServiceAccount: "sa"}
	ctx := context.Background()

	// AddPod with no proxy waits for one.
	h := &fakeHandler{notify: make(chan string, 16), fail: map[string]string{"bad": "cannot start proxy"}}
	addDone := make(chan error, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		addDone <- s.AddPod(actx, "uid1", info, pod1)
	}()
	waitFor(t, "AddPod to record the pod", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.pods) == 1 })

	connected := make(chan bool, 4)
	stop := startClient(t, path, h, func(c bool) { connected <- c })
	// The pod is in the connection's snapshot; AddPod's own Add is a duplicate.
	waitEvent(t, h.notify, "add uid1 ns/p/sa")
	waitEvent(t, h.notify, "reconcile uid1")
	if got := <-connected; !got {
		t.Fatalf("OnConnect(false) before OnConnect(true)")
	}
	waitEvent(t, h.notify, "add uid1 ns/p/sa")
	if err := <-addDone; err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	if got, want := h.Inode("uid1"), inodeOf(t, pod1); got != want {
		t.Errorf("handler netns inode %d, want %d", got, want)
	}
	if n := s.Connected(); n != 1 {
		t.Errorf("Connected() = %d, want 1", n)
	}

	// Add and delete while connected.
	if err := s.AddPod(ctx, "uid2", info, pod2); err != nil {
		t.Fatalf("AddPod uid2: %v", err)
	}
	waitEvent(t, h.notify, "add uid2 ns/p/sa")
	if err := s.DelPod(ctx, "uid1"); err != nil {
		t.Fatalf("DelPod: %v", err)
	}
	waitEvent(t, h.notify, "del uid1")

	// NACK propagates, and the pod stays recorded.
	err := s.AddPod(ctx, "bad", info, pod1)
	if err == nil || !strings.Contains(err.Error(), "cannot start proxy") {
		t.Fatalf("AddPod(bad) = %v, want the proxy's nack", err)
	}
	waitEvent(t, h.notify, "add bad ns/p/sa")

	// Reconnect: the new connection gets a snapshot and a Reconcile with the full set.
	stop()
	if got := <-connected; got {
		t.Fatalf("OnConnect(true) on disconnect")
	}
	waitFor(t, "server to drop the proxy", func() bool { return s.Connected() == 0 })
	h2 := &fakeHandler{notify: make(chan string, 16)}
	startClient(t, path, h2, nil)
	waitEvent(t, h2.notify, "add bad ns/p/sa")
	waitEvent(t, h2.notify, "add uid2 ns/p/sa")
	waitEvent(t, h2.notify, "reconcile bad,uid2")
	if got, want := h2.Inode("uid2"), inodeOf(t, pod2); got != want {
		t.Errorf("after reconnect, handler netns inode %d, want %d", got, want)
	}

	// Two proxies at once (upgrade handover): both get updates.
	h3 := &fakeHandler{notify: make(chan string, 16)}
	startClient(t, path, h3, nil)
	waitEvent(t, h3.notify, "add bad ns/p/sa")
	waitEvent(t, h3.notify, "add uid2 ns/p/sa")
	waitEvent(t, h3.notify, "reconcile bad,uid2")
	waitFor(t, "two proxies", func() bool { return s.Connected() == 2 })
	if err := s.DelPod(ctx, "uid2"); err != nil {
		t.Fatalf("DelPod with two proxies: %v", err)
	}
	waitEvent(t, h2.notify, "del uid2")
	waitEvent(t, h3.notify, "del uid2")

	if err := s.AddPod(ctx, "gone", info, "/nonexistent/netns"); err == nil {
		t.Errorf("AddPod with a missing netns succeeded")
	}
}

// rawServer is a scripted node agent for client protocol tests.
type rawServer struct {
	ln *net.UnixListener
}

func newRawServer(t *testing.T) (*rawServer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &rawServer{ln: ln}, path
}

// accept takes the next proxy connection and checks its hello.
func (r *rawServer) accept(t *testing.T) *net.UnixConn {
	t.Helper()
	r.ln.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := r.ln.AcceptUnix()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	data, _, err := readPacket(c)
	if err != nil {
		t.Fatalf("read hello: %v", err)
	}
	var hello zdsapi.ZdsHello
	if err := proto.Unmarshal(data, &hello); err != nil || hello.GetVersion() != zdsapi.Version_V1 {
		t.Fatalf("hello = %v, %v; want V1", &hello, err)
	}
	return c
}

func readAck(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	data, _, err := readPacket(c)
	if err != nil {
		t.Fatalf("read ack: %v", err)
	}
	var resp zdsapi.WorkloadResponse
	if err := proto.Unmarshal(data, &resp); err != nil || resp.GetAck() == nil {
		t.Fatalf("response %v, %v; want an Ack", &resp, err)
	}
	return resp.GetAck().GetError()
}

// expectHangup checks the peer closes the connection (a read timeout is not a hangup).
func expectHangup(t *testing.T, c *net.UnixConn) {
	t.Helper()
	expectClosed(t, c, "after a protocol error")
}

func TestClientProtocolViolations(t *testing.T) {
	r, path := newRawServer(t)
	h := &fakeHandler{}
	startClient(t, path, h, nil)

	// Keep after snapshot: NACK, hang up, reconnect.
	c := r.accept(t)
	if err := writeMessage(c, snapReq(), -1); err != nil {
		t.Fatal(err)
	}
	if ack := readAck(t, c); ack != "" {
		t.Fatalf("snapshot nacked: %q", ack)
	}
	if err := writeMessage(c, keepReq("k"), -1); err != nil {
		t.Fatal(err)
	}
	if ack := readAck(t, c); !strings.Contains(ack, "after SnapshotSent") {
		t.Fatalf("keep after snapshot: ack %q, want a protocol-error nack", ack)
	}
	expectHangup(t, c)

	// A datagram bigger than the read buffer: NACK (truncated) and hang up.
	c = r.accept(t)
	big := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: strings.Repeat("x", 2*maxMessageSize)}}}
	b, err := proto.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.WriteMsgUnix(b, nil, nil); err != nil {
		t.Fatal(err)
	}
	if ack := readAck(t, c); !strings.Contains(ack, "truncated") {
		t.Fatalf("oversized datagram: ack %q, want truncated", ack)
	}
	expectHangup(t, c)

	// Add carrying two fds.
	c = r.accept(t)
	f1, f2 := openFile(t, "/proc/self/ns/net"), openFile(t, "/proc/self/ns/net")
	defer f1.Close()
	defer f2.Close()
	b, err = proto.Marshal(addReq("a", testInfo))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.WriteMsgUnix(b, unix.UnixRights(int(f1.Fd()), int(f2.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	if ack := readAck(t, c); !strings.Contains(ack, "2 fds") {
		t.Fatalf("add with two fds: ack %q", ack)
	}
	expectHangup(t, c)

	r.accept(t) // and it keeps reconnecting
	if diff := cmp.Diff([]string{"reconcile "}, h.Events()); diff != "" {
		t.Errorf("handler events (-want +got):\n%s", diff)
	}
}

func TestServerDropsBadProxies(t *testing.T) {
	s, path := startServer(t)
	dial := func() *net.UnixConn {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}

	// Garbage instead of a hello.
	c := dial()
	if _, err := c.Write([]byte{0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	expectHangup(t, c)

	// Wrong version.
	c = dial()
	if err := writeMessage(c, &zdsapi.ZdsHello{Version: zdsapi.Version_NOT_USED}, -1); err != nil {
		t.Fatal(err)
	}
	expectHangup(t, c)

	// A good hello, then an oversized "ack" to the snapshot.
	c = dial()
	if err := writeMessage(c, &zdsapi.ZdsHello{Version: zdsapi.Version_V1}, -1); err != nil {
		t.Fatal(err)
	}
	data, _, err := readPacket(c)
	if err != nil {
		t.Fatal(err)
	}
	var req zdsapi.WorkloadRequest
	if err := proto.Unmarshal(data, &req); err != nil || req.GetSnapshotSent() == nil {
		t.Fatalf("first request %v, %v; want SnapshotSent (no pods)", &req, err)
	}
	if _, err := c.Write(make([]byte, 2*maxMessageSize)); err != nil {
		t.Fatal(err)
	}
	expectHangup(t, c)
	waitFor(t, "no proxies", func() bool { return s.Connected() == 0 })

	// With no proxy, DelPod has nothing to do and AddPod waits until ctx ends.
	if err := s.DelPod(context.Background(), "x"); err != nil {
		t.Errorf("DelPod without proxies: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.AddPod(ctx, "x", WorkloadInfo{}, "/proc/self/ns/net"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AddPod without proxies = %v, want deadline exceeded", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Listen(path, nil); err == nil {
		s.ln.Close()
		t.Fatalf("Listen over a regular file succeeded")
	}
}

func TestServerRunStopsWithSilentProxy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "z.sock")
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(20 * time.Millisecond) // let the server start waiting for the hello
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return promptly while a proxy had not said hello")
	}
}
