package ztunnel

import (
	"context"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/workload"
)

// countingIssuer issues from a local CA and records which identities were asked for.
type countingIssuer struct {
	ca *certs.LocalCA
	mu sync.Mutex
	n  map[string]int
}

func (c *countingIssuer) Issue(ctx context.Context, id certs.Identity) (*certs.WorkloadCert, error) {
	c.mu.Lock()
	c.n[id.String()]++
	c.mu.Unlock()
	return c.ca.Issue(ctx, id)
}

func TestPrefetchCerts(t *testing.T) {
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	iss := &countingIssuer{ca: ca, n: map[string]int{}}
	p := &Proxy{cfg: Config{NodeName: "node1"}.withDefaults(), store: workload.NewStore()}
	p.log = p.cfg.Logger
	p.certs = certs.NewManager(certs.ManagerConfig{Issuer: iss})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.certs.Run(ctx)
	done := make(chan error)
	go func() { done <- p.prefetchCerts(ctx) }()

	wl := func(name, sa, node string, proto workload.Protocol) *workload.Workload {
		w := lbWorkload(name, "", workload.Locality{})
		w.ServiceAccount, w.Node, w.Protocol = sa, node, proto
		return w
	}
	publish := func(wls ...*workload.Workload) {
		snap, err := workload.NewSnapshot(wls, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.store.Replace(snap)
	}
	held := func() []string {
		ids := []string{}
		for _, st := range p.certs.Dump() {
			ids = append(ids, st.Identity)
		}
		sort.Strings(ids)
		return ids
	}
	waitHeld := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !slices.Equal(held(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("certificates held = %v, want %v", held(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a := "spiffe://cluster.local/ns/default/sa/a"
	b := "spiffe://cluster.local/ns/default/sa/b"

	// Node-local HBONE workloads get certificates; TCP workloads and other nodes' do not.
	publish(wl("a1", "a", "node1", workload.ProtocolHBONE), wl("b1", "b", "node1", workload.ProtocolHBONE),
		wl("c1", "c", "node1", workload.ProtocolTCP), wl("d1", "d", "node2", workload.ProtocolHBONE))
	waitHeld(a, b)
	// A second workload of identity a, then the first one leaving: a stays.
	publish(wl("a2", "a", "node1", workload.ProtocolHBONE), wl("b1", "b", "node1", workload.ProtocolHBONE))
	waitHeld(a, b)
	// The last workload of b leaves: b is forgotten.
	publish(wl("a2", "a", "node1", workload.ProtocolHBONE))
	waitHeld(a)
	iss.mu.Lock()
	if iss.n[a] != 1 {
		t.Errorf("identity a issued %d times, want once", iss.n[a])
	}
	iss.mu.Unlock()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("prefetchCerts returned %v", err)
	}
}
