package relay

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/bench/load"
	"github.com/ztunnel-go/ztunnel/certs"
)

var (
	serverID = certs.Identity{TrustDomain: "cluster.local", Namespace: "bench", ServiceAccount: "relay-b"}
	clientID = certs.Identity{TrustDomain: "cluster.local", Namespace: "bench", ServiceAccount: "relay-a"}
)

// issue writes certificate files for id from ca into a temporary directory.
func issue(t *testing.T, ca *certs.LocalCA, id certs.Identity) Files {
	t.Helper()
	wc, err := ca.Issue(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := WriteFiles(t.TempDir(), id.ServiceAccount, wc)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func newCA(t *testing.T) *certs.LocalCA {
	t.Helper()
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// startRelay runs cfg on 127.0.0.1 until the test ends and returns its address.
func startRelay(t *testing.T, cfg Config) string {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	ready := make(chan net.Addr, 1)
	cfg.Ready = func(a net.Addr) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("relay did not stop")
		}
	})
	select {
	case a := <-ready:
		return a.String()
	case err := <-done:
		t.Fatalf("relay Run: %v", err)
	}
	return ""
}

// pair starts backend <- relay B (TLS in) <- relay A (TLS out) and returns a dialer to relay A.
func pair(t *testing.T, clientFiles, serverFiles Files, peer string) load.Dialer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := load.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	stls, err := ServerTLS(serverFiles)
	if err != nil {
		t.Fatal(err)
	}
	b := startRelay(t, Config{Target: ln.Addr().String(), TLS: stls, AcceptTLS: true})
	ctls, err := ClientTLS(clientFiles, peer)
	if err != nil {
		t.Fatal(err)
	}
	a := startRelay(t, Config{Target: b, TLS: ctls})
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a)
	}
}

func TestRelayPair(t *testing.T) {
	ca := newCA(t)
	dial := pair(t, issue(t, ca, clientID), issue(t, ca, serverID), serverID.String())
	ctx := context.Background()
	tp, err := load.Throughput(ctx, dial, 2, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("throughput through the relays: %v", err)
	}
	if tp.Bytes < load.BufSize {
		t.Errorf("throughput moved %d bytes", tp.Bytes)
	}
	rtts, err := load.RTT(ctx, dial, 1024, time.Minute, 20)
	if err != nil || len(rtts) != 20 {
		t.Fatalf("rtt through the relays: %d samples, %v", len(rtts), err)
	}
	cr, err := load.ConnRate(ctx, dial, 4, time.Minute, 40)
	if err != nil || cr.Done != 40 {
		t.Fatalf("conn rate through the relays: %+v, %v", cr, err)
	}
}

// TestRelayRejects checks both mTLS checks: the server identity and the client's CA.
func TestRelayRejects(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	for _, tc := range []struct {
		name           string
		client, server Files
		peer           string
	}{
		{"wrong server identity", issue(t, ca, clientID), issue(t, ca, serverID), clientID.String()},
		{"client from another CA", issue(t, other, clientID), issue(t, ca, serverID), serverID.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The client keeps the CA of the server's files so only the tested check fails.
			tc.client.CA = tc.server.CA
			dial := pair(t, tc.client, tc.server, tc.peer)
			_, err := load.ConnRate(context.Background(), dial, 1, time.Minute, 3)
			if err == nil || !strings.Contains(err.Error(), "3 of 3 attempts failed") {
				t.Errorf("err = %v, want every attempt to fail", err)
			}
		})
	}
}

func TestRunStopsWithOpenConnections(t *testing.T) {
	ca := newCA(t)
	f := issue(t, ca, serverID)
	stls, err := ServerTLS(f)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() {
		defer wg.Done()
		runErr = Run(ctx, Config{Listen: "127.0.0.1:0", Target: "127.0.0.1:1", TLS: stls, AcceptTLS: true,
			Ready: func(a net.Addr) { ready <- a }})
	}()
	addr := <-ready
	c, err := net.Dial("tcp", addr.String()) // never handshakes
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond)
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel with a connection open")
	}
	if runErr != nil {
		t.Errorf("Run = %v, want nil after cancel", runErr)
	}
}

func TestConfigErrors(t *testing.T) {
	if err := Run(context.Background(), Config{Listen: "127.0.0.1:0"}); err == nil {
		t.Error("Run without Target and TLS: no error")
	}
	if _, err := ClientTLS(Files{}, ""); err == nil {
		t.Error("ClientTLS without peer: no error")
	}
	if _, err := ServerTLS(Files{Cert: "/nonexistent", Key: "/nonexistent", CA: "/nonexistent"}); err == nil {
		t.Error("ServerTLS with missing files: no error")
	}
}
