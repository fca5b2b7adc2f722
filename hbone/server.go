package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

const (
	defaultMaxConcurrentStreams = 200
	defaultHandshakeTimeout     = 10 * time.Second
)

// Server is the inbound HBONE side: it accepts TLS connections and hands each CONNECT request to
// Handler. Its exported fields must not change after Serve or ServeConn is first called.
type Server struct {
	Config
	// MaxConcurrentStreams is announced as SETTINGS_MAX_CONCURRENT_STREAMS; streams beyond it are refused.
	// Zero means 200.
	MaxConcurrentStreams uint32
	// TLSConfig is required by Serve. Serve forces TLS 1.3 and ALPN "h2" and drops connections that
	// negotiate anything else.
	TLSConfig *tls.Config
	// Handler answers requests. Nil answers every request with 503.
	Handler Handler
	// HandshakeTimeout bounds the time from accepting a connection to its first SETTINGS frame: the
	// TLS handshake, the HTTP/2 client preface and that SETTINGS frame together, however slowly the
	// client sends them. Zero means 10s.
	HandshakeTimeout time.Duration
	// Handshakes caps the connections Serve has accepted that are still in their handshake (TLS
	// handshake and HTTP/2 preface), in total and per source IP; connections over a cap are reset
	// unread. Share one limiter between servers to cap them together. Nil means a limiter of this
	// server alone, with the default caps (see HandshakeLimiter).
	Handshakes *HandshakeLimiter
	// OnRefused, if non-nil, is called for every connection Serve refuses because a Handshakes cap
	// was reached, with the reason (RefusedHandshakes or RefusedHandshakesPerSource). It runs on
	// Serve's accept loop and must not block.
	OnRefused func(reason string)

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	pending   map[net.Conn]struct{} // accepted sockets still in their TLS handshake
	ownLimit  *HandshakeLimiter     // used when Handshakes is nil
	shutdown  bool
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout > 0 {
		return s.HandshakeTimeout
	}
	return defaultHandshakeTimeout
}

// limiter returns the HandshakeLimiter Serve uses.
func (s *Server) limiter() *HandshakeLimiter {
	if s.Handshakes != nil {
		return s.Handshakes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ownLimit == nil {
		s.ownLimit = new(HandshakeLimiter)
	}
	return s.ownLimit
}

// Serve accepts connections on ln, does the TLS handshake and serves each connection. A connection
// over a Handshakes cap is reset at once; one that has not sent its first SETTINGS frame
// HandshakeTimeout after it was accepted is closed. Serve returns when ln fails or is closed:
// ErrServerClosed after Shutdown or Close, else the accept error. Temporary accept errors are retried
// with backoff.
func (s *Server) Serve(ln net.Listener) error {
	if s.TLSConfig == nil {
		return errors.New("hbone serve: Server.TLSConfig is required")
	}
	tcfg := s.TLSConfig.Clone()
	tcfg.NextProtos = []string{"h2"}
	tcfg.MinVersion = tls.VersionTLS13
	if !s.trackListener(ln) {
		_ = ln.Close()
		return ErrServerClosed
	}
	defer s.untrackListener(ln)
	lim := s.limiter()
	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.isShutdown() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("hbone serve: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logger().Debug("hbone accept failed; retrying", "error", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		src := sourceIP(raw)
		if reason := lim.acquire(src); reason != "" {
			resetConn(raw)
			if s.OnRefused != nil {
				s.OnRefused(reason)
			}
			continue
		}
		if !s.addPending(raw) {
			lim.release(src)
			_ = raw.Close()
			continue
		}
		go s.serveRaw(raw, tcfg, func() { lim.release(src) })
	}
}

// serveRaw does the TLS handshake on an accepted socket, then serves it. release gives back the
// socket's handshake slot; it is called once the client preface has been read or the connection
// failed before.
func (s *Server) serveRaw(raw net.Conn, tcfg *tls.Config, release func()) {
	// One deadline for the TLS handshake, the preface and the first SETTINGS frame (conn.serve keeps
	// it for the read side; the writer renews its own write deadline).
	deadline := time.Now().Add(s.handshakeTimeout())
	_ = raw.SetDeadline(deadline)
	tc := tls.Server(newSockConn(raw), tcfg)
	err := tc.Handshake()
	if err == nil {
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			err = fmt.Errorf("negotiated ALPN %q, want h2", p)
		}
	}
	if err != nil {
		s.logger().Debug("hbone TLS handshake failed", "peer", addrString(raw.RemoteAddr()), "error", err)
		_ = raw.Close()
		release()
		s.donePending(raw)
		return
	}
	s.serveConn(context.Background(), tc, raw, deadline, release)
}

// ServeConn serves HTTP/2 on c until the connection ends or ctx is done, then waits for its handlers to
// return. c is normally a *tls.Conn (its handshake is completed here if needed); any net.Conn works,
// for tests. HandshakeTimeout counts from the call; Handshakes caps do not apply (the caller accepted
// c).
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	deadline := time.Now().Add(s.handshakeTimeout())
	if tc, ok := c.(*tls.Conn); ok && !tc.ConnectionState().HandshakeComplete {
		hctx, cancel := context.WithDeadline(ctx, deadline)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return
		}
	}
	s.serveConn(ctx, c, nil, deadline, func() {})
}

// serveConn serves nc until it ends. pending, if non-nil, is the accepted socket under nc, counted
// in s.pending until now; prefaceDeadline bounds the wait for the client preface and first SETTINGS;
// release is called once the preface has been read (or the connection failed before).
func (s *Server) serveConn(ctx context.Context, nc, pending net.Conn, prefaceDeadline time.Time, release func()) {
	maxStreams := s.MaxConcurrentStreams
	if maxStreams == 0 {
		maxStreams = defaultMaxConcurrentStreams
	}
	c := newConn(ctx, roleServer, nc, s.Config.withDefaults(), defaultServerMaxHeaderList, maxStreams)
	c.handler = s.Handler
	if tc, ok := nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		c.tlsState = &st
	}
	if !s.trackConn(c, pending) {
		c.cancel()
		_ = nc.Close()
		release()
		return
	}
	defer s.untrackConn(c)
	stop := context.AfterFunc(ctx, func() {
		c.close(&ConnError{Reason: "server context done", Err: context.Cause(ctx)})
	})
	defer stop()
	c.run()
	c.serve(prefaceDeadline, release)
	c.handlers.Wait()
	<-c.writerDone
}

// serve reads the client preface, calls release, then runs the read loop on the calling goroutine.
// deadline bounds the preface and the first SETTINGS frame.
func (c *conn) serve(deadline time.Time, release func()) {
	_ = c.nc.SetReadDeadline(deadline) // cleared by the first SETTINGS (onSettings)
	var buf [len(http2.ClientPreface)]byte
	_, err := io.ReadFull(c.nc, buf[:])
	release()
	if err != nil {
		close(c.readDone)
		c.close(&ConnError{Reason: "reading client preface", Err: err})
		return
	}
	if string(buf[:]) != http2.ClientPreface {
		close(c.readDone)
		c.close(&ConnError{Code: ErrCodeProtocol, Reason: "bad client preface"})
		return
	}
	c.readLoop()
}

// goAway starts a graceful shutdown: GOAWAY with the last stream id, no new streams, close when the
// last stream ends.
func (c *conn) goAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goAwaySent || c.err != nil {
		return
	}
	c.enqueueLocked(&writeItem{kind: wGoAway, streamID: c.lastPeerID, code: ErrCodeNo})
	c.goAwaySent = true
	c.streamsChangedLocked()
}

// Shutdown stops accepting connections, closes those still in their TLS handshake (they could not be
// served any more), sends GOAWAY on every connection and waits until their streams have ended and
// handlers returned, or ctx is done; then the remaining connections are closed and ctx's error
// returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	lns := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, ln)
	}
	conns := s.connList()
	pending := s.pendingList()
	s.mu.Unlock()
	closePending(pending)
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, c := range conns {
		c.goAway()
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns) + len(s.pending)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close immediately closes the listeners and every connection, including those still in their TLS
// handshake. Streams fail; handlers see their contexts cancelled. The connections close in parallel,
// each within about 250 ms even if its peer stopped reading, and Close returns when they are closed
// (it does not wait for handlers).
func (s *Server) Close() error {
	s.mu.Lock()
	s.shutdown = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	pending := s.pendingList()
	conns := s.connList()
	s.mu.Unlock()
	closePending(pending)
	closeAll(conns, &ConnError{Reason: "server closed"}, false)
	return nil
}

func (s *Server) connList() []*conn {
	l := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		l = append(l, c)
	}
	return l
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

func (s *Server) trackListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) untrackListener(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, ln)
}

// addPending registers raw as in its TLS handshake; false once shutting down.
func (s *Server) addPending(raw net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	if s.pending == nil {
		s.pending = make(map[net.Conn]struct{})
	}
	s.pending[raw] = struct{}{}
	return true
}

// donePending unregisters raw, whose handshake failed.
func (s *Server) donePending(raw net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, raw)
}

// pendingList returns the sockets still in their TLS handshake. Requires s.mu held.
func (s *Server) pendingList() []net.Conn {
	l := make([]net.Conn, 0, len(s.pending))
	for raw := range s.pending {
		l = append(l, raw)
	}
	return l
}

// closePending closes sockets in their TLS handshake: the handshakes fail, and serveRaw cleans up.
func closePending(l []net.Conn) {
	for _, raw := range l {
		_ = raw.Close()
	}
}

// trackConn registers c (moving pending, the socket under it, out of s.pending if non-nil); false
// once shutting down.
func (s *Server) trackConn(c *conn, pending net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pending != nil {
		delete(s.pending, pending)
	}
	if s.shutdown {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrackConn(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}
