package ztunnel

import (
	"context"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/redirect/redirecttest"
	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// TestPendingPodRetried: a pod whose listeners cannot be bound (a port held by another
// socket without SO_REUSEPORT) is NACKed, reported Pending and keeps the proxy not ready; it
// starts on its own once the port is free, and a delete while pending cleans it up.
func TestPendingPodRetried(t *testing.T) {
	redirecttest.SkipUnlessRoot(t, "binds pod listeners inside a network namespace")
	p := newTestProxy(t, Config{})
	p.pods.retry = 50 * time.Millisecond
	netns := redirecttest.NewNetNS(t)
	blocker, err := netns.NS.Listen(context.Background(), "tcp", "0.0.0.0:15001", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info := zds.WorkloadInfo{Name: "pod", Namespace: "default", ServiceAccount: "default"}
	open := func() *redirect.NetNS {
		ns, err := redirect.OpenNetNS(netns.Path)
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	ctx := context.Background()
	if err := p.pods.AddWorkload(ctx, "uid-1", info, open()); err == nil {
		t.Fatal("AddWorkload succeeded with port 15001 taken")
	}
	if n := p.podEvents.pendingCount(); n != 1 {
		t.Fatalf("pending = %d, want 1", n)
	}
	if st := p.pods.dumpPods()["uid-1"].State; st != "Pending" {
		t.Fatalf("dump state = %q, want Pending", st)
	}
	time.Sleep(200 * time.Millisecond) // a few failed retries
	if n := p.pods.pendingCount(); n != 1 {
		t.Fatalf("still blocked: pending = %d, want 1", n)
	}
	blocker.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.pods.pod("uid-1") == nil {
		if time.Now().After(deadline) {
			t.Fatal("pending pod did not start after its port was freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := p.podEvents.pendingCount(); n != 0 {
		t.Errorf("pending = %d after the retry succeeded", n)
	}
	if st := p.pods.dumpPods()["uid-1"].State; st != "Up" {
		t.Errorf("dump state = %q, want Up", st)
	}
	// The retried pod really listens in its namespace.
	c, err := netns.NS.Dial(ctx, "tcp", "127.0.0.1:15008", redirect.SocketOptions{})
	if err != nil {
		t.Fatalf("HBONE listener after retry: %v", err)
	}
	c.Close()
	if err := p.pods.DelWorkload(ctx, "uid-1"); err != nil {
		t.Fatal(err)
	}

	// A pod deleted while pending stops being retried and releases its namespace.
	blocker2, err := netns.NS.Listen(ctx, "tcp", "0.0.0.0:15001", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer blocker2.Close()
	p.pods.AddWorkload(ctx, "uid-2", info, open())
	if err := p.pods.DelWorkload(ctx, "uid-2"); err != nil {
		t.Fatal(err)
	}
	if n := p.pods.pendingCount(); n != 0 {
		t.Errorf("pending = %d after deleting the pending pod", n)
	}
	blocker2.Close()
	time.Sleep(200 * time.Millisecond)
	if p.pods.pod("uid-2") != nil {
		t.Error("a deleted pending pod was started by a retry")
	}
}
