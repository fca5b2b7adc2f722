package ztunnel

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// probe asks h for path with method and returns the status and body.
func probe(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadinessStateMachine(t *testing.T) {
	var pendingPods atomic.Int64
	r := newReadiness(func() int { return int(pendingPods.Load()) }, taskStateManager, taskWorkloadManager)
	type want struct {
		code int
		body string
	}
	steps := []struct {
		name string
		do   func()
		want want
	}{
		{"start", func() {}, want{500, "not ready, pending: state manager, workload proxy manager\n"}},
		{"config synced", func() { r.unblock(taskStateManager) }, want{500, "not ready, pending: workload proxy manager\n"}},
		{"zds snapshot processed", func() { r.setZDS(true) }, want{200, "ready\n"}},
		{"a pod proxy starting", func() { pendingPods.Add(1) }, want{500, "not ready, pending: workload proxy manager\n"}},
		{"pod proxy started", func() { pendingPods.Add(-1) }, want{200, "ready\n"}},
		{"zds connection lost", func() { r.setZDS(false) }, want{500, "not ready, pending: workload proxy manager\n"}},
		{"lost with a pod pending too", func() { pendingPods.Add(1) }, want{500, "not ready, pending: workload proxy manager\n"}},
		{"reconnected", func() { pendingPods.Add(-1); r.setZDS(true) }, want{200, "ready\n"}},
		{"unblock twice is harmless", func() { r.unblock(taskStateManager) }, want{200, "ready\n"}},
	}
	for _, s := range steps {
		s.do()
		code, body := probe(t, r, http.MethodGet, "/healthz/ready")
		if code != s.want.code || body != s.want.body {
			t.Errorf("%s: %d %q, want %d %q", s.name, code, body, s.want.code, s.want.body)
		}
	}
	if code, _ := probe(t, r, http.MethodPost, "/healthz/ready"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz/ready: %d, want 405", code)
	}
	if code, _ := probe(t, r, http.MethodGet, "/healthz"); code != http.StatusNotFound {
		t.Errorf("GET /healthz: %d, want 404", code)
	}
}

// TestRunReadinessAndMetrics runs a whole proxy (local config, no pods) against a node agent
// with no pods: it is not ready until the agent's snapshot was processed, then ready, and its
// metrics are served on the metrics port. No root needed.
func TestRunReadinessAndMetrics(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "zds.sock")
	p := newTestProxy(t, Config{MetricsAddr: "127.0.0.1:0", ReadinessAddr: "127.0.0.1:0", InPodUDS: sock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})

	readyURL := "http://" + waitServed(t, p, "readiness").String() + "/healthz/ready"
	metricsURL := "http://" + waitServed(t, p, "metrics").String() + "/metrics"
	if code, body := get(t, readyURL); code != 500 || body != "not ready, pending: workload proxy manager\n" {
		t.Fatalf("before the node agent: %d %q", code, body)
	}

	srv, err := zds.Listen(sock, p.log)
	if err != nil {
		t.Fatal(err)
	}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() { srv.Run(agentCtx); close(agentDone) }()
	t.Cleanup(func() { stopAgent(); <-agentDone })

	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, readyURL)
		if code == 200 && body == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after the node agent's snapshot: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := get(t, metricsURL)
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	fams := parseText(t, body)
	for _, name := range []string{"istio_build", "workload_manager_active_proxy_count", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func waitServed(t *testing.T, p *Proxy, name string) fmt.Stringer {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if a := p.served.get(name); a != nil {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s server never listened", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}
