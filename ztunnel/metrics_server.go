package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// bindRetry is how often a server whose port is taken tries again.
const bindRetry = 500 * time.Millisecond

// serveHTTP serves h on addr until ctx is done; it returns nil then. If addr is in use, as when
// the previous proxy in this network namespace is still draining during an upgrade, it keeps
// trying every bindRetry until it gets the port, logging once. Any other listen error is
// returned. bound, if set, is called with the listening address.
func serveHTTP(ctx context.Context, name, addr string, h http.Handler, log *slog.Logger, bound func(net.Addr)) error {
	ln, err := listenRetry(ctx, name, addr, log)
	if err != nil || ln == nil {
		return err
	}
	if bound != nil {
		bound(ln.Addr())
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	log.Debug("serving", "server", name, "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s server on %s: %w", name, addr, err)
	}
	return nil
}

// listenRetry listens on addr, waiting while the address is in use. It returns a nil listener
// and no error when ctx ends first.
func listenRetry(ctx context.Context, name, addr string, log *slog.Logger) (net.Listener, error) {
	var lc net.ListenConfig
	warned := false
	for {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err == nil {
			if warned {
				log.Info("port free again: serving", "server", name, "addr", addr)
			}
			return ln, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s server: listen on %s: %w", name, addr, err)
		}
		if !warned {
			log.Warn("address in use, retrying until it is free", "server", name, "addr", addr)
			warned = true
		}
		t := time.NewTimer(bindRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
	}
}

// servedAddrs records where the proxy's HTTP servers listen, by server name. The zero value is
// ready to use.
type servedAddrs struct {
	mu sync.Mutex // guards m
	m  map[string]net.Addr
}

func (s *servedAddrs) set(name string) func(net.Addr) {
	return func(a net.Addr) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.m == nil {
			s.m = map[string]net.Addr{}
		}
		s.m[name] = a
	}
}

// get returns the address server name listens on, nil until it does.
func (s *servedAddrs) get(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[name]
}
