package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestHostileConnectTargets plays an HBONE client with a valid mesh identity (a leaf signed by
// the mesh CA) that speaks HTTP/2 by hand to a server pod's 15008 from an off-mesh pod on the
// other node, and asks, on one HTTP/2 connection, for targets the proxy must never reach for
// it: the proxy's own admin, metrics and readiness ports on loopback, the node's addresses,
// other pods on this node and on the other node, the proxy's own listeners in the pod, and
// malformed authorities. Each is refused with the status the reference gives (§2.2: 400 for a
// bad or foreign target, 503 for a proxy port or an unreachable application), no listener at
// those targets sees a connection, and the application sees nothing. Afterwards a good CONNECT
// on the same HTTP/2 connection reaches the application, and mesh traffic to both pods of the
// node still works.
func TestHostileConnectTargets(t *testing.T) {
	c := twoNodes(t)
	srv := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", ServiceAccount: "server", Enrolled: true})
	neighbor := addPod(t, c, testbed.PodSpec{Name: "neighbor", Node: "node2", Enrolled: true})
	remote := addPod(t, c, testbed.PodSpec{Name: "remote", Node: "node1", Enrolled: true})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	attacker := addPod(t, c, testbed.PodSpec{Name: "attacker", Node: "node1"})

	app := serve(t, srv, 8080, echo)
	neighborApp := serve(t, neighbor, 8080, echo)
	remoteApp := serve(t, remote, 8080, echo)
	// Stand-ins for what a pod or a node runs on loopback and on its own addresses: none of them
	// may see a connection from the tunnel.
	var sentinels []*hostileSentinel
	sentinel := func(ns *redirect.NetNS, where, addr string) {
		if s := listenSentinel(t, ns, where, addr); s != nil {
			sentinels = append(sentinels, s)
		}
	}
	for _, a := range []string{"127.0.0.1:15000", "127.0.0.1:15020", "127.0.0.1:15021", "[::1]:15000", "127.0.0.1:9090"} {
		sentinel(srv.NetNS(), "server pod", a)
	}
	nodeNS, err := redirect.OpenNetNS("/run/netns/" + c.NodeNetNS("node2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nodeNS.Close() })
	nodeIP, nodeGW := nodeAddr(t, c, "node2", "eth0"), nodeAddr(t, c, "node2", "")
	sentinel(nodeNS, "node2", netip.AddrPortFrom(nodeIP, 18080).String())
	sentinel(nodeNS, "node2", netip.AddrPortFrom(nodeGW, 18080).String())

	ca := loadTestbedCA(t, c)
	leaf := ca.mint(t, "spiffe://cluster.local/ns/default/sa/attacker")
	h2 := dialRawHBONE(t, attacker, netip.AddrPortFrom(srv.IP(), 15008), leaf)

	pod := srv.IP().String()
	mapped := "[::ffff:" + pod + "]"
	const (
		bad         = "400"
		unavailable = "503"
		malformed   = "400 or RST_STREAM PROTOCOL_ERROR" // RFC 9113 §8.2.1: a field value with CR/LF/NUL
	)
	for _, tc := range []struct {
		name, authority string
		absent          bool // no :authority field at all
		want            string
	}{
		// The proxy's own ports, on loopback: the tunnel reached the pod, not the proxy.
		{name: "admin on loopback", authority: "127.0.0.1:15000", want: bad},
		{name: "metrics on loopback", authority: "127.0.0.1:15020", want: bad},
		{name: "readiness on loopback", authority: "127.0.0.1:15021", want: bad},
		{name: "admin on IPv6 loopback", authority: "[::1]:15000", want: bad},
		{name: "admin on IPv4-mapped loopback", authority: "[::ffff:127.0.0.1]:15000", want: bad},
		{name: "application on loopback", authority: "127.0.0.1:8080", want: bad},
		{name: "localhost-only service in the pod", authority: "127.0.0.1:9090", want: bad},
		{name: "unspecified address", authority: "0.0.0.0:8080", want: bad},
		// The node itself.
		{name: "node address, admin", authority: netip.AddrPortFrom(nodeIP, 15000).String(), want: bad},
		{name: "node address, metrics", authority: netip.AddrPortFrom(nodeIP, 15020).String(), want: bad},
		{name: "node address, listener", authority: netip.AddrPortFrom(nodeIP, 18080).String(), want: bad},
		{name: "node's pod gateway", authority: netip.AddrPortFrom(nodeGW, 18080).String(), want: bad},
		// Other pods: on this node, and on a node this proxy does not serve.
		{name: "another pod on this node", authority: netip.AddrPortFrom(neighbor.IP(), 8080).String(), want: bad},
		{name: "a pod on another node", authority: netip.AddrPortFrom(remote.IP(), 8080).String(), want: bad},
		// The proxy's own listeners in the pod would loop.
		{name: "pod's outbound port", authority: pod + ":15001", want: unavailable},
		{name: "pod's inbound plaintext port", authority: pod + ":15006", want: unavailable},
		{name: "pod's HBONE port", authority: pod + ":15008", want: unavailable},
		{name: "pod's HBONE port, IPv4-mapped", authority: mapped + ":15008", want: unavailable},
		{name: "nothing listens", authority: pod + ":9999", want: unavailable},
		// The proxy's admin ports are in the node, not in the pod; a service bound to the pod's
		// loopback only is not on its address.
		{name: "pod address, admin port", authority: pod + ":15000", want: unavailable},
		{name: "pod address, metrics port", authority: pod + ":15020", want: unavailable},
		{name: "pod address, readiness port", authority: pod + ":15021", want: unavailable},
		{name: "pod address, localhost-only service", authority: pod + ":9090", want: unavailable},
		// Malformed authorities.
		{name: "absent", absent: true, want: bad},
		{name: "empty", authority: "", want: bad},
		{name: "no port", authority: pod, want: bad},
		{name: "empty port", authority: pod + ":", want: bad},
		{name: "port 0", authority: pod + ":0", want: bad},
		{name: "port 65536", authority: pod + ":65536", want: bad},
		{name: "negative port", authority: pod + ":-1", want: bad},
		{name: "signed port", authority: pod + ":+8080", want: bad},
		{name: "hex port", authority: pod + ":0x1f90", want: bad},
		{name: "host:port:extra", authority: pod + ":8080:1", want: bad},
		// A hostname authority is the inner tunnel of double HBONE: it names a service of which the
		// pod must be an endpoint, else there is no upstream (503, as the reference's
		// find_inbound_upstream). None of these names a service of the pod.
		{name: "hostname", authority: "server.default.svc.cluster.local:8080", want: unavailable},
		{name: "localhost", authority: "localhost:15000", want: unavailable},
		{name: "IPv4 as an integer", authority: fmt.Sprint(ipv4Int(srv.IP())) + ":8080", want: unavailable},
		{name: "bracketed IPv4", authority: "[" + pod + "]:8080", want: bad},
		{name: "unbracketed IPv6", authority: "::1:15000", want: bad},
		{name: "unterminated bracket", authority: "[::1:15000", want: bad},
		{name: "zone", authority: "[fe80::1%eth0]:80", want: bad},
		{name: "userinfo", authority: "user@" + pod + ":8080", want: bad},
		{name: "8 KiB", authority: strings.Repeat("a", 8<<10) + ":8080", want: bad},
		{name: "8 KiB of labels", authority: strings.Repeat("a.", 4<<10) + "b:8080", want: bad},
		{name: "not UTF-8", authority: "\xff\xfe\xfd:8080", want: bad},
		{name: "not UTF-8 after the address", authority: pod + "\xc3:8080", want: bad},
		{name: "space before the port", authority: pod + " :8080", want: bad},
		{name: "leading space", authority: " " + pod + ":8080", want: bad},
		{name: "trailing space", authority: pod + ":8080 ", want: bad},
		{name: "CRLF injection", authority: pod + ":8080\r\nx-evil: 1", want: malformed},
		{name: "NUL", authority: pod + "\x00:8080", want: malformed},
	} {
		got := h2.connect(t, tc.authority, tc.absent)
		ok := got == tc.want
		if tc.want == malformed {
			ok = got == bad || got == "RST_STREAM PROTOCOL_ERROR"
		}
		if !ok {
			t.Errorf("CONNECT %s (%.60q): %s, want %s", tc.name, tc.authority, got, tc.want)
		}
	}

	// Nothing was reached.
	if n := app.accepted.Load(); n != 0 {
		t.Errorf("the application got %d connections from refused CONNECTs", n)
	}
	if n := neighborApp.accepted.Load(); n != 0 {
		t.Errorf("the neighbor pod's application got %d connections", n)
	}
	if n := remoteApp.accepted.Load(); n != 0 {
		t.Errorf("the remote pod's application got %d connections", n)
	}
	for _, s := range sentinels {
		if n := s.accepted.Load(); n != 0 {
			t.Errorf("%s: %d connections reached %s", s.where, n, s.addr)
		}
	}

	// The same HTTP/2 connection still carries a good CONNECT to the application.
	if got := h2.echo(t, netip.AddrPortFrom(srv.IP(), 8080).String(), "still here"); got != "still here" {
		t.Errorf("good CONNECT after the refusals echoed %q", got)
	}
	if n := app.accepted.Load(); n != 1 {
		t.Errorf("the application got %d connections, want the good CONNECT's only", n)
	}
	// And the proxy keeps serving the mesh: both pods of its node.
	for _, p := range []*testbed.Pod{srv, neighbor} {
		if err := tryEcho(client, netip.AddrPortFrom(p.IP(), 8080).String(), "mesh to "+p.Name()); err != nil {
			t.Errorf("mesh traffic to %s after the refusals: %v", p.Name(), err)
		}
	}
	waitLog(t, c, "node2", "would loop")
}

// hostileSentinel is a listener at a place a tunnel must never reach; it counts connections.
type hostileSentinel struct {
	where, addr string
	accepted    atomic.Int32
}

// listenSentinel listens on addr in ns, or returns nil if the namespace lacks the address
// family (IPv6 off).
func listenSentinel(t *testing.T, ns *redirect.NetNS, where, addr string) *hostileSentinel {
	t.Helper()
	ln, err := ns.Listen(context.Background(), "tcp", addr, redirect.SocketOptions{})
	if err != nil {
		if strings.HasPrefix(addr, "[") {
			t.Logf("%s: no sentinel on %s: %v", where, addr, err)
			return nil
		}
		t.Fatalf("%s: listen on %s: %v", where, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &hostileSentinel{where: where, addr: addr}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			c.Close()
		}
	}()
	return s
}

// nodeAddr returns the node's IPv4 address on dev, or with dev "" the address of its pods'
// bridge (their gateway).
func nodeAddr(t *testing.T, c *testbed.Cluster, node, dev string) netip.Addr {
	t.Helper()
	args := []string{"-n", c.NodeNetNS(node), "-4", "-o", "addr", "show"}
	if dev != "" {
		args = append(args, "dev", dev)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[1] == "lo" || (dev == "" && f[1] == "eth0") {
			continue
		}
		if p, err := netip.ParsePrefix(f[3]); err == nil {
			return p.Addr()
		}
	}
	t.Fatalf("no IPv4 address on %s %q:\n%s", node, dev, out)
	return netip.Addr{}
}

func ipv4Int(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// rawHBONE is a hand-driven HTTP/2 client connection, for requests a well-behaved client
// (hbone.Pool validates its authorities) never sends. One goroutine uses it at a time.
type rawHBONE struct {
	tc     *tls.Conn
	fr     *http2.Framer
	hbuf   bytes.Buffer
	enc    *hpack.Encoder
	nextID uint32
}

// dialRawHBONE connects from p to dst (a pod's 15008) with leaf as the client certificate and
// exchanges the HTTP/2 preface and settings.
func dialRawHBONE(t *testing.T, p *testbed.Pod, dst netip.AddrPort, leaf tls.Certificate) *rawHBONE {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := p.NetNS().Dial(ctx, "tcp", dst.String(), redirect.SocketOptions{})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", dst, p.Name(), err)
	}
	t.Cleanup(func() { nc.Close() })
	tc := tls.Client(nc, &tls.Config{
		InsecureSkipVerify: true, // only the server's checks are tested
		Certificates:       []tls.Certificate{leaf},
		NextProtos:         []string{"h2"},
	})
	tc.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatalf("TLS handshake with %s: %v", dst, err)
	}
	if proto := tc.ConnectionState().NegotiatedProtocol; proto != "h2" {
		t.Fatalf("ALPN %q, want h2", proto)
	}
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &rawHBONE{tc: tc, fr: http2.NewFramer(tc, tc), nextID: 1}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hbuf)
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// open sends a CONNECT to authority (no :authority field if absent) on a new stream and
// returns the stream and the answer: the response's :status, or "RST_STREAM <code>".
func (h *rawHBONE) open(t *testing.T, authority string, absent bool) (uint32, string) {
	t.Helper()
	id := h.nextID
	h.nextID += 2
	h.hbuf.Reset()
	h.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	if !absent {
		h.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatalf("write HEADERS: %v", err)
	}
	h.tc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		f := h.readFrame(t, fmt.Sprintf("the answer to CONNECT %.60q", authority))
		if f.Header().StreamID != id {
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			return id, f.PseudoValue("status")
		case *http2.RSTStreamFrame:
			return id, "RST_STREAM " + f.ErrCode.String()
		}
	}
}

// connect is open for a CONNECT that should be refused: a tunnel it gets anyway is cancelled
// at once.
func (h *rawHBONE) connect(t *testing.T, authority string, absent bool) string {
	t.Helper()
	id, status := h.open(t, authority, absent)
	if status == "200" {
		if err := h.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
	}
	return status
}

// echo opens a tunnel to authority, sends msg with END_STREAM and returns what comes back
// until the server ends the stream.
func (h *rawHBONE) echo(t *testing.T, authority, msg string) string {
	t.Helper()
	id, status := h.open(t, authority, false)
	if status != "200" {
		t.Fatalf("CONNECT %s: %s, want 200", authority, status)
	}
	if err := h.fr.WriteData(id, true, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	h.tc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		f := h.readFrame(t, "the echo from "+authority)
		if f.Header().StreamID != id {
			continue
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			got.Write(f.Data())
			if f.StreamEnded() {
				return got.String()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				return got.String()
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("tunnel to %s reset (%v) after %q", authority, f.ErrCode, got.String())
		}
	}
}

// readFrame reads the next frame, answering SETTINGS and PING; a GOAWAY or a read error
// (the connection dropped, or no frame before the read deadline) fails the test.
func (h *rawHBONE) readFrame(t *testing.T, waitingFor string) http2.Frame {
	t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for %s: %v", waitingFor, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := h.fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
			continue
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := h.fr.WritePing(true, f.Data); err != nil {
					t.Fatal(err)
				}
			}
			continue
		case *http2.GoAwayFrame:
			t.Fatalf("waiting for %s: the proxy sent GOAWAY %v (%q)", waitingFor, f.ErrCode, f.DebugData())
		}
		return f
	}
}
