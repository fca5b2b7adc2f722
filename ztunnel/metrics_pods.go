package ztunnel

import (
	"context"
	"sync/atomic"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// podEvents is the ZDS handler the proxy gives the node agent client: it passes every event to
// the pod manager and counts what happened to the pod proxies (workload_manager_* metrics).
// pending is the number of pod proxies being started right now; together with the pods whose
// start failed and is being retried (podManager.pendingCount) it is what readiness waits on.
type podEvents struct {
	m       podSet
	metrics *proxyMetrics // nil: not counted

	pending atomic.Int64
}

var _ zds.Handler = (*podEvents)(nil)

// podSet is the pod manager as podEvents sees it; implemented by *podManager.
type podSet interface {
	zds.Handler
	pod(uid string) *podProxy        // the running proxy of pod uid, or nil
	podsByUID() map[string]*podProxy // a copy of the running proxies
	count() int                      // the number of running proxies
	pendingCount() int               // pods whose proxy failed to start and is retried
}

var _ podSet = (*podManager)(nil)

func (e *podEvents) AddWorkload(ctx context.Context, uid string, info zds.WorkloadInfo, ns *redirect.NetNS) error {
	e.pending.Add(1)
	defer e.pending.Add(-1)
	before := e.m.pod(uid)
	err := e.m.AddWorkload(ctx, uid, info, ns)
	if after := e.m.pod(uid); after != before {
		if before != nil {
			e.countStopped(1) // replaced: the pod's sandbox was recreated
		}
		if after != nil && e.metrics != nil {
			e.metrics.podsStarted.Inc()
		}
	}
	return err
}

func (e *podEvents) DelWorkload(ctx context.Context, uid string) error {
	before := e.m.pod(uid)
	err := e.m.DelWorkload(ctx, uid)
	if before != nil && e.m.pod(uid) != before {
		e.countStopped(1)
	}
	return err
}

func (e *podEvents) Reconcile(ctx context.Context, keep map[string]bool) error {
	before := e.m.podsByUID()
	err := e.m.Reconcile(ctx, keep)
	after := e.m.podsByUID()
	gone := 0
	for uid, pod := range before {
		if after[uid] != pod {
			gone++
		}
	}
	e.countStopped(gone)
	return err
}

func (e *podEvents) countStopped(n int) {
	if e.metrics != nil && n > 0 {
		e.metrics.podsStopped.Add(float64(n))
	}
}

// pendingCount is the number of pod proxies being started or waiting for a retry.
func (e *podEvents) pendingCount() int { return int(e.pending.Load()) + e.m.pendingCount() }

// pod returns the running proxy of pod uid, or nil.
func (m *podManager) pod(uid string) *podProxy {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pods[uid]
}

// podsByUID returns a copy of the running pod proxies.
func (m *podManager) podsByUID() map[string]*podProxy {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]*podProxy, len(m.pods))
	for uid, pod := range m.pods {
		out[uid] = pod
	}
	return out
}

// count is the number of running pod proxies.
func (m *podManager) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pods)
}
