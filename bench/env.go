package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/ztunnel-go/ztunnel/bench/load"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// Topology of a run.
const (
	nodeA, nodeB = "node1", "node2"
	serverPort   = 17000
	tlsPortA     = 16001 // tls relay A, on node A's address
	tlsPortB     = 16002 // tls relay B, on node B's address
	stunPortA    = 16003
	stunPortB    = 16004
	benchNS      = "bench"
	procGrace    = 3 * time.Second
)

// path is one way of reaching a server from a client pod.
type path struct {
	name string
	dial load.Dialer
	// pids are the processes whose CPU the path's proxies use (nil for direct).
	pids []int
	// pidNames name pids in the detail series ("node1", "node2").
	pidNames []string
}

// env is the running topology: the cluster, the pods, the servers and the relays.
type env struct {
	cfg Config
	c   *testbed.Cluster
	// dcli, dsrv: plain pods (direct, tls and stunnel paths); mcli, msrv: enrolled (mesh).
	dcli, dsrv, mcli, msrv *testbed.Pod
	servers                []*load.Server
	procs                  []*proc
	nodeNS                 map[string]*redirect.NetNS // by node name
	paths                  []*path
}

// setup builds the cluster, the pods, the servers and every path of cfg.
func setup(ctx context.Context, cfg Config) (_ *env, err error) {
	log := cfg.Logger
	c, err := testbed.New(ctx, testbed.Config{
		Nodes:         []testbed.NodeSpec{{Name: nodeA}, {Name: nodeB}},
		Ztunnel:       cfg.Ztunnel,
		StateRoot:     cfg.StateRoot,
		Logger:        log,
		ProxyLogLevel: cfg.ProxyLogLevel,
		ExtraEnv:      cfg.ProxyEnv,
	})
	if err != nil {
		return nil, fmt.Errorf("build testbed: %w", err)
	}
	e := &env{cfg: cfg, c: c, nodeNS: map[string]*redirect.NetNS{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close())
		}
	}()
	for _, p := range []struct {
		pod      **testbed.Pod
		name     string
		node     string
		enrolled bool
	}{
		{&e.dcli, "direct-client", nodeA, false},
		{&e.dsrv, "direct-server", nodeB, false},
		{&e.mcli, "mesh-client", nodeA, true},
		{&e.msrv, "mesh-server", nodeB, true},
	} {
		*p.pod, err = c.AddPod(ctx, testbed.PodSpec{Name: p.name, Namespace: benchNS, ServiceAccount: p.name,
			Node: p.node, Enrolled: p.enrolled})
		if err != nil {
			return nil, err
		}
	}
	for _, p := range []*testbed.Pod{e.dsrv, e.msrv} {
		ln, err := p.NetNS().Listen(ctx, "tcp", ":"+strconv.Itoa(serverPort), redirect.SocketOptions{})
		if err != nil {
			return nil, fmt.Errorf("server in pod %s: %w", p.Name(), err)
		}
		e.servers = append(e.servers, load.Serve(ln))
	}
	for _, n := range []string{nodeA, nodeB} {
		ns, err := redirect.OpenNetNS("/run/netns/" + c.NodeNetNS(n))
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n, err)
		}
		e.nodeNS[n] = ns
	}
	for _, name := range cfg.Paths {
		var p *path
		switch name {
		case PathDirect:
			p = &path{name: name, dial: podDialer(e.dcli, addrPort(e.dsrv.IP(), serverPort))}
		case PathMesh:
			p = &path{name: name, dial: podDialer(e.mcli, addrPort(e.msrv.IP(), serverPort)),
				pids: []int{c.ProxyPID(nodeA), c.ProxyPID(nodeB)}, pidNames: []string{nodeA, nodeB}}
		case PathTLS:
			p, err = e.startTLSRelays(ctx)
		case PathStunnel:
			p, err = e.startStunnel(ctx)
		}
		if err != nil {
			return nil, err
		}
		e.paths = append(e.paths, p)
		log.Info("path ready", "path", name, "pids", p.pids)
	}
	return e, nil
}

// podDialer dials addr from inside pod.
func podDialer(pod *testbed.Pod, addr string) load.Dialer {
	return func(ctx context.Context) (net.Conn, error) { return pod.Dial(ctx, addr) }
}

func addrPort(ip netip.Addr, port uint16) string {
	return netip.AddrPortFrom(ip, port).String()
}

// path returns the named path, or nil.
func (e *env) path(name string) *path {
	for _, p := range e.paths {
		if p.name == name {
			return p
		}
	}
	return nil
}

// checkAlive returns an error if a helper process or a proxy has exited.
func (e *env) checkAlive() error {
	for _, p := range e.procs {
		if err := p.Exited(); err != nil {
			return err
		}
	}
	for _, pt := range e.paths {
		for i, pid := range pt.pids {
			if _, err := cpuSeconds(pid); err != nil {
				return fmt.Errorf("path %s: process %s (pid %d) is gone: %w", pt.name, pt.pidNames[i], pid, err)
			}
		}
	}
	return nil
}

// close stops the helpers and servers and removes the cluster.
func (e *env) close() error {
	for _, p := range e.procs {
		p.Stop(procGrace)
	}
	for _, s := range e.servers {
		s.Close()
	}
	for _, ns := range e.nodeNS {
		ns.Close()
	}
	if err := e.c.Close(); err != nil {
		return fmt.Errorf("close testbed: %w", err)
	}
	return nil
}
