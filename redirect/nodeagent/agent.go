package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/inpod"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// Agent enrolls pods into the mesh. Its methods are safe for concurrent use,
// but calls for the same uid should not overlap.
type Agent struct {
	// ZDS is the server the node proxies connect to; required.
	ZDS *zds.Server
	// Rules configures the in-pod redirection; the zero value is
	// inpod.DefaultConfig(), which captures IPv6 (link-local included) as
	// well as IPv4. Proxies that do not listen on IPv6 (IPV6_ENABLED=false)
	// need Rules.IPv6 = inpod.IPv6Refuse, or the pod's IPv6 would reach
	// nothing.
	Rules inpod.Config
	// Logger; nil: slog.Default().
	Logger *slog.Logger

	mu    sync.Mutex        // guards paths
	paths map[string]string // uid -> netns path, for DelPod
}

func (a *Agent) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.Default()
	}
	return a.Logger
}

// AddPod applies the redirection rules inside the pod's network namespace,
// then announces the pod to the proxies over ZDS and waits for their ACK
// (see zds.Server.AddPod). On a ZDS failure the rules stay in place: traffic
// is then captured but not served, the same fail-closed choice istio-cni makes,
// and a retry of AddPod is idempotent.
func (a *Agent) AddPod(ctx context.Context, uid string, info zds.WorkloadInfo, netnsPath string) error {
	if a.ZDS == nil {
		return errors.New("nodeagent: nil ZDS server")
	}
	ns, err := redirect.OpenNetNS(netnsPath)
	if err != nil {
		return fmt.Errorf("add pod %s: %w", uid, err)
	}
	err = inpod.Apply(ns, inpod.Rules(a.Rules))
	ns.Close()
	if err != nil {
		return fmt.Errorf("add pod %s: %w", uid, err)
	}
	a.mu.Lock()
	if a.paths == nil {
		a.paths = map[string]string{}
	}
	a.paths[uid] = netnsPath
	a.mu.Unlock()
	if err := a.ZDS.AddPod(ctx, uid, info, netnsPath); err != nil {
		return fmt.Errorf("add pod %s: %w", uid, err)
	}
	a.logger().Info("pod enrolled", "uid", uid, "pod", info.Namespace+"/"+info.Name, "ipv6", a.Rules.IPv6)
	return nil
}

// DelPod tells the proxies the pod is gone, then removes the redirection
// rules if the pod's network namespace still exists.
func (a *Agent) DelPod(ctx context.Context, uid string) error {
	if a.ZDS == nil {
		return errors.New("nodeagent: nil ZDS server")
	}
	zdsErr := a.ZDS.DelPod(ctx, uid)
	a.mu.Lock()
	path, known := a.paths[uid]
	delete(a.paths, uid)
	a.mu.Unlock()
	var rulesErr error
	if known {
		ns, err := redirect.OpenNetNS(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			// The namespace is gone, and its rules with it.
		case err != nil:
			rulesErr = err
		default:
			rulesErr = inpod.Remove(ns)
			ns.Close()
		}
	}
	if err := errors.Join(zdsErr, rulesErr); err != nil {
		return fmt.Errorf("delete pod %s: %w", uid, err)
	}
	a.logger().Info("pod removed", "uid", uid)
	return nil
}
