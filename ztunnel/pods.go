package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// podManager keeps one podProxy per enrolled pod, driven by the node agent over ZDS.
// It implements zds.Handler; the ZDS client calls it sequentially.
//
// The certificate of every running pod's identity is held in the certificate manager (so it is
// renewed even while the pod is idle) from when its proxy starts until it is removed; after that
// the identity is dropped once unused for the manager's UnusedTTL.
type podManager struct {
	p     *Proxy
	retry time.Duration // between start attempts of a pending pod (5s)

	mu        sync.Mutex // guards pods, pending and certHolds
	pods      map[string]*podProxy
	pending   map[string]*pendingPod // pods whose proxy failed to start, retried in the background
	certHolds map[string]func()      // uid of a running pod -> release of its certificate hold

	// ownNS identifies the proxy's own network namespace, which a pod must not claim; the handle
	// is closed at once, only its identity (NetNS.Same) is used. Nil if it could not be opened.
	ownNS *redirect.NetNS
}

// pendingPod is a pod whose listeners could not be started (e.g. a port still held by a
// terminating proxy without SO_REUSEPORT). It is retried until it starts or is removed; while
// any pod is pending the proxy is not ready.
type pendingPod struct {
	info    zds.WorkloadInfo
	ns      *redirect.NetNS
	lastErr error
	stop    chan struct{} // closed when the pod is removed or the proxy shuts down
}

var _ zds.Handler = (*podManager)(nil)

func newPodManager(p *Proxy) *podManager {
	m := &podManager{p: p, retry: 5 * time.Second, pods: map[string]*podProxy{}, pending: map[string]*pendingPod{},
		certHolds: map[string]func(){}}
	if ns, err := redirect.CurrentNetNS(); err == nil {
		ns.Close()
		m.ownNS = ns
	} else {
		p.log.Warn("cannot open the proxy's own network namespace: pods sent in it are not refused", "error", err)
	}
	return m
}

// AddWorkload starts the listeners of a pod inside its network namespace. Adding a pod that
// already runs in the same namespace is a no-op; in a different one (the pod sandbox was
// recreated) the old proxy is replaced. If the listeners cannot be started the error goes back
// to the node agent as a NACK and the pod stays pending: it is retried in the background.
func (m *podManager) AddWorkload(ctx context.Context, uid string, info zds.WorkloadInfo, ns *redirect.NetNS) error {
	if m.ownNS != nil && ns.Same(m.ownNS) {
		// A confused or hostile node agent: the pod listeners would capture the node's own ports.
		ns.Close()
		return fmt.Errorf("pod %s/%s (uid %s): the network namespace sent is the proxy's own, not a pod's", info.Namespace, info.Name, uid)
	}
	m.mu.Lock()
	old := m.pods[uid]
	m.mu.Unlock()
	if old != nil {
		if old.ns.Same(ns) {
			ns.Close()
			return nil
		}
		// The recreated sandbox normally has the same identity: keep its certificate held across
		// the replacement rather than dropping and fetching it again.
		defer m.holdCert(old)()
		m.remove(ctx, uid)
	}
	m.dropPending(uid)
	pod, err := startPod(m.p, uid, info, ns)
	if err != nil {
		pp := &pendingPod{info: info, ns: ns, lastErr: err, stop: make(chan struct{})}
		m.mu.Lock()
		m.pending[uid] = pp
		m.mu.Unlock()
		go m.retryPending(uid, pp)
		m.p.log.Warn("pod proxy failed to start; retrying", "uid", uid, "pod", info.Namespace+"/"+info.Name,
			"retry", m.retry, "error", err)
		return err
	}
	release := m.holdCert(pod)
	m.mu.Lock()
	m.pods[uid] = pod
	m.certHolds[uid] = release
	m.mu.Unlock()
	m.p.log.Info("pod enrolled", "uid", uid, "pod", info.Namespace+"/"+info.Name, "netns", ns.String())
	return nil
}

// retryPending tries to start a pending pod every m.retry until it starts or is dropped.
func (m *podManager) retryPending(uid string, pp *pendingPod) {
	t := time.NewTicker(m.retry)
	defer t.Stop()
	for {
		select {
		case <-pp.stop:
			return
		case <-t.C:
		}
		pod, err := startPod(m.p, uid, pp.info, pp.ns)
		var release func()
		if err == nil {
			release = m.holdCert(pod)
		}
		m.mu.Lock()
		if m.pending[uid] != pp { // dropped while starting
			m.mu.Unlock()
			if err == nil {
				pod.close(context.Background())
				release()
			}
			return
		}
		if err != nil {
			pp.lastErr = err
			m.mu.Unlock()
			continue
		}
		delete(m.pending, uid)
		m.pods[uid] = pod
		m.certHolds[uid] = release
		m.mu.Unlock()
		m.p.log.Info("pod enrolled after retry", "uid", uid, "pod", pp.info.Namespace+"/"+pp.info.Name)
		return
	}
}

// dropPending forgets a pending pod and stops its retries.
func (m *podManager) dropPending(uid string) bool {
	m.mu.Lock()
	pp := m.pending[uid]
	delete(m.pending, uid)
	m.mu.Unlock()
	if pp == nil {
		return false
	}
	close(pp.stop)
	pp.ns.Close()
	return true
}

// pendingCount is the number of pods whose proxy failed to start and is being retried.
func (m *podManager) pendingCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// DelWorkload stops a pod's listeners and closes its connections: the pod is gone.
func (m *podManager) DelWorkload(ctx context.Context, uid string) error {
	if !m.remove(ctx, uid) && !m.dropPending(uid) {
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
	for uid := range m.pending {
		if !keep[uid] {
			stale = append(stale, uid)
		}
	}
	m.mu.Unlock()
	for _, uid := range stale {
		if !m.remove(ctx, uid) {
			m.dropPending(uid)
		}
	}
	return nil
}

func (m *podManager) remove(ctx context.Context, uid string) bool {
	m.mu.Lock()
	pod := m.pods[uid]
	delete(m.pods, uid)
	release := m.certHolds[uid]
	delete(m.certHolds, uid)
	m.mu.Unlock()
	if pod == nil {
		return false
	}
	start := time.Now()
	pod.close(ctx)
	if release != nil {
		release()
	}
	m.p.log.Info("pod removed", "uid", uid, "pod", pod.info.Namespace+"/"+pod.info.Name, "took", time.Since(start))
	return true
}

// drainAll stops every pod gracefully (process shutdown), all at once, giving open
// connections until ctx is done to finish.
func (m *podManager) drainAll(ctx context.Context) {
	m.mu.Lock()
	pods := m.pods
	m.pods = map[string]*podProxy{}
	holds := m.certHolds
	m.certHolds = map[string]func(){}
	var pending []string
	for uid := range m.pending {
		pending = append(pending, uid)
	}
	m.mu.Unlock()
	for _, uid := range pending {
		m.dropPending(uid)
	}
	var wg sync.WaitGroup
	for _, pod := range pods {
		wg.Go(func() { pod.drain(ctx) })
	}
	wg.Wait()
	for _, release := range holds {
		release()
	}
}

// holdCert holds the certificate of a pod's identity in the certificate manager, which fetches it
// now if it is not cached, and returns the release. The identity is the one the pod's HBONE
// listener presents at this moment (see podProxy.identity).
func (m *podManager) holdCert(pod *podProxy) (release func()) {
	return m.p.certs.Hold(pod.identity())
}

var (
	errPodClosed     = errors.New("pod removed")
	errDrainDeadline = errors.New("proxy shutting down: drain deadline reached")
)
