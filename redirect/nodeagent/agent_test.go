package nodeagent

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/inpod"
	"github.com/ztunnel-go/ztunnel/redirect/redirecttest"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// proxy is a minimal zds.Handler that reports calls on a channel.
type proxy struct{ events chan string }

func (p *proxy) AddWorkload(_ context.Context, uid string, _ zds.WorkloadInfo, ns *redirect.NetNS) error {
	ns.Close()
	p.events <- "add " + uid
	return nil
}

func (p *proxy) DelWorkload(_ context.Context, uid string) error {
	p.events <- "del " + uid
	return nil
}

func (p *proxy) Reconcile(context.Context, map[string]bool) error { return nil }

func TestAgentAddDelPod(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "iptables in a network namespace")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "ztunnel.sock")
	srv, err := zds.Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	p := &proxy{events: make(chan string, 8)}
	cliDone := make(chan error, 1)
	go func() { cliDone <- (&zds.Client{Path: path, Handler: p}).Run(ctx) }()
	defer func() {
		cancel()
		if err := <-cliDone; err != nil {
			t.Errorf("client: %v", err)
		}
		if err := <-srvDone; err != nil {
			t.Errorf("server: %v", err)
		}
	}()

	a := &Agent{ZDS: srv}
	pod := redirecttest.NewNetNS(t)
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	if err := a.AddPod(actx, "uid1", zds.WorkloadInfo{Name: "p", Namespace: "ns"}, pod.Path); err != nil {
		t.Fatalf("AddPod: %v", err)
	}
	if got := <-p.events; got != "add uid1" {
		t.Fatalf("proxy event %q, want add uid1", got)
	}
	if save := pod.Exec(t, "iptables-save"); !strings.Contains(save, "-j REDIRECT --to-ports 15001") {
		t.Fatalf("rules not applied in pod netns:\n%s", save)
	}
	// IPv6 is captured by default, link-local included.
	if save := pod.Exec(t, "ip6tables-save"); !strings.Contains(save, "-j REDIRECT --to-ports 15001") ||
		!strings.Contains(save, "-d fe80::/10") {
		t.Fatalf("IPv6 rules not applied in pod netns:\n%s", save)
	}
	if err := a.DelPod(actx, "uid1"); err != nil {
		t.Fatalf("DelPod: %v", err)
	}
	if got := <-p.events; got != "del uid1" {
		t.Fatalf("proxy event %q, want del uid1", got)
	}
	for _, prog := range []string{"iptables-save", "ip6tables-save"} {
		if save := pod.Exec(t, prog); strings.Contains(save, "ISTIO_") {
			t.Fatalf("%s: rules still present after DelPod:\n%s", prog, save)
		}
	}

	// With IPv6 refused, the pod's IPv6 TCP is reset instead.
	refuse := &Agent{ZDS: srv, Rules: inpod.Config{IPv6: inpod.IPv6Refuse}}
	pod4 := redirecttest.NewNetNS(t)
	if err := refuse.AddPod(actx, "uid4", zds.WorkloadInfo{Name: "r", Namespace: "ns"}, pod4.Path); err != nil {
		t.Fatalf("AddPod with IPv6 refused: %v", err)
	}
	<-p.events
	if save := pod4.Exec(t, "ip6tables-save"); !strings.Contains(save, "-A ISTIO_INPUT -p tcp -j REJECT --reject-with tcp-reset") {
		t.Fatalf("IPv6 refusal not applied in pod netns:\n%s", save)
	}
	if err := refuse.DelPod(actx, "uid4"); err != nil {
		t.Fatalf("DelPod uid4: %v", err)
	}
	<-p.events

	// A pod whose netns disappeared before the delete.
	gone := redirecttest.NewNetNS(t)
	if err := a.AddPod(actx, "uid2", zds.WorkloadInfo{Name: "q", Namespace: "ns"}, gone.Path); err != nil {
		t.Fatalf("AddPod uid2: %v", err)
	}
	<-p.events
	gone.Delete(t)
	if err := a.DelPod(actx, "uid2"); err != nil {
		t.Fatalf("DelPod with the netns gone: %v", err)
	}
	<-p.events

	if err := a.AddPod(actx, "uid3", zds.WorkloadInfo{}, "/nonexistent/netns"); err == nil {
		t.Errorf("AddPod with a missing netns succeeded")
	}
}
