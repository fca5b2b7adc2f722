package ztunnel

import (
	"context"
	"strings"
	"testing"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// A node agent that sends the proxy's own network namespace as a pod's is refused: the pod's
// listeners would capture the node's ports.
func TestAddWorkloadRefusesOwnNetNS(t *testing.T) {
	p := newTestProxy(t, Config{})
	ns, err := redirect.CurrentNetNS()
	if err != nil {
		t.Skip("cannot open this process's network namespace:", err)
	}
	err = p.pods.AddWorkload(context.Background(), "uid-1", zds.WorkloadInfo{Name: "evil", Namespace: "ns1"}, ns)
	if err == nil || !strings.Contains(err.Error(), "proxy's own") {
		t.Fatalf("AddWorkload with the proxy's own netns = %v, want a refusal", err)
	}
	if p.pods.count() != 0 || p.pods.pendingCount() != 0 {
		t.Errorf("the refused pod was recorded (%d running, %d pending)", p.pods.count(), p.pods.pendingCount())
	}
}
