package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ztunnel-go/ztunnel/bench/relay"
	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// relayStartTimeout bounds the wait for a relay or stunnel to listen.
const relayStartTimeout = 15 * time.Second

// relayIdentity is the SPIFFE identity of relay side (a or b) of a path.
func relayIdentity(pathName, side string) certs.Identity {
	return certs.Identity{TrustDomain: testbed.TrustDomain, Namespace: benchNS, ServiceAccount: pathName + "-relay-" + side}
}

// relayCerts issues certificates from the run's CA for both relays of a path and writes them as
// PEM files into the run's work directory.
func (e *env) relayCerts(ctx context.Context, pathName string) (a, b relay.Files, err error) {
	caCert, caKey := e.c.CAFiles()
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{CertFile: caCert, KeyFile: caKey, TrustDomain: testbed.TrustDomain})
	if err != nil {
		return a, b, fmt.Errorf("%s relays: load run CA: %w", pathName, err)
	}
	var files [2]relay.Files
	for i, side := range []string{"a", "b"} {
		id := relayIdentity(pathName, side)
		wc, err := ca.Issue(ctx, id)
		if err != nil {
			return a, b, fmt.Errorf("%s relays: %w", pathName, err)
		}
		if files[i], err = relay.WriteFiles(e.c.Dir(), pathName+"-relay-"+side, wc); err != nil {
			return a, b, fmt.Errorf("%s relays: %w", pathName, err)
		}
	}
	return files[0], files[1], nil
}

// startPair starts side B (in node B, forwarding to the direct server pod) and then side A (in
// node A, forwarding to B), waits for both to listen and returns the path through them.
func (e *env) startPair(ctx context.Context, name string, argsB, argsA []string, addrA, addrB string) (*path, error) {
	var pids []int
	for _, s := range []struct {
		side, node, addr string
		args             []string
	}{
		{"b", nodeB, addrB, argsB},
		{"a", nodeA, addrA, argsA},
	} {
		p, err := startInNetNS(name+" relay "+s.side, e.c.NodeNetNS(s.node),
			filepath.Join(e.c.Dir(), name+"-relay-"+s.side+".log"), s.args...)
		if err != nil {
			return nil, err
		}
		e.procs = append(e.procs, p)
		if err := p.waitListening(ctx, e.nodeNS[s.node], s.addr, relayStartTimeout); err != nil {
			return nil, err
		}
		pids = append(pids, p.PID())
	}
	// pids are in B, A order; report A first.
	pids[0], pids[1] = pids[1], pids[0]
	return &path{name: name, dial: podDialer(e.dcli, addrA), pids: pids, pidNames: []string{nodeA, nodeB}}, nil
}

// startTLSRelays starts the Go TLS relay pair, one process of this binary per node.
func (e *env) startTLSRelays(ctx context.Context) (*path, error) {
	fa, fb, err := e.relayCerts(ctx, PathTLS)
	if err != nil {
		return nil, err
	}
	addrA := addrPort(e.c.NodeIP(nodeA), tlsPortA)
	addrB := addrPort(e.c.NodeIP(nodeB), tlsPortB)
	target := addrPort(e.dsrv.IP(), serverPort)
	argsB := []string{e.cfg.Self, "relay", "-accept-tls", "-listen", addrB, "-target", target,
		"-cert", fb.Cert, "-key", fb.Key, "-ca", fb.CA}
	argsA := []string{e.cfg.Self, "relay", "-listen", addrA, "-target", addrB,
		"-cert", fa.Cert, "-key", fa.Key, "-ca", fa.CA, "-peer", relayIdentity(PathTLS, "b").String()}
	return e.startPair(ctx, PathTLS, argsB, argsA, addrA, addrB)
}

// startStunnel starts the stunnel pair, one stunnel process per node.
func (e *env) startStunnel(ctx context.Context) (*path, error) {
	fa, fb, err := e.relayCerts(ctx, PathStunnel)
	if err != nil {
		return nil, err
	}
	addrA := addrPort(e.c.NodeIP(nodeA), stunPortA)
	addrB := addrPort(e.c.NodeIP(nodeB), stunPortB)
	confs := map[string]string{
		"a": stunnelConf(stunnelSide{client: true, accept: addrA, target: addrB, files: fa}),
		"b": stunnelConf(stunnelSide{accept: addrB, target: addrPort(e.dsrv.IP(), serverPort), files: fb}),
	}
	args := map[string][]string{}
	for side, conf := range confs {
		path := filepath.Join(e.c.Dir(), "stunnel-"+side+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return nil, fmt.Errorf("stunnel: write config: %w", err)
		}
		args[side] = []string{e.cfg.Stunnel, path}
	}
	return e.startPair(ctx, PathStunnel, args["b"], args["a"], addrA, addrB)
}
