package zds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"
)

// Hostile peers on both ends of ZDS. The proxy (Client) parses what the node agent sends, the
// node agent (Server) parses what proxies send; either may be buggy, hung or hostile. Whatever
// arrives, the receiver must answer with an error that names the problem, never panic or leak
// the descriptors that came with a message, and keep the state it already has: pods the proxy
// runs stay, and the agent keeps serving its other proxies.

// fdTarget returns what f's descriptor refers to, as /proc/self/fd shows it ("net:[4026531840]",
// "pipe:[123]", a path).
func fdTarget(t *testing.T, f *os.File) string {
	t.Helper()
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// fdsOn counts this process's descriptors that refer to target.
func fdsOn(t *testing.T, target string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == target {
			n++
		}
	}
	return n
}

// fdLeakCheck records what files refer to; after the files are closed by the test, check
// fails if any descriptor still refers to one of them beyond what was open before.
type fdLeakCheck struct {
	mine   map[string]int // target -> how many of the test's own files refer to it
	before map[string]int // target -> descriptors open on it, the test's included
}

func newFdLeakCheck(t *testing.T, files []*os.File) *fdLeakCheck {
	t.Helper()
	l := &fdLeakCheck{mine: map[string]int{}, before: map[string]int{}}
	for _, f := range files {
		l.mine[fdTarget(t, f)]++
	}
	for target := range l.mine {
		l.before[target] = fdsOn(t, target)
	}
	return l
}

// check waits briefly for the receiver to close what it got, then reports leaks.
func (l *fdLeakCheck) check(t *testing.T, what string) {
	t.Helper()
	for target, mine := range l.mine {
		want := l.before[target] - mine
		deadline := time.Now().Add(2 * time.Second)
		got := fdsOn(t, target)
		for got > want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
			got = fdsOn(t, target)
		}
		if got > want {
			t.Errorf("%s: %d descriptors still refer to %s, want %d: the receiver leaked what came with the message", what, got, target, want)
		}
	}
}

// sendDatagram writes data as one datagram with files as SCM_RIGHTS. An empty datagram with
// files is sent with a raw sendmsg: Go's WriteMsgUnix adds a dummy byte to it.
func sendDatagram(c *net.UnixConn, data []byte, files ...*os.File) error {
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if len(data) > 0 || len(oob) == 0 {
		_, _, err := c.WriteMsgUnix(data, oob, nil)
		return err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		var msg unix.Msghdr
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
		if _, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), 0); e != 0 {
			serr = e
		}
		return true
	}); err != nil {
		return err
	}
	return serr
}

// expectClosed reads until the peer closes c, skipping what arrives first (a NACK), and fails
// if the peer keeps the connection open instead (a read timeout is not a hangup).
func expectClosed(t *testing.T, c *net.UnixConn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		_, files, err := readPacket(c)
		closeFiles(files)
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: the peer kept the connection open: %v", what, err)
		}
		return
	}
}

// hostileRequest is one datagram a hostile node agent sends to the proxy.
type hostileRequest struct {
	name  string
	data  []byte
	files func(t *testing.T) []*os.File // attached as SCM_RIGHTS; nil: none
	// wantNack is a substring of the NACK the proxy must send before hanging up; "" means the
	// proxy may hang up without one (an empty datagram reads as the end of the connection).
	wantNack string
}

// netnsFiles opens n descriptors of one network namespace (a fresh one when root, so that
// nothing else in the process refers to it).
func netnsFiles(n int) func(t *testing.T) []*os.File {
	return func(t *testing.T) []*os.File {
		path := podNetNS(t)
		var fs []*os.File
		for range n {
			fs = append(fs, openFile(t, path))
		}
		return fs
	}
}

// pipes opens n pipes and returns their read ends: descriptors nothing else refers to.
func pipes(n int) func(t *testing.T) []*os.File {
	return func(t *testing.T) []*os.File {
		var fs []*os.File
		for range n {
			fs = append(fs, pipeFile(t)...)
		}
		return fs
	}
}

func oneFile(path func(t *testing.T) string) func(t *testing.T) []*os.File {
	return func(t *testing.T) []*os.File { return []*os.File{openFile(t, path(t))} }
}

func pipeFile(t *testing.T) []*os.File {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return []*os.File{r}
}

func socketFile(t *testing.T) []*os.File {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1])
	return []*os.File{os.NewFile(uintptr(fds[0]), "socketpair")}
}

func TestClientSurvivesHostileAgent(t *testing.T) {
	m := func(r *zdsapi.WorkloadRequest) []byte { return mustMarshal(t, r) }
	add := m(addReq("a", testInfo))
	tmpFile := func(t *testing.T) string {
		p := filepath.Join(t.TempDir(), "not-a-netns")
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []hostileRequest{
		{name: "garbage", data: []byte{0xff, 0xff, 0xff}, wantNack: "decode WorkloadRequest"},
		{name: "length prefix cut off", data: []byte{0x0a}, wantNack: "decode WorkloadRequest"},
		{name: "length prefix varint cut off", data: []byte{0x0a, 0x80}, wantNack: "decode WorkloadRequest"},
		{name: "length beyond the datagram", data: []byte{0x0a, 0x10, 'a'}, wantNack: "decode WorkloadRequest"},
		{name: "add cut in half", data: add[:len(add)/2], files: netnsFiles(1), wantNack: "decode WorkloadRequest"},
		{name: "hello instead of a request", data: mustMarshal(t, &zdsapi.ZdsHello{Version: zdsapi.Version_V1}), wantNack: "unknown or empty payload"},
		// AddWorkload{uid: "\xff"}: proto3 strings must be UTF-8.
		{name: "uid not UTF-8", data: []byte{0x0a, 0x03, 0x0a, 0x01, 0xff}, files: netnsFiles(1), wantNack: "decode WorkloadRequest"},
		{name: "64 KiB datagram", data: make([]byte, 64<<10), files: netnsFiles(1), wantNack: "truncated"},
		{name: "empty datagram", data: nil, wantNack: ""},
		{name: "empty datagram with an fd", data: nil, files: pipes(1), wantNack: "empty datagram"},
		{name: "add without fd", data: add, wantNack: "0 fds"},
		{name: "add with two fds", data: add, files: netnsFiles(2), wantNack: "2 fds"},
		{name: "add with more fds than fit", data: add, files: netnsFiles(maxFds + 1), wantNack: "more than 4 fds"},
		{name: "add with a regular file", data: add, files: oneFile(tmpFile), wantNack: "not a namespace"},
		{name: "add with a directory", data: add, files: oneFile(func(t *testing.T) string { return t.TempDir() }), wantNack: "not a namespace"},
		{name: "add with a pipe", data: add, files: pipeFile, wantNack: "not a namespace"},
		{name: "add with a socket", data: add, files: socketFile, wantNack: "not a namespace"},
		{name: "add with a mount namespace", data: add, files: oneFile(func(*testing.T) string { return "/proc/self/ns/mnt" }), wantNack: "not a network namespace"},
		{name: "del with a netns fd", data: m(delReq("keep-me")), files: netnsFiles(1), wantNack: "takes none"},
		{name: "keep after snapshot", data: m(keepReq("k")), wantNack: "after SnapshotSent"},
		{name: "second snapshot", data: m(snapReq()), wantNack: "duplicate SnapshotSent"},
	}

	r, path := newRawServer(t)
	h := &fakeHandler{}
	connected := make(chan bool, 2*len(cases)+4)
	startClient(t, path, h, func(c bool) { connected <- c })
	wantConnected := func(want bool) {
		t.Helper()
		select {
		case got := <-connected:
			if got != want {
				t.Fatalf("OnConnect(%v), want OnConnect(%v)", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no OnConnect(%v)", want)
		}
	}
	exchange := func(c *net.UnixConn, req *zdsapi.WorkloadRequest, files ...*os.File) {
		t.Helper()
		if err := sendDatagram(c, m(req), files...); err != nil {
			t.Fatal(err)
		}
		if ack := readAck(t, c); ack != "" {
			t.Fatalf("%v: nacked %q", req, ack)
		}
	}

	// The first connection enrolls a pod. Nothing a hostile agent sends later may remove it.
	c := r.accept(t)
	ns := openFile(t, "/proc/self/ns/net")
	exchange(c, addReq("keep-me", testInfo), ns)
	ns.Close()
	exchange(c, snapReq())
	wantConnected(true)
	c.Close()
	wantConnected(false)
	wantEvents := []string{"add keep-me ns/p/sa", "reconcile keep-me"}

	for _, tc := range cases {
		// Each hostile request comes on a connection that completed its snapshot (the pod kept),
		// so the proxy is ready when it arrives.
		c := r.accept(t)
		exchange(c, keepReq("keep-me"))
		exchange(c, snapReq())
		wantConnected(true)
		wantEvents = append(wantEvents, "reconcile keep-me")

		var files []*os.File
		if tc.files != nil {
			files = tc.files(t)
		}
		leaks := newFdLeakCheck(t, files)
		if err := sendDatagram(c, tc.data, files...); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
		closeFiles(files)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		data, rfiles, err := readPacket(c)
		closeFiles(rfiles)
		switch {
		case err == nil:
			var resp zdsapi.WorkloadResponse
			if err := proto.Unmarshal(data, &resp); err != nil || resp.GetAck() == nil {
				t.Fatalf("%s: the proxy answered %q (%v), want a NACK", tc.name, data, err)
			}
			nack := resp.GetAck().GetError()
			if tc.wantNack == "" || !strings.Contains(nack, tc.wantNack) {
				t.Errorf("%s: NACK %q, want one containing %q", tc.name, nack, tc.wantNack)
			}
			expectClosed(t, c, tc.name)
		case tc.wantNack != "":
			t.Errorf("%s: the proxy hung up without a NACK containing %q: %v", tc.name, tc.wantNack, err)
		case !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET):
			t.Fatalf("%s: the proxy neither answered nor hung up: %v", tc.name, err)
		}
		c.Close()
		wantConnected(false)
		leaks.check(t, tc.name)
	}

	// A descriptor the agent already closed never arrives: the kernel refuses to send it, and
	// the proxy keeps serving the connection.
	c = r.accept(t)
	closed := openFile(t, "/proc/self/ns/net")
	closed.Close()
	b := m(addReq("closed-fd", testInfo))
	if _, _, err := c.WriteMsgUnix(b, unix.UnixRights(int(closed.Fd())), nil); !errors.Is(err, unix.EBADF) {
		t.Errorf("sending a closed descriptor: %v, want EBADF", err)
	}
	exchange(c, keepReq("keep-me"))
	exchange(c, snapReq())
	wantConnected(true)
	wantEvents = append(wantEvents, "reconcile keep-me")

	if diff := cmp.Diff(wantEvents, h.Events()); diff != "" {
		t.Errorf("handler events (-want +got): the proxy must not touch its pods on a bad message\n%s", diff)
	}
}

// TestClientNackFitsDatagram: a NACK whose text would not fit one datagram (it quotes a long
// uid) is shortened instead of dropped, so the agent still learns why the proxy hangs up.
func TestClientNackFitsDatagram(t *testing.T) {
	r, path := newRawServer(t)
	startClient(t, path, &fakeHandler{}, nil)
	c := r.accept(t)
	if err := writeMessage(c, snapReq(), -1); err != nil {
		t.Fatal(err)
	}
	if ack := readAck(t, c); ack != "" {
		t.Fatalf("snapshot nacked: %q", ack)
	}
	long := strings.Repeat("u", maxMessageSize-16)
	if err := writeMessage(c, keepReq(long), -1); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	data, _, err := readPacket(c)
	if err != nil {
		t.Fatalf("Keep after the snapshot with a %d-byte uid: no NACK: %v", len(long), err)
	}
	var resp zdsapi.WorkloadResponse
	if err := proto.Unmarshal(data, &resp); err != nil || resp.GetAck() == nil {
		t.Fatalf("response %q: %v; want an Ack", data, err)
	}
	if nack := resp.GetAck().GetError(); !strings.Contains(nack, "KeepWorkload uuuu") {
		t.Errorf("NACK %q, want the start of the real reason", nack)
	}
	expectClosed(t, c, "protocol error")
}

// TestClientSilentAgent: an agent that accepts the connection and then says nothing, or that
// stops reading the proxy's ACKs, leaves the proxy's pods alone, and the proxy still stops at
// once when asked.
func TestClientSilentAgent(t *testing.T) {
	r, path := newRawServer(t)
	h := &fakeHandler{}
	connected := make(chan bool, 8)
	stop := startClient(t, path, h, func(c bool) { connected <- c })

	c := r.accept(t)
	ns := openFile(t, "/proc/self/ns/net")
	if err := sendDatagram(c, mustMarshal(t, addReq("keep-me", testInfo)), ns); err != nil {
		t.Fatal(err)
	}
	ns.Close()
	if ack := readAck(t, c); ack != "" {
		t.Fatalf("add nacked: %q", ack)
	}
	if err := writeMessage(c, snapReq(), -1); err != nil {
		t.Fatal(err)
	}
	if ack := readAck(t, c); ack != "" {
		t.Fatalf("snapshot nacked: %q", ack)
	}
	<-connected
	c.Close()
	<-connected

	// Silent after accepting: no snapshot, so not ready, and nothing happens to the pod.
	c = r.accept(t)
	time.Sleep(200 * time.Millisecond)
	select {
	case got := <-connected:
		t.Fatalf("OnConnect(%v) on a connection that sent nothing", got)
	default:
	}

	// Now requests flood in and the agent never reads an ACK: the proxy's writes back up.
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	sent := 0
	for ; sent < 10000; sent++ {
		if err := writeMessage(c, delReq(fmt.Sprintf("nobody-%d", sent)), -1); err != nil {
			break
		}
	}
	t.Logf("sent %d requests without reading an ACK", sent)

	start := time.Now()
	stop()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Client.Run took %v to stop with a silent agent", d)
	}
	for _, ev := range h.Events() {
		if ev == "del keep-me" || strings.HasPrefix(ev, "reconcile") && ev != "reconcile keep-me" {
			t.Errorf("handler event %q: the pod must stay", ev)
		}
	}
}

// TestClientAgentDisconnectsMidExchange: the agent goes away right after a request, before
// reading the ACK, or in the middle of its snapshot. The proxy reconnects; what it was told so
// far stands, and no partial snapshot removes anything.
func TestClientAgentDisconnectsMidExchange(t *testing.T) {
	r, path := newRawServer(t)
	h := &fakeHandler{notify: make(chan string, 16)}
	startClient(t, path, h, nil)

	c := r.accept(t)
	for _, uid := range []string{"a", "b"} {
		ns := openFile(t, "/proc/self/ns/net")
		if err := sendDatagram(c, mustMarshal(t, addReq(uid, testInfo)), ns); err != nil {
			t.Fatal(err)
		}
		ns.Close()
		if ack := readAck(t, c); ack != "" {
			t.Fatalf("add %s nacked: %q", uid, ack)
		}
	}
	if err := writeMessage(c, snapReq(), -1); err != nil {
		t.Fatal(err)
	}
	readAck(t, c)
	waitEvent(t, h.notify, "add a ns/p/sa")
	waitEvent(t, h.notify, "add b ns/p/sa")
	waitEvent(t, h.notify, "reconcile a,b")

	// A Del, and the agent disconnects without reading the ACK.
	if err := writeMessage(c, delReq("b"), -1); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitEvent(t, h.notify, "del b")

	// A new connection whose snapshot is cut off after a Keep: no Reconcile may run.
	c = r.accept(t)
	if err := writeMessage(c, keepReq("c"), -1); err != nil {
		t.Fatal(err)
	}
	readAck(t, c)
	c.Close()

	// The next connection's complete snapshot is what counts.
	c = r.accept(t)
	if err := writeMessage(c, keepReq("a"), -1); err != nil {
		t.Fatal(err)
	}
	readAck(t, c)
	if err := writeMessage(c, snapReq(), -1); err != nil {
		t.Fatal(err)
	}
	readAck(t, c)
	waitEvent(t, h.notify, "reconcile a")
}

// listenServer starts a Server whose proxies must ACK within ackTimeout.
func listenServer(t *testing.T, ackTimeout time.Duration) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "zds.sock")
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.ackTimeout = ackTimeout
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

func dialProxy(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func sayHello(t *testing.T, c *net.UnixConn) {
	t.Helper()
	if err := writeMessage(c, &zdsapi.ZdsHello{Version: zdsapi.Version_V1}, -1); err != nil {
		t.Fatal(err)
	}
}

// readRequest reads one request from the server as a proxy would, closing any fds.
func readRequest(t *testing.T, c *net.UnixConn) *zdsapi.WorkloadRequest {
	t.Helper()
	data, files, err := readPacket(c)
	closeFiles(files)
	if err != nil {
		t.Fatalf("read request: %v", err)
	}
	var req zdsapi.WorkloadRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		t.Fatalf("decode request: %v", err)
	}
	return &req
}

func ack(t *testing.T, c *net.UnixConn, text string) {
	t.Helper()
	if err := writeMessage(c, ackResponse(text), -1); err != nil {
		t.Fatal(err)
	}
}

// goodProxy connects a well-behaved Client and waits until the server counts it synced.
func goodProxy(t *testing.T, s *Server, path string) *fakeHandler {
	t.Helper()
	h := &fakeHandler{notify: make(chan string, 64)}
	startClient(t, path, h, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitSynced(ctx, 1); err != nil {
		t.Fatal(err)
	}
	return h
}

// addPodQuickly adds a pod and requires the good proxy to get it, within a few seconds
// whatever the other proxies do.
func addPodQuickly(t *testing.T, s *Server, h *fakeHandler, uid, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.AddPod(ctx, uid, WorkloadInfo{Name: "p", Namespace: "ns", ServiceAccount: "sa"}, "/proc/self/ns/net"); err != nil {
		t.Fatalf("%s: AddPod %s: %v", what, uid, err)
	}
	for {
		select {
		case ev := <-h.notify:
			if ev == "add "+uid+" ns/p/sa" {
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the good proxy never got pod %s", what, uid)
		}
	}
}

// TestServerSurvivesHostileProxies: proxies that send a bad hello, descriptors, garbage for an
// ACK, or disconnect in the middle of an exchange are dropped with descriptors closed, and the
// agent keeps enrolling pods through a good proxy.
func TestServerSurvivesHostileProxies(t *testing.T) {
	s, path := listenServer(t, time.Second)
	h := goodProxy(t, s, path)
	addPodQuickly(t, s, h, "pod0", "with one good proxy")

	// Connected, never says hello: not counted as a proxy, and no obstacle to enrolling.
	dialProxy(t, path)
	addPodQuickly(t, s, h, "pod1", "beside a proxy that never said hello")

	for i, tc := range []struct {
		name  string
		files func(t *testing.T) []*os.File // opened before run, closed after it
		run   func(t *testing.T, c *net.UnixConn, files []*os.File)
	}{
		{"hello with an fd", pipes(1), func(t *testing.T, c *net.UnixConn, fs []*os.File) {
			if err := sendDatagram(c, mustMarshal(t, &zdsapi.ZdsHello{Version: zdsapi.Version_V1}), fs...); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty datagram with an fd for a hello", pipes(1), func(t *testing.T, c *net.UnixConn, fs []*os.File) {
			if err := sendDatagram(c, nil, fs...); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage hello", nil, func(t *testing.T, c *net.UnixConn, _ []*os.File) {
			sendDatagram(c, []byte{0x08, 0x80})
		}},
		{"unknown version", nil, func(t *testing.T, c *net.UnixConn, _ []*os.File) {
			writeMessage(c, &zdsapi.ZdsHello{Version: zdsapi.Version(7)}, -1)
		}},
		{"ack with fds", pipes(3), func(t *testing.T, c *net.UnixConn, fs []*os.File) {
			sayHello(t, c)
			readRequest(t, c) // the snapshot's first Add
			if err := sendDatagram(c, mustMarshal(t, ackResponse("")), fs...); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty datagram with an fd for an ack", pipes(1), func(t *testing.T, c *net.UnixConn, fs []*os.File) {
			sayHello(t, c)
			readRequest(t, c)
			if err := sendDatagram(c, nil, fs...); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage ack", nil, func(t *testing.T, c *net.UnixConn, _ []*os.File) {
			sayHello(t, c)
			readRequest(t, c)
			sendDatagram(c, []byte{0x0a, 0x05, 0x0a})
		}},
		{"response without an ack", nil, func(t *testing.T, c *net.UnixConn, _ []*os.File) {
			sayHello(t, c)
			readRequest(t, c)
			sendDatagram(c, nil)
		}},
		{"oversized ack", nil, func(t *testing.T, c *net.UnixConn, _ []*os.File) {
			sayHello(t, c)
			readRequest(t, c)
			sendDatagram(c, make([]byte, 4*maxMessageSize))
		}},
	} {
		var files []*os.File
		if tc.files != nil {
			files = tc.files(t)
		}
		leaks := newFdLeakCheck(t, files)
		c := dialProxy(t, path)
		tc.run(t, c, files)
		closeFiles(files)
		expectClosed(t, c, tc.name)
		leaks.check(t, tc.name)
		addPodQuickly(t, s, h, fmt.Sprintf("pod-after-%d", i), "after a proxy sent "+tc.name)
	}

	// Disconnects after reading an Add, before answering it: the pod still gets enrolled
	// through the good proxy.
	c := dialProxy(t, path)
	sayHello(t, c)
	for {
		if req := readRequest(t, c); req.GetSnapshotSent() != nil {
			break
		}
		ack(t, c, "")
	}
	ack(t, c, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitSynced(ctx, 2); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			req := readRequest(t, c)
			if req.GetAdd().GetUid() == "mid" {
				c.Close()
				return
			}
			ack(t, c, "")
		}
	}()
	addPodQuickly(t, s, h, "mid", "with a proxy that disconnected mid-exchange")
	waitFor(t, "the server to drop the disconnected proxy", func() bool { return s.Connected() == 1 })
}

// TestServerDropsProxyThatNeverAcks: a proxy that says hello and then never answers must not
// hold up enrollment on the node for as long as the caller's context allows (forever, without
// a deadline): after the ACK timeout it is dropped, like istio-cni drops it after 5 s.
func TestServerDropsProxyThatNeverAcks(t *testing.T) {
	s, path := listenServer(t, 300*time.Millisecond)
	if err := s.AddPod(context.Background(), "", WorkloadInfo{}, "/proc/self/ns/net"); err == nil {
		t.Fatal("AddPod with an empty uid succeeded")
	}
	hung := dialProxy(t, path)
	sayHello(t, hung) // and never reads or answers anything
	waitFor(t, "the hung proxy to be registered", func() bool { return s.Connected() == 1 })
	h := goodProxy(t, s, path)

	start := time.Now()
	addPodQuickly(t, s, h, "uid1", "with a proxy that never ACKs")
	t.Logf("AddPod took %v with a hung proxy connected", time.Since(start))
	expectClosed(t, hung, "hung proxy")
	waitFor(t, "the server to drop the hung proxy", func() bool { return s.Connected() == 1 })
	addPodQuickly(t, s, h, "uid2", "after the hung proxy was dropped")
}

// TestServerDropsUnsolicitedAck: an ACK that answers no request is a protocol error. Kept, it
// would be taken for the answer to the next request, and AddPod would report a pod enrolled
// that the proxy never even read.
func TestServerDropsUnsolicitedAck(t *testing.T) {
	s, path := listenServer(t, 5*time.Second)
	c := dialProxy(t, path)
	sayHello(t, c)
	if req := readRequest(t, c); req.GetSnapshotSent() == nil {
		t.Fatalf("first request %v, want SnapshotSent (no pods)", req)
	}
	ack(t, c, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitSynced(ctx, 1); err != nil {
		t.Fatal(err)
	}
	ack(t, c, "") // answers nothing
	time.Sleep(100 * time.Millisecond)

	// The proxy never reads what comes next; AddPod must not take the stray ACK for its answer.
	actx, acancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer acancel()
	if err := s.AddPod(actx, "uid1", WorkloadInfo{}, "/proc/self/ns/net"); err == nil {
		t.Error("AddPod succeeded on the strength of an ACK sent before the request")
	}
	expectClosed(t, c, "proxy that sent an unsolicited ACK")
}

// TestServerRefusesOversizedPod: a pod whose AddWorkload cannot fit one datagram is refused
// with a clear error before it is recorded. Recorded, it would break the snapshot of every
// proxy that connects, and each would be dropped and reconnect in a loop.
func TestServerRefusesOversizedPod(t *testing.T) {
	s, path := listenServer(t, 5*time.Second)
	h := goodProxy(t, s, path)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	long := strings.Repeat("n", 2*maxMessageSize)
	err := s.AddPod(ctx, "big", WorkloadInfo{Name: long, Namespace: "ns"}, "/proc/self/ns/net")
	if err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("AddPod with a %d-byte name = %v, want an error saying the message is too large", len(long), err)
	}
	if err := s.DelPod(ctx, strings.Repeat("u", 2*maxMessageSize)); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("DelPod with an oversized uid = %v, want an error saying the message is too large", err)
	}
	addPodQuickly(t, s, h, "small", "after the oversized pod")
	if n := s.Connected(); n != 1 {
		t.Errorf("Connected() = %d, want the good proxy still connected", n)
	}
	// A proxy that connects now gets a snapshot without the refused pod.
	h2 := &fakeHandler{notify: make(chan string, 16)}
	startClient(t, path, h2, nil)
	waitEvent(t, h2.notify, "add small ns/p/sa")
	waitEvent(t, h2.notify, "reconcile small")
}

// TestServerAddPodHonorsContext: while a proxy that never answers holds its connection (here
// in its snapshot, with a long ACK timeout), AddPod still returns when its context ends.
func TestServerAddPodHonorsContext(t *testing.T) {
	s, path := listenServer(t, time.Minute)
	hung := dialProxy(t, path)
	sayHello(t, hung)
	waitFor(t, "the hung proxy to be registered", func() bool { return s.Connected() == 1 })

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		done <- s.AddPod(ctx, "uid1", WorkloadInfo{}, "/proc/self/ns/net")
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("AddPod = %v, want its context's deadline", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("AddPod did not return when its context ended: it waits on the hung proxy")
	}
}
