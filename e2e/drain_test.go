package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// drainCluster is a two-node cluster with a chosen drain deadline.
func drainCluster(t *testing.T, deadline time.Duration) *testbed.Cluster {
	t.Helper()
	return newCluster(t, testbed.Config{
		Nodes:    []testbed.NodeSpec{{Name: "node1"}, {Name: "node2"}},
		ExtraEnv: []string{"CONNECTION_TERMINATION_DEADLINE=" + deadline.String()},
	})
}

// TestDrainKeepsOpenConnections: SIGTERM on both proxies does not cut a connection that is in
// use; each proxy exits as soon as the connection ends, well before its deadline.
func TestDrainKeepsOpenConnections(t *testing.T) {
	c := drainCluster(t, 20*time.Second)
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", Enrolled: true})
	serve(t, server, 8080, echo)
	conn := dial(t, client, netip.AddrPortFrom(server.IP(), 8080).String())
	if err := roundTrip(conn, "before"); err != nil {
		t.Fatal(err)
	}
	// Idle for longer than the proxies' idle threshold (2 s): both copies of the connection park
	// and give up their goroutines; the next bytes must wake them.
	time.Sleep(3 * time.Second)
	if err := roundTrip(conn, "after idling"); err != nil {
		t.Fatalf("round trip after idling: %v", err)
	}

	start := time.Now()
	exited := make(chan error, 2)
	for _, n := range []string{"node1", "node2"} {
		go func() { exited <- c.TerminateProxy(n, 30*time.Second) }()
	}
	// Keep using the connection through both draining proxies for a while.
	for i := range 10 {
		time.Sleep(100 * time.Millisecond)
		if err := roundTrip(conn, fmt.Sprintf("draining %d", i)); err != nil {
			t.Fatalf("round trip %d while the proxies drain: %v", i, err)
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("a proxy exited while a connection was still open: %v", err)
	default:
	}
	conn.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(conn); err != nil || len(b) != 0 {
		t.Fatalf("end of stream: %q, %v", b, err)
	}
	for range 2 {
		if err := <-exited; err != nil {
			t.Errorf("proxy exit: %v", err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("proxies took %s to exit after the last connection ended, want well under the 20s deadline", d)
	}
}

// TestDrainDeadlineClosesTheRest: a connection still open (and idle) at the termination deadline
// is closed and the proxy exits.
func TestDrainDeadlineClosesTheRest(t *testing.T) {
	c := drainCluster(t, 2*time.Second)
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", Enrolled: true})
	serve(t, server, 8080, echo)
	conn := dial(t, client, netip.AddrPortFrom(server.IP(), 8080).String())
	if err := roundTrip(conn, "hello"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // idle: its copies are parked when the deadline comes
	start := time.Now()
	if err := c.TerminateProxy("node1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond || d > 6*time.Second {
		t.Errorf("proxy exited %s after SIGTERM, want about the 2s deadline", d)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("connection after the deadline: read %d, %v; want it closed", n, err)
	}
}

// TestUpgradeLosesNoConnection: while a stream of new connections runs from a pod on node1 to
// a pod on node2, both nodes' proxies are replaced by new processes (SO_REUSEPORT handover);
// not one connection attempt fails.
func TestUpgradeLosesNoConnection(t *testing.T) {
	c := drainCluster(t, 10*time.Second)
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", Enrolled: true})
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", Enrolled: true})
	serve(t, server, 8080, echo)
	addr := netip.AddrPortFrom(server.IP(), 8080).String()

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var firstErrs []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := tryEcho(client, addr, fmt.Sprintf("w%d-%d", w, i)); err != nil {
					failed.Add(1)
					mu.Lock()
					if len(firstErrs) < 5 {
						firstErrs = append(firstErrs, err)
					}
					mu.Unlock()
				} else {
					ok.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range []string{"node2", "node1"} {
		before := ok.Load()
		if err := c.UpgradeProxy(ctx, n, 20*time.Second); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("upgrade %s: %v", n, err)
		}
		time.Sleep(300 * time.Millisecond)
		if ok.Load() == before {
			t.Errorf("no connection succeeded during and after the upgrade of %s", n)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d connections succeeded, %d failed during two proxy upgrades", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d connection attempts failed during the handover; first: %v", failed.Load(), firstErrs)
	}
	// Traffic really goes through the new proxies.
	waitLog(t, c, "node1", "connection complete", "direction=outbound", "dst.addr="+addr)
}
