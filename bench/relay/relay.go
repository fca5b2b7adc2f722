package relay

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
)

// Config configures Run.
type Config struct {
	// Listen is the address to accept connections on, e.g. "172.30.0.1:16001". Required.
	Listen string
	// Target is where each accepted connection is forwarded ("ip:port"). Required.
	Target string
	// TLS is the TLS side's config. With AcceptTLS it is a server config (see ServerTLS) and the
	// relay accepts TLS and dials plain TCP; otherwise a client config (see ClientTLS) and the
	// relay accepts plain TCP and dials TLS. Required.
	TLS *tls.Config
	// AcceptTLS selects the direction, see TLS. False: accept plain, dial TLS.
	AcceptTLS bool
	// BufSize is the copy buffer of each direction of each connection. Zero: 256 KiB.
	BufSize int
	// HandshakeTimeout bounds the dial plus TLS handshake of each connection. Zero: 10 s.
	HandshakeTimeout time.Duration
	// Ready, if set, is called with the listener's address once it accepts.
	Ready func(net.Addr)
	// Logger receives per-connection failures at debug level. Nil: slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.BufSize <= 0 {
		c.BufSize = 256 << 10
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Run listens on cfg.Listen and relays every connection until ctx ends; then it closes the
// listener and every open connection and returns nil once all are closed. Errors starting up are
// returned.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if cfg.Listen == "" || cfg.Target == "" || cfg.TLS == nil {
		return errors.New("relay: Listen, Target and TLS are required")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex // guards conns and closed
		conns  = map[net.Conn]struct{}{}
		closed bool
	)
	// track adds c to the open connections; false once Run is stopping.
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		delete(conns, c)
	}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		closed = true
		open := make([]net.Conn, 0, len(conns))
		for c := range conns {
			open = append(open, c)
		}
		mu.Unlock()
		for _, c := range open {
			c.Close()
		}
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				wg.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			ln.Close()
			wg.Wait()
			return fmt.Errorf("relay: accept: %w", err)
		}
		if !track(c) {
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer untrack(c)
			if err := serveConn(ctx, cfg, c); err != nil {
				cfg.Logger.Debug("relay connection failed", "from", c.RemoteAddr(), "error", err)
			}
		}()
	}
}

// serveConn relays one accepted connection and closes it.
func serveConn(ctx context.Context, cfg Config, in net.Conn) error {
	defer in.Close()
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	if cfg.AcceptTLS {
		tin := tls.Server(in, cfg.TLS)
		if err := tin.HandshakeContext(hctx); err != nil {
			return fmt.Errorf("tls handshake with %s: %w", in.RemoteAddr(), err)
		}
		in = tin
	}
	var d net.Dialer
	out, err := d.DialContext(hctx, "tcp", cfg.Target)
	if err != nil {
		return fmt.Errorf("dial %s: %w", cfg.Target, err)
	}
	defer out.Close()
	if !cfg.AcceptTLS {
		tout := tls.Client(out, cfg.TLS)
		if err := tout.HandshakeContext(hctx); err != nil {
			return fmt.Errorf("tls handshake with %s: %w", cfg.Target, err)
		}
		out = tout
	}
	cancel()
	return pipe(in, out, cfg.BufSize)
}

// pipe copies both ways until both directions ended. A direction that reaches EOF half-closes its
// destination; an error in either direction closes both connections.
func pipe(a, b net.Conn, bufSize int) error {
	errc := make(chan error, 2)
	cp := func(dst, src net.Conn) {
		_, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, make([]byte, bufSize))
		if err == nil {
			err = closeWrite(dst)
		}
		if err != nil {
			a.Close()
			b.Close()
		}
		errc <- err
	}
	go cp(b, a)
	go cp(a, b)
	return errors.Join(<-errc, <-errc)
}

// closeWrite half-closes c: a close_notify alert for TLS, a FIN for TCP.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// readerOnly and writerOnly hide ReadFrom/WriteTo so io.CopyBuffer uses the relay's buffer.
type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }
