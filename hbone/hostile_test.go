package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Hostile HTTP/2 peers on an established TLS connection: each test checks that the server bounds
// what the peer can make it hold or do, and that it keeps serving a well-behaved client afterwards.

// hostileServer serves srv (TLSConfig set here) on loopback and returns its address.
func hostileServer(t *testing.T, pki *testPKI, srv *Server) netip.AddrPort {
	t.Helper()
	srv.TLSConfig = pki.server
	if srv.Handler == nil {
		srv.Handler = echoHandler
	}
	if srv.Logger == nil {
		srv.Logger = discardLogger
	}
	return startServer(t, srv)
}

// dialRawTLS completes TCP, TLS (with the client certificate) and the HTTP/2 client preface and
// SETTINGS, and returns a raw peer on the connection. prepare, if non-nil, runs on the TCP socket
// before the TLS handshake.
func dialRawTLS(t *testing.T, pki *testPKI, addr netip.AddrPort, prepare func(*net.TCPConn), settings ...http2.Setting) *rawPeer {
	t.Helper()
	raw, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(raw.(*net.TCPConn))
	}
	cfg := pki.client.Clone()
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(raw, cfg)
	t.Cleanup(func() { raw.Close() })
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	p := newRawPeer(t, tc)
	p.clientHandshake(settings...)
	return p
}

// wellBehaved checks that a fresh, well-behaved pool client still gets an echoing tunnel.
func wellBehaved(t *testing.T, pki *testPKI, addr netip.AddrPort, when string) {
	t.Helper()
	pool, _ := testPool(t, pki, PoolConfig{})
	echoOnce(t, pool, addr, "well-behaved client "+when)
	pool.Close()
}

// frameLog reads every frame of a raw peer on its own goroutine (answering nothing: the test's
// goroutine is the only writer) until the connection ends, and counts what it saw.
type frameLog struct {
	mu      sync.Mutex
	status  map[string]int  // response HEADERS by :status
	rst     map[ErrCode]int // RST_STREAM by code
	goAway  []ErrCode
	pingAck int
	err     error // why reading stopped
	done    chan struct{}
}

func readFrames(p *rawPeer) *frameLog {
	l := &frameLog{status: make(map[string]int), rst: make(map[ErrCode]int), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := p.fr.ReadFrame()
			l.mu.Lock()
			if err != nil {
				l.err = err
				l.mu.Unlock()
				return
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				l.status[f.PseudoValue("status")]++
			case *http2.RSTStreamFrame:
				l.rst[ErrCode(f.ErrCode)]++
			case *http2.GoAwayFrame:
				l.goAway = append(l.goAway, ErrCode(f.ErrCode))
			case *http2.PingFrame:
				if f.IsAck() {
					l.pingAck++
				}
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *frameLog) snapshot() (status map[string]int, rst map[ErrCode]int, goAway []ErrCode, pingAck int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.status), maps.Clone(l.rst), slices.Clone(l.goAway), l.pingAck
}

// pingRoundTrip sends a PING on a connection whose frames l reads and waits for its ACK: the
// connection is still served.
func pingRoundTrip(t *testing.T, p *rawPeer, l *frameLog) {
	t.Helper()
	_, _, _, before := l.snapshot()
	if err := p.fr.WritePing(false, [8]byte{'a', 'l', 'i', 'v', 'e'}); err != nil {
		t.Fatalf("PING: %v", err)
	}
	waitFor(t, "the PING ack", 5*time.Second, func() bool {
		_, _, _, n := l.snapshot()
		return n > before
	})
}

// TestHostileHeaderList: a request whose header list exceeds the server's
// SETTINGS_MAX_HEADER_LIST_SIZE (64 KiB) never reaches the handler. Slightly over, in one frame, it
// is answered 431 and the connection stays usable; far over (320 KB over CONTINUATION frames) the
// framer stops decoding and fails the connection (PROTOCOL_ERROR) rather than read it all.
func TestHostileHeaderList(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	var called atomic.Int32
	addr := hostileServer(t, pki, &Server{Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		called.Add(1)
		echoHandler(ctx, r)
	})})
	request := func(p *rawPeer, n int) []byte {
		kv := []string{":method", "CONNECT", ":authority", "10.0.0.1:80"}
		for i := range n {
			kv = append(kv, fmt.Sprintf("x-big-%d", i), strings.Repeat("x", 8000))
		}
		return p.block(kv...)
	}

	t.Run("slightly over", func(t *testing.T) {
		p := dialRawTLS(t, pki, addr, nil)
		l := readFrames(p)
		p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, BlockFragment: request(p, 9)}) // 72 KB
		waitFor(t, "the 431", 5*time.Second, func() bool { s, _, _, _ := l.snapshot(); return s["431"] == 1 })
		pingRoundTrip(t, p, l)
	})
	t.Run("far over", func(t *testing.T) {
		p := dialRawTLS(t, pki, addr, nil)
		l := readFrames(p)
		block := request(p, 40) // 320 KB
		p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:10000]})
		for rest := block[10000:]; len(rest) > 0; {
			n := min(len(rest), 10000)
			if p.fr.WriteContinuation(1, n == len(rest), rest[:n]) != nil {
				break
			}
			rest = rest[n:]
		}
		<-l.done
		if _, _, goAway, _ := l.snapshot(); !slices.Equal(goAway, []ErrCode{ErrCodeProtocol}) {
			t.Errorf("GOAWAY %v, want [PROTOCOL_ERROR]", goAway)
		}
	})
	if n := called.Load(); n != 0 {
		t.Errorf("handler called %d times for oversized requests", n)
	}
	wellBehaved(t, pki, addr, "after oversized header lists")
}

// TestHostileContinuationFlood: a header block that never ends (CONTINUATION frames without
// END_HEADERS, CVE-2024-27316 style) is cut off with a connection error long before the peer has
// sent it all; the server does not buffer it.
func TestHostileContinuationFlood(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := hostileServer(t, pki, &Server{})
	p := dialRawTLS(t, pki, addr, nil)
	l := readFrames(p)
	p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.block(":method", "CONNECT", ":authority", "10.0.0.1:80")})
	frag := p.block("x-flood", strings.Repeat("y", 16000))
	sent := 0
	var werr error
	for sent < 64<<20 { // 64 MB if the server kept reading and buffering
		if werr = p.fr.WriteContinuation(1, false, frag); werr != nil {
			break
		}
		sent += len(frag)
	}
	<-l.done
	_, _, goAway, _ := l.snapshot()
	t.Logf("the server ended the connection after %d KB (write error %v, GOAWAY %v)", sent>>10, werr, goAway)
	if werr == nil {
		t.Errorf("the server read all %d MB of an endless header block", sent>>20)
	}
	wellBehaved(t, pki, addr, "after a CONTINUATION flood")
}

// TestHostileHPACKBomb: a small header block that decodes huge (one 4 KB entry in the dynamic
// table, then indexed 2000 times: 8 MB decoded from about 6 KB) is answered 431 and costs little;
// a dynamic table size update beyond the server's SETTINGS_HEADER_TABLE_SIZE is a COMPRESSION_ERROR.
func TestHostileHPACKBomb(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	var called atomic.Int32
	addr := hostileServer(t, pki, &Server{Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		called.Add(1)
		echoHandler(ctx, r)
	})})

	t.Run("indexed bomb", func(t *testing.T) {
		p := dialRawTLS(t, pki, addr, nil)
		l := readFrames(p)
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
		enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "10.0.0.1:80"})
		enc.WriteField(hpack.HeaderField{Name: "x-bomb", Value: strings.Repeat("b", 4000)})
		// The entry just added is dynamic index 1, HPACK index 62: an indexed field is one byte
		// (0x80|62).
		block.Write(bytes.Repeat([]byte{0x80 | 62}, 2000))
		start := time.Now()
		p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, BlockFragment: block.Bytes()})
		waitFor(t, "the 431", 5*time.Second, func() bool { s, _, _, _ := l.snapshot(); return s["431"] == 1 })
		t.Logf("%d-byte block answered in %v", block.Len(), time.Since(start))
		pingRoundTrip(t, p, l)
	})
	t.Run("table size update", func(t *testing.T) {
		p := dialRawTLS(t, pki, addr, nil)
		l := readFrames(p)
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		enc.SetMaxDynamicTableSizeLimit(1 << 30)
		enc.SetMaxDynamicTableSize(1 << 30) // announced in the next block: far above 4096
		enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
		enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "10.0.0.1:80"})
		p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, BlockFragment: block.Bytes()})
		<-l.done
		if _, _, goAway, _ := l.snapshot(); !slices.Equal(goAway, []ErrCode{ErrCodeCompression}) {
			t.Errorf("GOAWAY %v, want [COMPRESSION_ERROR]", goAway)
		}
	})
	if n := called.Load(); n != 0 {
		t.Errorf("handler called %d times", n)
	}
	wellBehaved(t, pki, addr, "after HPACK bombs")
}

// holdAuthority is the CONNECT authority for which blockingServer's handler holds the stream.
const holdAuthority = "10.0.0.9:80"

// blockingServer returns a server with maxStreams concurrent streams whose handler, for requests to
// holdAuthority, accepts and then holds the stream until release is closed (ignoring
// cancellation, like a handler busy elsewhere), and a gauge and the peak of those handlers. Other
// requests are echoed.
func blockingServer(maxStreams uint32, release <-chan struct{}) (*Server, *atomic.Int32, *atomic.Int32) {
	var running, peak atomic.Int32
	srv := &Server{MaxConcurrentStreams: maxStreams, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		if r.Authority != holdAuthority {
			echoHandler(ctx, r)
			return
		}
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if s, err := r.Accept(nil); err == nil {
			defer s.Close()
		}
		<-release
	})}
	return srv, &running, &peak
}

// TestHostileTooManyStreams: streams beyond the advertised SETTINGS_MAX_CONCURRENT_STREAMS are
// refused (RST_STREAM REFUSED_STREAM) and never reach the handler.
func TestHostileTooManyStreams(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	release := make(chan struct{})
	srv, _, peak := blockingServer(10, release)
	addr := hostileServer(t, pki, srv)
	defer close(release)
	p := dialRawTLS(t, pki, addr, nil)
	l := readFrames(p)
	for i := range 50 {
		p.writeHeaders(uint32(2*i+1), false, ":method", "CONNECT", ":authority", holdAuthority)
	}
	waitFor(t, "every stream answered", 5*time.Second, func() bool {
		s, r, _, _ := l.snapshot()
		return s["200"]+r[ErrCodeRefusedStream] == 50
	})
	if s, r, _, _ := l.snapshot(); s["200"] != 10 || r[ErrCodeRefusedStream] != 40 {
		t.Errorf("%d streams accepted and %d refused, want 10 and 40", s["200"], r[ErrCodeRefusedStream])
	}
	if n := peak.Load(); n > 10 {
		t.Errorf("%d handlers ran at once, more than the 10 streams allowed", n)
	}
	pingRoundTrip(t, p, l)
	wellBehaved(t, pki, addr, "while another connection holds all its streams")
}

// TestHostileRapidReset: a peer that opens and resets streams as fast as it can (CVE-2023-44487)
// cannot run more handlers at once than SETTINGS_MAX_CONCURRENT_STREAMS, even when the handlers are
// slow to notice the resets: later streams are refused, and a peer that keeps going while its
// refusals pile up unsent is disconnected (ENHANCE_YOUR_CALM). Other connections are served
// meanwhile.
func TestHostileRapidReset(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	release := make(chan struct{})
	srv, running, peak := blockingServer(20, release)
	addr := hostileServer(t, pki, srv)
	released := sync.OnceFunc(func() { close(release) })
	defer released()
	p := dialRawTLS(t, pki, addr, nil)
	l := readFrames(p)
	const n = 5000
	var werr error
	for i := range n {
		id := uint32(2*i + 1)
		if werr = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true,
			BlockFragment: p.block(":method", "CONNECT", ":authority", holdAuthority)}); werr != nil {
			break
		}
		if werr = p.fr.WriteRSTStream(id, http2.ErrCodeCancel); werr != nil {
			break
		}
	}
	if werr != nil {
		<-l.done
		if _, _, goAway, _ := l.snapshot(); !slices.Equal(goAway, []ErrCode{ErrCodeEnhanceYourCalm}) {
			t.Errorf("disconnected (%v) with GOAWAY %v, want [ENHANCE_YOUR_CALM]", werr, goAway)
		}
	} else {
		pingRoundTrip(t, p, l)
	}
	s, r, goAway, _ := l.snapshot()
	t.Logf("write error %v; %d handlers running; responses %v, resets %v, GOAWAY %v", werr, running.Load(), s, r, goAway)
	if got := peak.Load(); got > 20 {
		t.Errorf("%d handlers ran at once during %d rapid resets, more than the 20 streams allowed", got, n)
	}
	wellBehaved(t, pki, addr, "while the flooding connection's handlers hang")
	released()
	waitFor(t, "the handlers to return", 5*time.Second, func() bool { return running.Load() == 0 })
	wellBehaved(t, pki, addr, "after a rapid-reset flood")
}

// TestHostileControlFloods: a peer that sends PINGs or SETTINGS without reading the
// acknowledgements makes the server queue replies; past a bound it is disconnected
// (ENHANCE_YOUR_CALM) instead of growing the queue without limit.
func TestHostileControlFloods(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := hostileServer(t, pki, &Server{})
	smallReadBuffer := func(c *net.TCPConn) { c.SetReadBuffer(4 << 10) }
	floods := map[string]func(fr *http2.Framer) error{
		"PING": func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) },
		"SETTINGS": func(fr *http2.Framer) error {
			return fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		},
	}
	for name, send := range floods {
		t.Run(name, func(t *testing.T) {
			p := dialRawTLS(t, pki, addr, smallReadBuffer)
			const max = 1 << 20
			sent := 0
			start := time.Now()
			p.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			for ; sent < max; sent++ {
				if err := send(p.fr); err != nil {
					break
				}
			}
			if sent == max {
				t.Fatalf("the server took %d %s frames without reading the replies", max, name)
			}
			t.Logf("disconnected after %d %s frames (%v)", sent, name, time.Since(start))
		})
	}
	wellBehaved(t, pki, addr, "after control-frame floods")
}

// TestHostileStreamWindowOverflow: WINDOW_UPDATEs that take an open stream's send window past
// 2^31-1 reset that stream with FLOW_CONTROL_ERROR (RFC 9113 §6.9.1), and the connection stays;
// past 2^31-1 on the connection window, the connection fails with FLOW_CONTROL_ERROR.
func TestHostileStreamWindowOverflow(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := hostileServer(t, pki, &Server{})
	p := dialRawTLS(t, pki, addr, nil)
	l := readFrames(p)
	p.writeHeaders(1, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	waitFor(t, "the 200", 5*time.Second, func() bool { s, _, _, _ := l.snapshot(); return s["200"] == 1 })
	p.fr.WriteWindowUpdate(1, 1<<31-1)
	p.fr.WriteWindowUpdate(1, 1<<31-1)
	waitFor(t, "RST_STREAM(FLOW_CONTROL_ERROR)", 5*time.Second, func() bool {
		_, r, _, _ := l.snapshot()
		return r[ErrCodeFlowControl] == 1
	})
	pingRoundTrip(t, p, l)
	p.fr.WriteWindowUpdate(0, 1<<31-1)
	p.fr.WriteWindowUpdate(0, 1<<31-1)
	<-l.done
	if _, _, goAway, _ := l.snapshot(); !slices.Equal(goAway, []ErrCode{ErrCodeFlowControl}) {
		t.Errorf("GOAWAY %v, want [FLOW_CONTROL_ERROR]", goAway)
	}
	wellBehaved(t, pki, addr, "after window overflows")
}

// TestHostilePlaintextHTTP1: plaintext HTTP/1.1 (or a plaintext HTTP/2 preface) sent to the TLS port
// is dropped as soon as the server sees it is not TLS, not after HandshakeTimeout, and its handshake
// slot is given back; an HTTP/1.1 request or a bogus preface on an h2c connection (ServeConn) is
// dropped at once too.
func TestHostilePlaintextHTTP1(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	lim := &HandshakeLimiter{}
	addr := hostileServer(t, pki, &Server{HandshakeTimeout: time.Minute, Handshakes: lim})
	h2c := &Server{Handler: echoHandler, Config: Config{Logger: discardLogger}, HandshakeTimeout: time.Minute}
	inputs := map[string]string{
		"HTTP/1.1":         "GET / HTTP/1.1\r\nHost: 10.0.0.1\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 CONNECT": "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n",
		"bogus preface":    "INVALID CONNECTION PREFACE\r\n\r\n",
	}
	for name, in := range inputs {
		t.Run(name+" to TLS", func(t *testing.T) {
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			checkDropped(t, c, in)
			waitFor(t, "the handshake slot", time.Second, func() bool { return lim.Stats().InHandshake == 0 })
		})
		t.Run(name+" to h2c", func(t *testing.T) {
			c, done := serveLoopbackConn(t, h2c)
			checkDropped(t, c, in)
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Error("ServeConn still running")
			}
		})
	}
	wellBehaved(t, pki, addr, "after plaintext clients")
}

// checkDropped writes in to c and checks that the server ends the connection within a second
// (it may send a TLS alert or SETTINGS first).
func checkDropped(t *testing.T, c net.Conn, in string) {
	t.Helper()
	start := time.Now()
	io.WriteString(c, in)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > time.Second {
		t.Errorf("connection still open %v after %q (%v)", time.Since(start), in, err)
	}
}

// serveLoopbackConn runs srv.ServeConn on a plaintext loopback TCP connection and returns the
// client end and a channel closed when ServeConn returns.
func serveLoopbackConn(t *testing.T, srv *Server) (net.Conn, <-chan struct{}) {
	t.Helper()
	p, done := serveLoopback(t, srv)
	return p.c, done
}

// TestHostileHalfHandshakes: clients that complete TCP and hold a half-done TLS handshake neither
// delay a well-behaved client nor stay past HandshakeTimeout.
func TestHostileHalfHandshakes(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	lim := &HandshakeLimiter{}
	addr := hostileServer(t, pki, &Server{HandshakeTimeout: 2 * time.Second, Handshakes: lim})
	halfHello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	conns, _ := silentConns(t, "127.0.0.1", addr, 60)
	for _, c := range conns {
		c.Write(halfHello)
	}
	waitFor(t, "the half handshakes", 5*time.Second, func() bool { return lim.Stats().InHandshake == 60 })
	start := time.Now()
	wellBehaved(t, pki, addr, "while 60 handshakes hang")
	if d := time.Since(start); d > time.Second {
		t.Errorf("a well-behaved client took %v while handshakes hang", d)
	}
	waitFor(t, "HandshakeTimeout to close them", 5*time.Second, func() bool { return lim.Stats().InHandshake == 0 })
	if held, _ := heldOpen(t, conns); held != 0 {
		t.Errorf("%d half handshakes still open after HandshakeTimeout", held)
	}
}
