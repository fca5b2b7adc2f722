package ztunnel

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// newAdminProxy builds a proxy from the local config file testdata/config_dump.yaml with
// the built-in CA; every server address is an ephemeral loopback port. Nothing is started.
func newAdminProxy(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	if cfg.LocalXDSPath == "" && cfg.LocalXDS == "" {
		cfg.LocalXDSPath = "testdata/config_dump.yaml"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	cfg.MetricsAddr, cfg.ReadinessAddr = "127.0.0.1:0", "127.0.0.1:0"
	if cfg.InPodUDS == "" {
		cfg.InPodUDS = "/nonexistent/ztunnel.sock" // the ZDS client retries; no pod is enrolled
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// addTestPod enrolls a pod shell with the given live connections, for the dump only (the
// proxy must not be run: a drain would need real listeners).
func addTestPod(p *Proxy, uid string, info zds.WorkloadInfo, conns ...ConnView) {
	pod := &podProxy{p: p, uid: uid, info: info, log: p.log}
	for _, v := range conns {
		tc := &trackedConn{cancel: func(error) {}}
		pod.conns.track(tc)
		pod.conns.set(tc, v)
	}
	p.pods.mu.Lock()
	p.pods.pods[uid] = pod
	p.pods.mu.Unlock()
}

// do sends one request to the admin handler.
func do(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func TestAdminRoutes(t *testing.T) {
	p := newAdminProxy(t, Config{})
	h := p.admin.handler()
	tests := []struct {
		method, target string
		status         int
		contentType    string // prefix; "" = not checked
		body           string // substring; "" = not checked
	}{
		{"GET", "/", 200, "text/html", `href="config_dump"`},
		{"GET", "/config_dump", 200, "application/json", `"workloads"`},
		{"POST", "/config_dump", 200, "application/json", `"workloads"`},
		{"GET", "/logging", 405, "text/plain", "Invalid HTTP method"},
		{"GET", "/quitquitquit", 405, "", ""},
		{"PUT", "/quitquitquit", 405, "", ""},
		{"GET", "/debug/pprof/", 200, "text/html", "goroutine"},
		{"GET", "/debug/pprof/goroutine?debug=1", 200, "text/plain", "goroutine profile"},
		{"GET", "/debug/pprof/nosuchprofile", 404, "", ""},
		{"GET", "/debug/pprof/profile?seconds=0", 400, "text/plain", "1 to 300"},
		{"GET", "/debug/pprof/profile?seconds=301", 400, "text/plain", "1 to 300"},
		{"GET", "/debug/pprof/profile?seconds=x", 400, "text/plain", "1 to 300"},
		{"GET", "/stats/prometheus", 404, "", ""},
		{"GET", "/config_dump/extra", 404, "", ""},
		{"GET", "/nope", 404, "", ""},
	}
	for _, tt := range tests {
		rec := do(t, h, tt.method, tt.target)
		if rec.Code != tt.status {
			t.Errorf("%s %s: status %d, want %d (body %q)", tt.method, tt.target, rec.Code, tt.status, rec.Body.String())
			continue
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
			t.Errorf("%s %s: Content-Type %q, want %q...", tt.method, tt.target, ct, tt.contentType)
		}
		if !strings.Contains(rec.Body.String(), tt.body) {
			t.Errorf("%s %s: body %q does not contain %q", tt.method, tt.target, rec.Body.String(), tt.body)
		}
		if tt.status == 404 && !strings.HasPrefix(tt.target, "/debug/") && rec.Body.Len() != 0 {
			t.Errorf("%s %s: 404 body %q, want empty", tt.method, tt.target, rec.Body.String())
		}
	}
	select {
	case <-p.quit:
		t.Error("a non-POST /quitquitquit triggered a shutdown")
	default:
	}
}

// TestAdminQuitWaitsForDrain: POST /quitquitquit calls Quit, then answers once the drain has
// finished (or, without one, at the termination deadline).
func TestAdminQuitWaitsForDrain(t *testing.T) {
	p := newAdminProxy(t, Config{TerminationDeadline: 10 * time.Second})
	h := p.admin.handler()
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- do(t, h, "POST", "/quitquitquit") }()
	select {
	case <-p.quit:
	case <-time.After(5 * time.Second):
		t.Fatal("POST /quitquitquit did not call Quit")
	}
	select {
	case rec := <-done:
		t.Fatalf("answered (%d %q) before the drain finished", rec.Code, rec.Body.String())
	case <-time.After(100 * time.Millisecond):
	}
	p.admin.finished()
	select {
	case rec := <-done:
		if rec.Code != 200 || rec.Body.String() != "shutdown now\n" {
			t.Errorf("answer %d %q, want 200 %q", rec.Code, rec.Body.String(), "shutdown now\n")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer after the drain finished")
	}

	// Without a drain, the termination deadline bounds the wait.
	p2 := newAdminProxy(t, Config{TerminationDeadline: 200 * time.Millisecond})
	start := time.Now()
	rec := do(t, p2.admin.handler(), "POST", "/quitquitquit")
	if rec.Code != 200 || rec.Body.String() != "shutdown now\n" {
		t.Errorf("answer %d %q, want 200 %q", rec.Code, rec.Body.String(), "shutdown now\n")
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("answered after %s, want about the 200ms deadline", d)
	}
}

// TestAdminServerLifecycle runs the proxy: the admin server listens on loopback only, serves
// the dump, and a real POST /quitquitquit shuts the proxy down and is answered.
func TestAdminServerLifecycle(t *testing.T) {
	p := newAdminProxy(t, Config{AdminAddr: "localhost:0", TerminationDeadline: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()
	select {
	case <-p.admin.bound:
	case <-time.After(5 * time.Second):
		t.Fatal("admin server did not start listening")
	}
	addrs := p.admin.Addrs()
	if len(addrs) == 0 {
		t.Fatal("no admin address")
	}
	for _, a := range addrs {
		ip := a.(*net.TCPAddr).IP
		if !ip.IsLoopback() {
			t.Errorf("admin listens on %s: not loopback", a)
		}
	}
	base := "http://" + addrs[0].String()
	resp, err := http.Get(base + "/config_dump")
	if err != nil {
		t.Fatalf("GET /config_dump: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"cluster1//v1/Pod/default/client"`) {
		t.Errorf("GET /config_dump: %d %.200q", resp.StatusCode, body)
	}
	// The port is reachable on loopback, and through no other address of the host.
	port := addrs[0].(*net.TCPAddr).Port
	for _, ip := range nonLoopbackIPs(t) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			t.Errorf("admin port %d reachable on %s", port, ip)
		}
	}

	resp, err = http.Post(base+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatalf("POST /quitquitquit: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "shutdown now\n" {
		t.Errorf("POST /quitquitquit: %d %q", resp.StatusCode, body)
	}
	select {
	case err := <-runDone:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after /quitquitquit")
	}
	if _, err := net.DialTimeout("tcp", addrs[0].String(), time.Second); err == nil {
		t.Error("admin server still accepts connections after shutdown")
	}
}

func TestAdminRejectsNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "example.com:0", "nonsense"} {
		p := newAdminProxy(t, Config{AdminAddr: addr})
		if err := p.admin.Run(context.Background()); err == nil {
			t.Errorf("AdminAddr %q: Run returned nil, want an error", addr)
		}
	}
}

// TestAdminRetriesBusyPort: while another process holds the port, the server waits for it.
func TestAdminRetriesBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := newAdminProxy(t, Config{AdminAddr: busy.Addr().String()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.admin.Run(ctx) }()
	time.Sleep(200 * time.Millisecond)
	busy.Close()
	select {
	case <-p.admin.bound:
	case err := <-done:
		t.Fatalf("Run returned %v while waiting for the port", err)
	case <-time.After(5 * time.Second):
		t.Fatal("did not take the port once it was free")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	p.admin.finished()
}

func nonLoopbackIPs(t *testing.T) []net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("interface addresses: %v", err)
	}
	var out []net.IP
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			out = append(out, ipn.IP)
		}
	}
	return out
}
