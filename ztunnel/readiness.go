package ztunnel

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Readiness tasks, named as the reference names them (ztunnel-behavior.md §7.4).
const (
	// taskStateManager is done once the workload config is complete: the local config is
	// loaded, or the first xDS responses of every type were applied.
	taskStateManager = "state manager"
	// taskWorkloadManager is done while the node agent (ZDS) connection's snapshot has been
	// processed and no pod proxy is being started.
	taskWorkloadManager = "workload proxy manager"
)

// readiness is the proxy's readiness state: ready when no task is blocked and no pod proxy is
// pending. Safe for concurrent use.
type readiness struct {
	pendingPods func() int // pod proxies being started; nil: none

	mu      sync.Mutex // guards blocked
	blocked map[string]bool
}

// newReadiness returns a state with tasks blocked.
func newReadiness(pendingPods func() int, tasks ...string) *readiness {
	r := &readiness{pendingPods: pendingPods, blocked: map[string]bool{}}
	for _, t := range tasks {
		r.blocked[t] = true
	}
	return r
}

// block marks task as not done (again).
func (r *readiness) block(task string) {
	r.mu.Lock()
	r.blocked[task] = true
	r.mu.Unlock()
}

// unblock marks task as done.
func (r *readiness) unblock(task string) {
	r.mu.Lock()
	delete(r.blocked, task)
	r.mu.Unlock()
}

// setZDS is zds.Client.OnConnect: the node agent's snapshot was processed (true), or the
// connection ended (false).
func (r *readiness) setZDS(connected bool) {
	if connected {
		r.unblock(taskWorkloadManager)
	} else {
		r.block(taskWorkloadManager)
	}
}

// pending returns the tasks not done yet, sorted; empty when ready.
func (r *readiness) pending() []string {
	r.mu.Lock()
	out := make([]string, 0, len(r.blocked)+1)
	for t := range r.blocked {
		out = append(out, t)
	}
	r.mu.Unlock()
	if r.pendingPods != nil && r.pendingPods() > 0 && !slices.Contains(out, taskWorkloadManager) {
		out = append(out, taskWorkloadManager)
	}
	slices.Sort(out)
	return out
}

// ServeHTTP answers GET /healthz/ready as the reference does: 200 "ready\n", or 500
// "not ready, pending: <task>, <task>\n". Other methods get 405, other paths 404.
func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/healthz/ready" {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if p := r.pending(); len(p) > 0 {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "not ready, pending: %s\n", strings.Join(p, ", "))
		return
	}
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "ready\n")
}
