package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// proc is a helper process (a relay or stunnel) running in a node's network namespace.
type proc struct{ *testbed.Process }

// startInNetNS runs args in netns (testbed.StartInNetNS) with the harness's environment.
func startInNetNS(name, netns, logPath string, args ...string) (*proc, error) {
	p, err := testbed.StartInNetNS(name, netns, logPath, nil, args...)
	if err != nil {
		return nil, err
	}
	return &proc{p}, nil
}

// waitListening polls addr from inside ns until it accepts a TCP connection, the process exits
// or timeout passes.
func (p *proc) waitListening(ctx context.Context, ns *redirect.NetNS, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if err := p.Exited(); err != nil {
			return err
		}
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		c, err := ns.Dial(dctx, "tcp", addr, redirect.SocketOptions{})
		dcancel()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not listening on %s after %v: %w", p.Name, addr, timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
