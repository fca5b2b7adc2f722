package ztunnel

import (
	"context"
	"errors"
	"sort"
	"sync"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// podManager keeps one podProxy per enrolled pod, driven by the node agent over ZDS.
// It implements zds.Handler; the ZDS client calls it sequentially.
type podManager struct {
	p *Proxy

	mu   sync.Mutex // guards pods
	pods map[string]*podProxy
}

var _ zds.Handler = (*podManager)(nil)

func newPodManager(p *Proxy) *podManager {
	return &podManager{p: p, pods: map[string]*podProxy{}}
}

// AddWorkload starts the listeners of a pod inside its network namespace. Adding a pod that
// already runs in the same namespace is a no-op; in a different one (the pod sandbox was
// recreated) the old proxy is replaced. An error is sent back to the node agent as a NACK.
func (m *podManager) AddWorkload(ctx context.Context, uid string, info zds.WorkloadInfo, ns *redirect.NetNS) error {
	m.mu.Lock()
	old := m.pods[uid]
	m.mu.Unlock()
	if old != nil {
		if old.ns.Same(ns) {
			ns.Close()
			return nil
		}
		m.remove(ctx, uid)
	}
	pod, err := startPod(m.p, uid, info, ns)
	if err != nil {
		ns.Close()
		return err
	}
	m.mu.Lock()
	m.pods[uid] = pod
	m.mu.Unlock()
	m.p.log.Info("pod enrolled", "uid", uid, "pod", info.Namespace+"/"+info.Name, "netns", ns.String())
	return nil
}

// DelWorkload stops a pod's listeners and closes its connections: the pod is gone.
func (m *podManager) DelWorkload(ctx context.Context, uid string) error {
	if !m.remove(ctx, uid) {
		m.p.log.Debug("delete of unknown pod", "uid", uid)
	}
	return nil
}

// Reconcile removes every pod that the node agent's snapshot no longer lists.
func (m *podManager) Reconcile(ctx context.Context, keep map[string]bool) error {
	m.mu.Lock()
	var stale []string
	for uid := range m.pods {
		if !keep[uid] {
			stale = append(stale, uid)
		}
	}
	m.mu.Unlock()
	for _, uid := range stale {
		m.remove(ctx, uid)
	}
	return nil
}

func (m *podManager) remove(ctx context.Context, uid string) bool {
	m.mu.Lock()
	pod := m.pods[uid]
	delete(m.pods, uid)
	m.mu.Unlock()
	if pod == nil {
		return false
	}
	pod.close(ctx)
	m.p.log.Info("pod removed", "uid", uid, "pod", pod.info.Namespace+"/"+pod.info.Name)
	return true
}

// drainAll stops every pod gracefully (process shutdown), all at once, giving open
// connections until ctx is done to finish.
func (m *podManager) drainAll(ctx context.Context) {
	m.mu.Lock()
	pods := m.pods
	m.pods = map[string]*podProxy{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, pod := range pods {
		wg.Go(func() { pod.drain(ctx) })
	}
	wg.Wait()
}

func (m *podManager) uids() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.pods))
	for uid := range m.pods {
		out = append(out, uid)
	}
	sort.Strings(out)
	return out
}

var (
	errPodClosed     = errors.New("pod removed")
	errDrainDeadline = errors.New("proxy shutting down: drain deadline reached")
)
