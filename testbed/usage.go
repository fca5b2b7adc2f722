package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// ProxyUsage is what a node's proxy process holds at one moment.
type ProxyUsage struct {
	Goroutines int    // from the proxy's own goroutine profile (admin /debug/pprof/goroutine)
	FDs        int    // open descriptors (/proc/<pid>/fd)
	RSSKiB     uint64 // resident memory (VmRSS)
}

func (u ProxyUsage) String() string {
	return fmt.Sprintf("%d goroutines, %d descriptors, %d KiB resident", u.Goroutines, u.FDs, u.RSSKiB)
}

// ProxyUsage reads what the named node's proxy holds now.
func (c *Cluster) ProxyUsage(ctx context.Context, node string) (ProxyUsage, error) {
	pid := c.ProxyPID(node)
	if pid == 0 {
		return ProxyUsage{}, fmt.Errorf("proxy usage: no proxy on node %q", node)
	}
	var u ProxyUsage
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return u, fmt.Errorf("proxy usage of %s: %w", node, err)
	}
	u.FDs = len(ents)
	if u.RSSKiB, err = ReadRSS(pid); err != nil {
		return u, fmt.Errorf("proxy usage of %s: %w", node, err)
	}
	if u.Goroutines, err = c.proxyGoroutines(ctx, node); err != nil {
		return u, fmt.Errorf("proxy usage of %s: %w", node, err)
	}
	return u, nil
}

// proxyGoroutines reads the goroutine count from the first line of the proxy's goroutine profile
// ("goroutine profile: total N"), from inside the node's namespace (the admin port is localhost
// only).
func (c *Cluster) proxyGoroutines(ctx context.Context, node string) (int, error) {
	ns, err := redirect.OpenNetNS("/run/netns/" + c.NodeNetNS(node))
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(ctx, "tcp", addr, redirect.SocketOptions{})
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:15000/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	n, ok := strings.CutPrefix(first, "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile: first line %q", first)
	}
	return strconv.Atoi(n)
}

// ReadRSS returns the resident set size of process pid (VmRSS in /proc/<pid>/status), in KiB.
func ReadRSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	kib, err := ParseVmRSS(b)
	if err != nil {
		return 0, fmt.Errorf("read rss of %d: %w", pid, err)
	}
	return kib, nil
}

// ParseVmRSS returns the VmRSS line's value ("VmRSS:   1234 kB") of a /proc/<pid>/status, in KiB.
func ParseVmRSS(b []byte) (uint64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: VmRSS line %q: want \"<n> kB\"", line)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: VmRSS %q: %w", f[0], err)
		}
		return n, nil
	}
	return 0, errors.New("status: no VmRSS line (kernel thread or exited process?)")
}
