package ztunnel

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/redirecttest"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// TestPodCertificateHeld: the identity of an enrolled pod is held in the certificate manager
// while the pod runs, even unused for longer than UnusedTTL, and dropped when it is removed.
func TestPodCertificateHeld(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "binds pod listeners inside a network namespace")
	p := newTestProxy(t, Config{})
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p.certs = certs.NewManager(certs.ManagerConfig{Issuer: ca, UnusedTTL: 50 * time.Millisecond, Logger: p.log})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.certs.Run(ctx)
	netns := redirecttest.NewNetNS(t)
	ns, err := redirect.OpenNetNS(netns.Path)
	if err != nil {
		t.Fatal(err)
	}
	info := zds.WorkloadInfo{Name: "pod", Namespace: "default", ServiceAccount: "held"}
	if err := p.pods.AddWorkload(ctx, "uid-1", info, ns); err != nil {
		t.Fatal(err)
	}
	want := "spiffe://cluster.local/ns/default/sa/held"
	ids := func() []string {
		var s []string
		for _, st := range p.certs.Dump() {
			s = append(s, st.Identity)
		}
		return s
	}
	time.Sleep(300 * time.Millisecond) // six UnusedTTLs without a use
	if got := ids(); !slices.Equal(got, []string{want}) {
		t.Fatalf("while the pod runs: certificates %v, want [%s]", got, want)
	}
	if err := p.pods.DelWorkload(ctx, "uid-1"); err != nil {
		t.Fatal(err)
	}
	if got := ids(); len(got) != 0 {
		t.Errorf("after the pod was removed: certificates %v, want none", got)
	}
}
