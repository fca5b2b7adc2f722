package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawPeer is a scripted HTTP/2 peer built directly on the framer, for behaviour a well-behaved
// implementation would never show (no PING answers, tiny windows, window violations).
type rawPeer struct {
	t      *testing.T
	c      net.Conn
	fr     *http2.Framer
	encBuf bytes.Buffer
	enc    *hpack.Encoder
}

func newRawPeer(t *testing.T, c net.Conn) *rawPeer {
	p := &rawPeer{t: t, c: c, fr: http2.NewFramer(c, c)}
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p.enc = hpack.NewEncoder(&p.encBuf)
	return p
}

// block HPACK-encodes name/value pairs.
func (p *rawPeer) block(kv ...string) []byte {
	p.encBuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		p.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(p.encBuf.Bytes())
}

func (p *rawPeer) writeHeaders(id uint32, end bool, kv ...string) {
	p.t.Helper()
	if err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.block(kv...),
		EndHeaders: true, EndStream: end}); err != nil {
		p.t.Fatalf("write HEADERS: %v", err)
	}
}

// next reads the next frame that is not SETTINGS or WINDOW_UPDATE (SETTINGS are acked). PINGs are
// answered and skipped if answerPings, else returned.
func (p *rawPeer) next(answerPings bool) http2.Frame {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			p.t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				p.fr.WriteSettingsAck()
			}
			continue
		case *http2.PingFrame:
			if !answerPings {
				return f
			}
			if !f.IsAck() {
				p.fr.WritePing(true, f.Data)
			}
			continue
		case *http2.WindowUpdateFrame:
			continue
		}
		return f
	}
}

// clientHandshake sends the client preface and SETTINGS.
func (p *rawPeer) clientHandshake(settings ...http2.Setting) {
	p.t.Helper()
	io.WriteString(p.c, http2.ClientPreface)
	if err := p.fr.WriteSettings(settings...); err != nil {
		p.t.Fatal(err)
	}
}

// serveLoopback runs srv.ServeConn on a plaintext loopback TCP connection and returns a raw client for
// the other end. (TCP rather than net.Pipe: the raw peer writes synchronously and needs socket buffers.)
func serveLoopback(t *testing.T, srv *Server) (*rawPeer, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(context.Background(), sc)
	}()
	t.Cleanup(func() {
		cc.Close()
		<-done
	})
	return newRawPeer(t, cc), done
}

func TestServerValidatesRequests(t *testing.T) {
	checkLeaks(t)
	var called atomic.Int32
	srv := &Server{Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		called.Add(1)
		r.Accept(nil)
	})}
	p, _ := serveLoopback(t, srv)
	p.clientHandshake()
	cases := []struct {
		name string
		kv   []string
		want string
	}{
		{"GET", []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "10.0.0.1:80"}, "400"},
		{"no authority", []string{":method", "CONNECT"}, "400"},
		{"bad authority", []string{":method", "CONNECT", ":authority", "10.0.0.1"}, "400"},
		{"userinfo", []string{":method", "CONNECT", ":authority", "u@10.0.0.1:80"}, "400"},
		{"CONNECT with path", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":scheme", "https", ":path", "/"}, "400"},
		{"valid", []string{":method", "CONNECT", ":authority", "10.0.0.1:80"}, "200"},
	}
	id := uint32(1)
	for _, tc := range cases {
		p.writeHeaders(id, false, tc.kv...)
		f := p.next(true)
		h, ok := f.(*http2.MetaHeadersFrame)
		if !ok || h.StreamID != id {
			t.Fatalf("%s: got %v, want HEADERS on stream %d", tc.name, f, id)
		}
		if got := h.PseudoValue("status"); got != tc.want {
			t.Errorf("%s: status %s, want %s", tc.name, got, tc.want)
		}
		if tc.want != "200" {
			if !h.StreamEnded() {
				t.Errorf("%s: error response without END_STREAM", tc.name)
			}
			// The unfinished request side is reset with NO_ERROR.
			if rst, ok := p.next(true).(*http2.RSTStreamFrame); !ok || rst.ErrCode != http2.ErrCodeNo {
				t.Errorf("%s: want RST_STREAM(NO_ERROR) after the response", tc.name)
			}
		}
		id += 2
	}
	if called.Load() != 1 {
		t.Errorf("handler called %d times, want 1 (only for the valid request)", called.Load())
	}
}

// TestServerRespectsPeerSettings: the server sends within the client's stream window, follows a
// mid-connection SETTINGS_INITIAL_WINDOW_SIZE change and WINDOW_UPDATEs, and respects its frame size.
func TestServerRespectsPeerSettings(t *testing.T) {
	checkLeaks(t)
	payload := bytes.Repeat([]byte("0123456789"), 3000) // 30000 bytes
	srv := &Server{Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		s.Write(payload)
		s.CloseWrite()
		io.Copy(io.Discard, s)
	})}
	p, _ := serveLoopback(t, srv)
	p.clientHandshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	p.writeHeaders(1, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	if h, ok := p.next(true).(*http2.MetaHeadersFrame); !ok || h.PseudoValue("status") != "200" {
		t.Fatalf("want a 200 response")
	}
	var got []byte
	readData := func(want int) {
		t.Helper()
		for len(got) < want {
			d, ok := p.next(true).(*http2.DataFrame)
			if !ok {
				t.Fatalf("want DATA")
			}
			if len(d.Data()) > 16384 {
				t.Fatalf("DATA frame of %d bytes exceeds the default max frame size", len(d.Data()))
			}
			got = append(got, d.Data()...)
		}
		if len(got) != want {
			t.Fatalf("received %d bytes, want exactly %d", len(got), want)
		}
	}
	readData(1000)
	// Nothing more until the window grows: a PING round trip proves the server is idle.
	p.fr.WritePing(false, [8]byte{1})
	if f, ok := p.next(false).(*http2.PingFrame); !ok || !f.IsAck() {
		t.Fatalf("got %v, want only a PING ack while the window is closed", f)
	}
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 5000}) // +4000
	readData(5000)
	p.fr.WriteWindowUpdate(1, 30000)
	p.fr.WriteWindowUpdate(0, 1<<20)
	readData(30000)
	if d, ok := p.next(true).(*http2.DataFrame); !ok || !d.StreamEnded() || len(d.Data()) != 0 {
		t.Errorf("want an empty END_STREAM DATA frame")
	}
	if !bytes.Equal(got, payload) {
		t.Error("payload corrupted")
	}
	p.fr.WriteData(1, true, nil)
}

func TestServerResetsWindowViolation(t *testing.T) {
	checkLeaks(t)
	srv := &Server{Config: Config{StreamWindow: 65535}, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		<-ctx.Done() // read nothing
	})}
	p, _ := serveLoopback(t, srv)
	p.clientHandshake()
	p.writeHeaders(1, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	p.next(true) // 200
	chunk := make([]byte, 16384)
	for range 4 {
		p.fr.WriteData(1, false, chunk) // 65536 > the 65535 stream window
	}
	rst, ok := p.next(true).(*http2.RSTStreamFrame)
	if !ok || rst.ErrCode != http2.ErrCodeFlowControl {
		t.Fatalf("want RST_STREAM(FLOW_CONTROL_ERROR), got %v", rst)
	}
	// The connection survives.
	p.fr.WritePing(false, [8]byte{7})
	if f, ok := p.next(false).(*http2.PingFrame); !ok || f.Data != [8]byte{7} {
		t.Error("connection not usable after a stream error")
	}
}

func TestServerProtocolErrorGoAway(t *testing.T) {
	checkLeaks(t)
	srv := &Server{Handler: echoHandler}
	p, done := serveLoopback(t, srv)
	p.clientHandshake()
	p.writeHeaders(2, false, ":method", "CONNECT", ":authority", "10.0.0.1:80") // even id: PROTOCOL_ERROR
	ga, ok := p.next(true).(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("want GOAWAY(PROTOCOL_ERROR), got %v", ga)
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("ServeConn did not return after a protocol error")
	}
}

// TestServerPingTimeout: a client that stops answering PINGs (while still reading) is disconnected.
func TestServerPingTimeout(t *testing.T) {
	checkLeaks(t)
	srv := &Server{Config: Config{PingInterval: 30 * time.Millisecond, PingTimeout: 150 * time.Millisecond}, Handler: echoHandler}
	p, done := serveLoopback(t, srv)
	p.clientHandshake()
	go io.Copy(io.Discard, p.c) // drain without answering
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("server did not close a connection whose peer stopped answering PINGs")
	}
}

// TestClientPingTimeout: the pool side detects a TLS server that stops answering PINGs.
func TestClientPingTimeout(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peerDone := make(chan struct{})
	go func() {
		defer close(peerDone)
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		defer raw.Close()
		cfg := pki.server.Clone()
		cfg.NextProtos = []string{"h2"}
		tc := tls.Server(raw, cfg)
		if tc.Handshake() != nil {
			return
		}
		p := newRawPeer(t, tc)
		buf := make([]byte, len(http2.ClientPreface))
		io.ReadFull(tc, buf)
		p.fr.WriteSettings()
		for {
			tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			f, err := p.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					p.fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				// Answer the CONNECT, then go silent: no PING acks, no frames at all.
				p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, EndHeaders: true,
					BlockFragment: p.block(":status", "200")})
			}
		}
	}()
	pool, _ := testPool(t, pki, PoolConfig{Config: Config{PingInterval: 30 * time.Millisecond, PingTimeout: 150 * time.Millisecond}})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(netipMust(ln.Addr().String())), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	_, err = s.Read(make([]byte, 1))
	var ce *ConnError
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "ping timeout") || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read = %v, want a ping-timeout ConnError", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ping timeout took %v", d)
	}
	<-peerDone
}

// TestPingKeepsIdleTunnelAlive: peers that answer PINGs stay connected long past the ping timeout.
func TestPingKeepsIdleTunnelAlive(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	fast := Config{PingInterval: 20 * time.Millisecond, PingTimeout: 60 * time.Millisecond}
	addr := startServer(t, &Server{TLSConfig: pki.server, Config: fast, Handler: echoHandler})
	pool, _ := testPool(t, pki, PoolConfig{Config: fast})
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), testKey(addr), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.Sleep(500 * time.Millisecond)
	s.Write([]byte("alive"))
	s.CloseWrite()
	if got, err := io.ReadAll(s); err != nil || string(got) != "alive" {
		t.Errorf("echo after idle = %q, %v", got, err)
	}
}

var _ = http.StatusOK

// TestRejectReturnsWindow: request data buffered for a rejected stream gives its connection window back,
// so repeated rejects cannot starve the connection.
func TestRejectReturnsWindow(t *testing.T) {
	checkLeaks(t)
	srv := &Server{Config: Config{StreamWindow: 65535, ConnWindow: 65535},
		Handler: HandlerFunc(func(ctx context.Context, r *Request) {
			time.Sleep(5 * time.Millisecond) // let the data arrive first
			r.Reject(401, "denied")
		})}
	p, _ := serveLoopback(t, srv)
	p.clientHandshake()
	const perRound = 40000 // more than half the connection window: the update is due at once
	for round, id := 0, uint32(1); round < 5; round, id = round+1, id+2 {
		p.writeHeaders(id, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
		for sent := 0; sent < perRound; sent += 10000 {
			p.fr.WriteData(id, false, make([]byte, 10000))
		}
		var status string
		var returned uint32
		for status == "" || returned < perRound {
			p.c.SetReadDeadline(time.Now().Add(3 * time.Second))
			f, err := p.fr.ReadFrame()
			if err != nil {
				t.Fatalf("round %d: %v (status %q, window returned %d)", round, err, status, returned)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					p.fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				status = f.PseudoValue("status")
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					returned += f.Increment
				}
			case *http2.GoAwayFrame:
				t.Fatalf("round %d: GOAWAY %v", round, f.ErrCode)
			}
		}
		if status != "401" {
			t.Errorf("round %d: status %s", round, status)
		}
	}
}
