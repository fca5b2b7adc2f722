package testbed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// configLoadedMsg is the text of the proxy's log line after it (re)loads its local config; the line
// carries the file's hex SHA-256 as attribute sha256=<hex>.
const configLoadedMsg = "local config loaded"

// startProxies starts a node agent and a proxy in every node, then waits for the first config load.
func (c *Cluster) startProxies(ctx context.Context) error {
	for _, n := range c.nodes {
		n.sockPath = filepath.Join(c.dir, n.spec.Name+".zds.sock")
		n.logPath = filepath.Join(c.dir, n.spec.Name+".log")
		a, err := startNodeAgent(n.sockPath, c.log.With("node", n.spec.Name))
		if err != nil {
			return err
		}
		n.agent = a
		env := []string{
			"PATH=" + os.Getenv("PATH"),
			"TRUST_DOMAIN=" + TrustDomain,
			"NODE_NAME=" + n.spec.Name,
			"CLUSTER_ID=" + n.spec.Cluster,
			"NETWORK=" + n.spec.Network,
			"INPOD_UDS=" + n.sockPath,
			"LOG_LEVEL=" + c.cfg.ProxyLogLevel,
		}
		if c.istiod != nil {
			n.tokenPath = filepath.Join(c.dir, n.spec.Name+".token")
			if err := os.WriteFile(n.tokenPath, []byte(c.nodeToken(n)+"\n"), 0o600); err != nil {
				return fmt.Errorf("write token of %s: %w", n.spec.Name, err)
			}
			env = append(env, c.istiod.nodeEnv(n, n.tokenPath)...)
		} else {
			env = append(env, "LOCAL_XDS_PATH="+c.configFile(n.spec.Network), "XDS_ADDRESS=", "CA_CERT="+c.caCert, "CA_KEY="+c.caKey)
		}
		env = append(env, c.cfg.ExtraEnv...)
		n.env, n.proxyGen = env, 1
		p, err := startProxy(n.spec.Name, n.netns, c.cfg.Ztunnel, env, n.logPath)
		if err != nil {
			return err
		}
		n.proxy = p
		if err := writeIdent(filepath.Join(c.stateDir, proxyPrefix+n.spec.Name), p.ident); err != nil {
			return err
		}
		c.log.Info("proxy started", "node", n.spec.Name, "pid", p.ident.pid, "log", n.logPath)
	}
	wctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	if err := c.WaitConfigApplied(wctx); err != nil {
		var tails strings.Builder
		c.writeProxyLogTails(&tails, 5)
		return fmt.Errorf("start proxies: %w\n%s", err, strings.TrimRight(tails.String(), "\n"))
	}
	return nil
}

// UpgradeProxy replaces a node's proxy the way a DaemonSet rolling update does: a new proxy
// process starts (log in a new file, see ProxyLog), connects to the node agent and takes over
// every pod, binding its listeners next to the old ones (SO_REUSEPORT); then the old process
// gets SIGTERM and drains. It returns once the old process has exited, with an error if it did
// not exit cleanly within grace.
func (c *Cluster) UpgradeProxy(ctx context.Context, nodeName string, grace time.Duration) error {
	c.mu.Lock()
	n := c.nodeLocked(nodeName)
	c.mu.Unlock()
	if n == nil || n.proxy == nil {
		return fmt.Errorf("upgrade proxy: no proxy on node %q", nodeName)
	}
	old := n.proxy
	n.proxyGen++
	logPath := filepath.Join(c.dir, fmt.Sprintf("%s.%d.log", n.spec.Name, n.proxyGen))
	p, err := startProxy(n.spec.Name, n.netns, c.cfg.Ztunnel, n.env, logPath)
	if err != nil {
		return fmt.Errorf("upgrade proxy on %s: %w", nodeName, err)
	}
	if err := writeIdent(filepath.Join(c.stateDir, proxyPrefix+n.spec.Name+fmt.Sprint(n.proxyGen)), p.ident); err != nil {
		p.Stop(time.Second)
		return err
	}
	c.log.Info("proxy started (upgrade)", "node", nodeName, "pid", p.ident.pid, "log", logPath)
	if err := n.agent.waitSynced(ctx, 2); err != nil {
		p.Stop(time.Second)
		return fmt.Errorf("upgrade proxy on %s: new proxy did not take over the pods: %w\n%s", nodeName, err, p.LogTail(20))
	}
	n.proxy, n.logPath = p, logPath
	c.log.Info("terminating old proxy", "node", nodeName, "pid", old.ident.pid)
	return old.Terminate(grace)
}

// TerminateProxy sends SIGTERM to a node's proxy and waits up to grace for it to exit. It returns
// an error if the proxy did not exit cleanly (status 0) in time; it is killed then.
func (c *Cluster) TerminateProxy(nodeName string, grace time.Duration) error {
	c.mu.Lock()
	n := c.nodeLocked(nodeName)
	c.mu.Unlock()
	if n == nil || n.proxy == nil {
		return fmt.Errorf("terminate proxy: no proxy on node %q", nodeName)
	}
	return n.proxy.Terminate(grace)
}

// proxyProc is one running proxy process.
type proxyProc struct {
	*Process
	ident procIdent

	mu      sync.Mutex      // guards offset, partial, hashes
	offset  int64           // bytes of the log already scanned
	partial []byte          // an incomplete last line
	hashes  map[string]bool // config hashes the proxy reported loading
}

// startProxy runs binary in the network namespace ns with env, stdout and stderr to logPath.
func startProxy(node, ns, binary string, env []string, logPath string) (*proxyProc, error) {
	proc, err := StartInNetNS("proxy on "+node, ns, logPath, env, binary)
	if err != nil {
		return nil, err
	}
	p := &proxyProc{Process: proc, hashes: map[string]bool{}}
	p.ident, err = identify(proc.PID())
	if err != nil {
		// A proxy that exits at once (e.g. on bad config) may be reaped before identify: report
		// its exit and log rather than the missing /proc entry.
		if xerr := p.ExitedWithin(100 * time.Millisecond); xerr != nil {
			return nil, fmt.Errorf("start proxy on %s: %w", node, xerr)
		}
		p.Stop(time.Second)
		return nil, fmt.Errorf("start proxy on %s: %w", node, err)
	}
	return p, nil
}

// loaded reports whether the proxy logged loading the config with this hash. It scans the part of
// the log written since the last call.
func (p *proxyProc) loaded(hash string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.Open(p.LogPath)
	if err != nil {
		return false, fmt.Errorf("read proxy log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(p.offset, io.SeekStart); err != nil {
		return false, fmt.Errorf("read proxy log: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return false, fmt.Errorf("read proxy log: %w", err)
	}
	p.offset += int64(len(b))
	data := append(p.partial, b...)
	lines := bytes.Split(data, []byte("\n"))
	p.partial = append([]byte(nil), lines[len(lines)-1]...)
	for _, l := range lines[:len(lines)-1] {
		if h, ok := parseLoadedLine(string(l)); ok {
			p.hashes[h] = true
		}
	}
	return p.hashes[hash], nil
}

// parseLoadedLine extracts the hash from a "local config loaded" log line, in slog text
// (sha256=<hex>) or JSON ("sha256":"<hex>") form.
func parseLoadedLine(line string) (string, bool) {
	if !strings.Contains(line, configLoadedMsg) {
		return "", false
	}
	for _, key := range []string{"sha256=", `"sha256":"`, `"sha256": "`} {
		if i := strings.Index(line, key); i >= 0 {
			rest := line[i+len(key):]
			end := strings.IndexFunc(rest, func(r rune) bool {
				return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F')
			})
			if end < 0 {
				end = len(rest)
			}
			if end > 0 {
				return strings.ToLower(rest[:end]), true
			}
		}
	}
	return "", false
}

// writeProxyLogTails prints the last n lines of every proxy's and gateway's log.
func (c *Cluster) writeProxyLogTails(w io.Writer, n int) {
	for _, nd := range c.nodes {
		if nd.proxy != nil {
			fmt.Fprintf(w, "--- last lines of the proxy log of %s (%s):\n%s\n", nd.spec.Name, nd.logPath, nd.proxy.LogTail(n))
		}
	}
	for _, g := range c.gateways {
		c.mu.Lock()
		p := g.proc
		c.mu.Unlock()
		if p != nil {
			fmt.Fprintf(w, "--- last lines of the log of the gateway of %s (%s):\n%s\n", g.rec.Network, p.LogPath, p.LogTail(n))
		}
	}
}
