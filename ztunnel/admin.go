package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// adminServer is the admin endpoint (ztunnel-behavior.md §7.1): HTTP/1.1 on loopback only,
// serving /config_dump, /logging, /quitquitquit, /debug/pprof/ and an index at /.
//
// Its lifetime follows the proxy's: Run listens until the proxy starts shutting down, then
// stops accepting while the requests in flight finish in the background; finished (called by
// Proxy.Run once it has drained) lets a /quitquitquit waiting for the drain answer, and waits
// for the server to close.
type adminServer struct {
	p   *Proxy
	log *slog.Logger

	bound     chan struct{} // closed once Run listens
	closed    chan struct{} // closed once the server is closed (after Run returned)
	drained   chan struct{} // closed by finished
	drainOnce sync.Once

	mu    sync.Mutex // guards addrs
	addrs []net.Addr // where Run listens
}

func newAdminServer(p *Proxy) *adminServer {
	return &adminServer{
		p:       p,
		log:     p.log.With("component", "admin"),
		bound:   make(chan struct{}),
		closed:  make(chan struct{}),
		drained: make(chan struct{}),
	}
}

// Run serves until ctx is done. While the port is taken (an older proxy sharing the network
// namespace is still draining) it retries every second. An address that is not loopback, or a
// listener failing, is an error.
func (a *adminServer) Run(ctx context.Context) error {
	lns, err := a.listen(ctx)
	if err != nil || lns == nil {
		return err
	}
	srv := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, len(lns))
	addrs := make([]net.Addr, 0, len(lns))
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr())
		go func() { errc <- srv.Serve(ln) }()
	}
	a.mu.Lock()
	a.addrs = addrs
	a.mu.Unlock()
	close(a.bound)
	a.log.Info("admin server listening", "addresses", fmt.Sprint(addrs))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	// Stop accepting now; let requests in flight finish, a /quitquitquit among them waiting
	// for the drain (finished), within the drain deadline.
	go func() {
		defer close(a.closed)
		sctx, cancel := context.WithTimeout(context.Background(), a.p.cfg.TerminationDeadline+5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		srv.Close()
	}()
	if serveErr != nil {
		return fmt.Errorf("admin server: %w", serveErr)
	}
	return nil
}

// finished tells the server the proxy has drained, and waits (up to a second) until the
// requests still in flight were answered and the server closed.
func (a *adminServer) finished() {
	a.drainOnce.Do(func() { close(a.drained) })
	select {
	case <-a.bound:
	default:
		return // never listened
	}
	select {
	case <-a.closed:
	case <-time.After(time.Second):
	}
}

// Addrs returns the addresses the server listens on; nil before it does.
func (a *adminServer) Addrs() []net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addrs
}

// listen binds cfg.AdminAddr. "localhost" means 127.0.0.1 and, when the host has IPv6, ::1
// on the same port. It returns nil, nil if ctx ends while the port is taken.
func (a *adminServer) listen(ctx context.Context) ([]net.Listener, error) {
	addr := a.p.cfg.AdminAddr
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	hosts := []string{"127.0.0.1", "::1"}
	if host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("admin address %q: want localhost or a loopback IP (the admin endpoint is unauthenticated)", addr)
		}
		hosts = []string{ip.String()}
	}
	warned := false
	for {
		lns, err := listenLoopback(hosts, port)
		if err == nil {
			return lns, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("admin server: %w", err)
		}
		if !warned {
			a.log.Warn("admin port in use, retrying every second (an older proxy still draining?)", "address", addr, "error", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Second):
		}
	}
}

// listenLoopback listens on hosts[0]:port, then on the other hosts at the port the first got.
// Only the first host is required: the others are skipped if their address family is missing.
func listenLoopback(hosts []string, port string) ([]net.Listener, error) {
	var lns []net.Listener
	for i, h := range hosts {
		ln, err := net.Listen("tcp", net.JoinHostPort(h, port))
		if err != nil {
			if i > 0 && !errors.Is(err, syscall.EADDRINUSE) {
				continue // e.g. no IPv6 loopback
			}
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		if i == 0 {
			port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) // port 0: share the chosen one
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// handler routes by exact path; anything unknown is 404 with an empty body.
func (a *adminServer) handler() http.Handler {
	logging := serveLogging(a.p.cfg.LogControl, a.log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch path := r.URL.Path; {
		case path == "/":
			serveDashboard(w)
		case path == "/config_dump":
			a.p.serveConfigDump(w, r)
		case path == "/logging":
			logging(w, r)
		case path == "/quitquitquit":
			a.serveQuit(w, r)
		case path == "/debug/pprof/profile":
			serveCPUProfile(w, r)
		case path == "/debug/pprof/cmdline":
			pprof.Cmdline(w, r)
		case path == "/debug/pprof/symbol":
			pprof.Symbol(w, r)
		case path == "/debug/pprof/trace":
			pprof.Trace(w, r)
		case strings.HasPrefix(path, "/debug/pprof/"):
			pprof.Index(w, r) // the index and the named profiles: heap, goroutine, allocs...
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
}

// serveQuit starts a graceful shutdown (POST only, else 405) and answers once the proxy has
// drained or the termination deadline has passed.
func (a *adminServer) serveQuit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	a.log.Info("shutdown requested (/quitquitquit)")
	a.p.Quit()
	deadline := time.NewTimer(a.p.cfg.TerminationDeadline)
	defer deadline.Stop()
	select {
	case <-a.drained:
		a.log.Info("shutdown completed gracefully")
	case <-deadline.C:
		a.log.Warn("graceful shutdown did not complete in time, terminating now", "deadline", a.p.cfg.TerminationDeadline)
	case <-r.Context().Done():
		return
	}
	plainText(w, http.StatusOK, "shutdown now\n")
}

// serveCPUProfile captures a CPU profile (pprof protobuf) for seconds (1-300, default 10).
// The sampling rate is Go's fixed 100 Hz.
func serveCPUProfile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch s := q.Get("seconds"); {
	case s == "":
		q.Set("seconds", "10")
	default:
		if n, err := strconv.Atoi(s); err != nil || n < 1 || n > 300 {
			plainText(w, http.StatusBadRequest, "invalid seconds: want a whole number from 1 to 300\n")
			return
		}
	}
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	r2.Form = nil
	pprof.Profile(w, r2)
}

var adminEndpoints = [][2]string{
	{"config_dump", "the proxy's state: workloads, services, policies, certificates, pods and connections (JSON)"},
	{"logging", "POST: show log levels; ?level=<level> or ?level=<component>=<level>,... changes them; &reset restores the start-up levels"},
	{"quitquitquit", "POST: drain and shut down"},
	{"debug/pprof/", "Go runtime profiles (heap, goroutine, allocs, block, mutex, threadcreate)"},
	{"debug/pprof/profile", "CPU profile; ?seconds=1-300 (default 10)"},
	{"debug/pprof/trace", "execution trace; ?seconds=N (default 1)"},
}

func serveDashboard(w http.ResponseWriter) {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><head><title>ztunnel admin</title></head><body>\n<h1>ztunnel admin</h1>\n<table>\n")
	for _, e := range adminEndpoints {
		fmt.Fprintf(&b, "<tr><td><a href=\"%s\">%s</a></td><td>%s</td></tr>\n", e[0], e[0], html.EscapeString(e[1]))
	}
	b.WriteString("</table>\n</body></html>\n")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(b.String()))
}
