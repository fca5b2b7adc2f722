package testbed

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// PodSpec describes a pod to create.
type PodSpec struct {
	// Name is the pod name, unique in the cluster (whatever the namespace). Required.
	Name string
	// Namespace is the pod's namespace. Empty: "default".
	Namespace string
	// ServiceAccount is the pod's service account. Empty: "default".
	ServiceAccount string
	// Node is the name of the node the pod runs on. Required.
	Node string
	// Enrolled puts the pod in the mesh: the node agent installs its redirection and hands it to the
	// node's proxy, and its workload protocol is HBONE. False: a plain TCP workload. Enrolling needs
	// proxies (Config.Ztunnel).
	Enrolled bool
	// OmitFromConfig keeps the pod out of the proxies' local config. False: it is listed (HBONE if
	// enrolled, else TCP).
	OmitFromConfig bool
	// Protocol overrides the workload protocol in the config ("HBONE" or "TCP"), e.g. to list a
	// pod that is not enrolled as an HBONE workload served by a test's own HBONE server.
	// Empty: HBONE if enrolled, else TCP.
	Protocol string
	// Services makes the pod an endpoint of services: "namespace/hostname" -> service port -> target
	// port, e.g. {"sample/helloworld.sample.svc.cluster.local": {5000: 5000}}. Nil: none.
	Services map[string]map[uint16]uint16
	// Labels are the pod's labels; "app" and "version" (or their app.kubernetes.io forms) become the
	// workload's canonical name and revision. Nil: none.
	Labels map[string]string
	// Policies names the WorkloadSelector-scoped authorization policies that select the pod,
	// "<namespace>/<name>" (the workload's authorization_policies). The policies may be set
	// before or after the pod. Nil: none.
	Policies []string
}

// Pod is a pod of the cluster: a network namespace on a node.
type Pod struct {
	c      *Cluster
	rec    podRecord
	uid    string // the ZDS workload UID, random like a Kubernetes pod UID
	node   *node
	nsName string // network namespace name
	hostIf string // the veth end in the node's namespace
	ns     *redirect.NetNS

	mu      sync.Mutex // guards servers, nextSrv and gone
	servers map[int]func()
	nextSrv int
	gone    bool // deleted: new servers are refused
}

// AddPod creates a pod: its namespace, veth and address, then rewrites the local config and waits
// for the proxies to load it, then (if enrolled) has the node agent install the pod's redirection
// and hand it to the node's proxy, which has its listeners up when AddPod returns.
func (c *Cluster) AddPod(ctx context.Context, s PodSpec) (_ *Pod, err error) {
	s.Namespace = cmp.Or(s.Namespace, "default")
	s.ServiceAccount = cmp.Or(s.ServiceAccount, "default")
	if err := checkName("pod name", s.Name); err != nil {
		return nil, fmt.Errorf("add pod: %w", err)
	}
	if err := checkName("pod namespace", s.Namespace); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	if err := checkName("service account", s.ServiceAccount); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	if s.Protocol != "" && s.Protocol != "HBONE" && s.Protocol != "TCP" {
		return nil, fmt.Errorf("add pod %s: protocol %q: want HBONE or TCP", s.Name, s.Protocol)
	}
	if err := checkPolicyRefs(s.Policies); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	if s.Enrolled && c.cfg.Ztunnel == "" {
		return nil, fmt.Errorf("add pod %s: enrolled, but the cluster runs no proxies", s.Name)
	}
	p, err := c.reservePod(s)
	if err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	enrolling := false
	defer func() {
		if err != nil {
			c.mu.Lock()
			delete(c.pods, s.Name)
			c.mu.Unlock()
			if enrolling {
				// The node agent keeps a pod whose AddPod failed; make it forget it.
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				if derr := p.node.agent.DelPod(dctx, p.uid); derr != nil {
					err = errors.Join(err, derr)
				}
				cancel()
			}
			if terr := p.teardown(context.WithoutCancel(ctx)); terr != nil {
				err = errors.Join(err, terr)
			}
			if werr := c.WriteConfig(); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}()
	n := p.node
	c.log.Info("adding pod", "pod", s.Name, "node", s.Node, "ip", p.rec.IP, "netns", p.nsName, "enrolled", s.Enrolled)
	if err := c.ip.addNetNS(ctx, p.nsName); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	if err := c.ip.plug(ctx, n.netns, p.hostIf, n.bridge, p.nsName, p.rec.IP.String()+"/24"); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	if err := c.ip.run(ctx, "-n", p.nsName, "route", "add", "default", "via", hostAddr(n.podNet, 1).String()); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	if p.ns, err = redirect.OpenNetNS(netnsPath(p.nsName)); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	c.mu.Lock()
	c.pods[s.Name] = p
	c.mu.Unlock()
	if err := c.WriteConfig(); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	if err := c.WaitConfigApplied(ctx); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", s.Name, err)
	}
	if s.Enrolled {
		enrolling = true
		info := zds.WorkloadInfo{Name: s.Name, Namespace: s.Namespace, ServiceAccount: s.ServiceAccount}
		if err := n.agent.AddPod(ctx, p.uid, info, netnsPath(p.nsName)); err != nil {
			return nil, fmt.Errorf("add pod %s: node agent: %w", s.Name, err)
		}
	}
	return p, nil
}

// reservePod validates s against the cluster, reserves the name and allocates the address.
func (c *Cluster) reservePod(s PodSpec) (*Pod, error) {
	uid, err := newUID()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("cluster is closed")
	}
	if _, dup := c.pods[s.Name]; dup {
		return nil, errors.New("a pod with that name exists")
	}
	n := c.nodeLocked(s.Node)
	if n == nil {
		return nil, fmt.Errorf("no node %q", s.Node)
	}
	if n.nextPod >= 254 {
		return nil, fmt.Errorf("node %s: no pod addresses left", s.Node)
	}
	n.nextPod++
	services := make(map[string]map[uint16]uint16, len(s.Services))
	for k, v := range s.Services {
		services[k] = maps.Clone(v)
	}
	if len(services) == 0 {
		services = nil
	}
	p := &Pod{
		c:      c,
		uid:    uid,
		node:   n,
		nsName: n.netns + "p" + strconv.Itoa(n.nextPod),
		hostIf: c.runID + "p" + strconv.Itoa(n.nextPod),
		rec: podRecord{
			Name: s.Name, Namespace: s.Namespace, ServiceAccount: s.ServiceAccount,
			Node: n.spec.Name, Network: n.spec.Network, Cluster: n.spec.Cluster,
			Locality:       localLocality{Region: n.spec.Region, Zone: n.spec.Zone, Subzone: n.spec.Subzone},
			IP:             hostAddr(n.podNet, n.nextPod),
			Enrolled:       s.Enrolled,
			OmitFromConfig: s.OmitFromConfig,
			Protocol:       s.Protocol,
			Services:       services,
			Labels:         maps.Clone(s.Labels),
			Policies:       slices.Clone(s.Policies),
		},
		servers: map[int]func(){},
	}
	c.pods[s.Name] = nil
	return p, nil
}

// DeletePod removes a pod: the node agent tells the proxy it is gone (if enrolled), the local config
// is rewritten and loaded, the pod's servers are stopped and its namespace deleted. The pod is gone
// from the cluster even when an error is returned.
func (c *Cluster) DeletePod(ctx context.Context, name string) error {
	c.mu.Lock()
	p := c.pods[name]
	if p != nil {
		delete(c.pods, name)
	}
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("delete pod %s: no such pod", name)
	}
	c.log.Info("deleting pod", "pod", name, "node", p.rec.Node)
	var errs []error
	if p.rec.Enrolled {
		if err := p.node.agent.DelPod(ctx, p.uid); err != nil {
			errs = append(errs, fmt.Errorf("node agent: %w", err))
		}
	}
	if err := c.WriteConfig(); err != nil {
		errs = append(errs, err)
	} else if err := c.WaitConfigApplied(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := p.teardown(context.WithoutCancel(ctx)); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete pod %s: %w", name, err)
	}
	return nil
}

// UnenrollPod takes a running pod out of the mesh, as removing the namespace's
// istio.io/dataplane-mode label does: the node agent tells the proxy to drop it and removes its
// redirection rules, and the config lists it as a plain TCP workload. The pod keeps running.
func (c *Cluster) UnenrollPod(ctx context.Context, name string) error {
	c.mu.Lock()
	p := c.pods[name]
	enrolled := p != nil && p.rec.Enrolled
	if enrolled {
		p.rec.Enrolled = false
	}
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("unenroll pod %s: no such pod", name)
	}
	if !enrolled {
		return fmt.Errorf("unenroll pod %s: not enrolled", name)
	}
	c.log.Info("unenrolling pod", "pod", name, "node", p.rec.Node)
	if err := p.node.agent.DelPod(ctx, p.uid); err != nil {
		return fmt.Errorf("unenroll pod %s: node agent: %w", name, err)
	}
	if err := c.WriteConfig(); err != nil {
		return fmt.Errorf("unenroll pod %s: %w", name, err)
	}
	if err := c.WaitConfigApplied(ctx); err != nil {
		return fmt.Errorf("unenroll pod %s: %w", name, err)
	}
	return nil
}

// teardown stops the pod's servers and deletes its veth and namespace.
func (p *Pod) teardown(ctx context.Context) error {
	p.stopServers()
	var errs []error
	if p.ns != nil {
		if err := p.ns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	// Deleting the veth takes the pod off the network at once, even if something still holds the
	// namespace open.
	if err := p.c.ip.delLink(ctx, p.node.netns, p.hostIf); err != nil {
		errs = append(errs, err)
	}
	if err := p.c.ip.delNetNS(ctx, p.nsName); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopServers stops every server started on the pod and refuses new ones.
func (p *Pod) stopServers() {
	p.mu.Lock()
	p.gone = true
	p.mu.Unlock()
	p.StopServers()
}

// Name returns the pod's name.
func (p *Pod) Name() string { return p.rec.Name }

// Namespace returns the pod's namespace.
func (p *Pod) Namespace() string { return p.rec.Namespace }

// Node returns the name of the pod's node.
func (p *Pod) Node() string { return p.rec.Node }

// IP returns the pod's address.
func (p *Pod) IP() netip.Addr { return p.rec.IP }

// UID returns the pod's UID as sent to the proxy over ZDS.
func (p *Pod) UID() string { return p.uid }

// NetNS returns the pod's network namespace. It is closed when the pod is deleted.
func (p *Pod) NetNS() *redirect.NetNS { return p.ns }

// NetNSName returns the name of the pod's network namespace, for `ip netns exec`.
func (p *Pod) NetNSName() string { return p.nsName }

// newUID returns a random version-4 UUID.
func newUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate pod UID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}
