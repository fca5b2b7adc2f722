package testbed

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ztunnel-go/ztunnel/redirect/inpod"
	"github.com/ztunnel-go/ztunnel/redirect/nodeagent"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// podAgent is the node agent (istio-cni's role) of one node. Implemented by *nodeAgent.
type podAgent interface {
	// AddPod installs the pod's redirection and hands its namespace to the node's proxy; when it
	// returns nil the pod's listeners are up.
	AddPod(ctx context.Context, uid string, info zds.WorkloadInfo, netnsPath string) error
	// DelPod tells the node's proxy that the pod is gone.
	DelPod(ctx context.Context, uid string) error
	// waitSynced waits until n connected proxies have taken over every pod (snapshot ACKed).
	waitSynced(ctx context.Context, n int) error
	// close stops the ZDS server.
	close()
}

var _ podAgent = (*nodeAgent)(nil)

// nodeAgent runs a ZDS server on a unix socket and a nodeagent.Agent on top of it.
type nodeAgent struct {
	*nodeagent.Agent
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// podRules is the redirection the node agents install in enrolled pods: IPv4 and IPv6 (link-local
// included) captured, since the proxies listen dual-stack (IPV6_ENABLED is left at true).
var podRules = inpod.Config{IPv6: inpod.IPv6Capture}

// startNodeAgent listens on socketPath (the proxy's INPOD_UDS) and serves ZDS until close.
func startNodeAgent(socketPath string, logger *slog.Logger) (*nodeAgent, error) {
	srv, err := zds.Listen(socketPath, logger)
	if err != nil {
		return nil, fmt.Errorf("start node agent: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &nodeAgent{Agent: &nodeagent.Agent{ZDS: srv, Rules: podRules, Logger: logger}, cancel: cancel}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		srv.Run(ctx)
	}()
	return a, nil
}

func (a *nodeAgent) waitSynced(ctx context.Context, n int) error { return a.ZDS.WaitSynced(ctx, n) }

func (a *nodeAgent) close() {
	a.cancel()
	a.wg.Wait()
}
