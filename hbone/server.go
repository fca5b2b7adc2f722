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
	// HandshakeTimeout bounds the TLS handshake and the HTTP/2 preface. Zero means 10s.
	HandshakeTimeout time.Duration

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	pending   int // accepted sockets still in their TLS handshake
	shutdown  bool
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout > 0 {
		return s.HandshakeTimeout
	}
	return defaultHandshakeTimeout
}

// Serve accepts connections on ln, does the TLS handshake (bounded by HandshakeTimeout) and serves each
// connection. It returns when ln fails or is closed: ErrServerClosed after Shutdown, else the accept
// error. Temporary accept errors are retried with backoff.
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
		if !s.addPending() {
			_ = raw.Close()
			continue
		}
		go s.serveRaw(raw, tcfg)
	}
}

// serveRaw does the TLS handshake on an accepted socket, then serves it.
func (s *Server) serveRaw(raw net.Conn, tcfg *tls.Config) {
	tc := tls.Server(newSockConn(raw), tcfg)
	ctx, cancel := context.WithTimeout(context.Background(), s.handshakeTimeout())
	err := tc.HandshakeContext(ctx)
	cancel()
	if err == nil {
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			err = fmt.Errorf("negotiated ALPN %q, want h2", p)
		}
	}
	if err != nil {
		s.logger().Debug("hbone TLS handshake failed", "peer", addrString(raw.RemoteAddr()), "error", err)
		_ = raw.Close()
		s.mu.Lock()
		s.pending--
		s.mu.Unlock()
		return
	}
	s.serveConn(context.Background(), tc, true)
}

// ServeConn serves HTTP/2 on c until the connection ends or ctx is done, then waits for its handlers to
// return. c is normally a *tls.Conn (its handshake is completed here if needed); any net.Conn works,
// for tests.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok && !tc.ConnectionState().HandshakeComplete {
		hctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return
		}
	}
	s.serveConn(ctx, c, false)
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn, fromPending bool) {
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
	if !s.trackConn(c, fromPending) {
		c.cancel()
		_ = nc.Close()
		return
	}
	defer s.untrackConn(c)
	stop := context.AfterFunc(ctx, func() {
		c.close(&ConnError{Reason: "server context done", Err: context.Cause(ctx)})
	})
	defer stop()
	c.run()
	c.serve(s.handshakeTimeout())
	c.handlers.Wait()
	<-c.writerDone
}

// serve reads the client preface, then runs the read loop on the calling goroutine.
func (c *conn) serve(prefaceTimeout time.Duration) {
	_ = c.nc.SetReadDeadline(time.Now().Add(prefaceTimeout)) // cleared by the first SETTINGS
	var buf [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.nc, buf[:]); err != nil {
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

// Shutdown stops accepting connections, sends GOAWAY on every connection and waits until their streams
// have ended and handlers returned, or ctx is done; then the remaining connections are closed and
// ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	lns := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, ln)
	}
	conns := s.connList()
	s.mu.Unlock()
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
		n := len(s.conns) + s.pending
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

// Close immediately closes the listeners and every connection. Streams fail; handlers see their
// contexts cancelled. The connections close in parallel, each within about 250 ms even if its peer
// stopped reading, and Close returns when they are closed (it does not wait for handlers).
func (s *Server) Close() error {
	s.mu.Lock()
	s.shutdown = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	conns := s.connList()
	s.mu.Unlock()
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

func (s *Server) addPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.pending++
	return true
}

// trackConn registers c (moving it out of pending if fromPending); false once shutting down.
func (s *Server) trackConn(c *conn, fromPending bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fromPending {
		s.pending--
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
