package e2e

import (
	"context"
	"io"
	"net"
	"net/netip"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/testbed"
)

// TestPodRemovalWithStuckPeers: removing a pod whose 100 HBONE connections go to a peer that
// stopped reading (its receive buffers and ours full, the proxy's writes blocked) takes well under
// a second (issue 10, item 3: each close waited 5 s for its TLS close_notify, one after another, on
// the single ZDS goroutine).
func TestPodRemovalWithStuckPeers(t *testing.T) {
	const n = 100
	c := newCluster(t, testbed.Config{
		Nodes:    []testbed.NodeSpec{{Name: "node1"}, {Name: "node2"}},
		ExtraEnv: []string{"POOL_MAX_STREAMS_PER_CONNECTION=1"}, // a connection per stream
	})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true})
	// The peer is in the config as an HBONE workload with service account "peer", but no proxy
	// serves it: the test plays that node's proxy, and stops reading after the first bytes.
	peer := addPod(t, c, testbed.PodSpec{Name: "peer", Node: "node2", ServiceAccount: "peer", Protocol: "HBONE"})
	caCert, caKey := c.CAFiles()
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{CertFile: caCert, KeyFile: caKey})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(context.Background(), certs.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "peer"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := peer.NetNS().Listen(context.Background(), "tcp", "0.0.0.0:15008", redirect.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stuck := &stuckListener{Listener: ln, release: make(chan struct{})}
	srv := &hbone.Server{
		TLSConfig: certs.ServerTLSConfig(func(context.Context) (*certs.WorkloadCert, error) { return cert, nil }),
		Handler: hbone.HandlerFunc(func(ctx context.Context, r *hbone.Request) {
			if _, err := r.Accept(nil); err == nil {
				<-ctx.Done() // never reads the stream
			}
		}),
	}
	go srv.Serve(stuck)
	t.Cleanup(func() { stuck.unstick(); srv.Close(); ln.Close() })

	addr := netip.AddrPortFrom(peer.IP(), 8080).String()
	var written atomic.Int64
	var wg sync.WaitGroup
	chunk := make([]byte, 16<<10)
	for range n {
		conn := dial(t, client, addr)
		conn.SetDeadline(time.Time{})
		wg.Go(func() {
			for {
				k, err := conn.Write(chunk)
				written.Add(int64(k))
				if err != nil {
					return
				}
			}
		})
	}
	// Wait until the writes stop making progress: every buffer on the way is full.
	last, still := int64(-1), 0
	for deadline := time.Now().Add(30 * time.Second); still < 10; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("writes kept making progress: %d bytes", written.Load())
		}
		if w := written.Load(); w == last {
			still++
		} else {
			last, still = w, 0
		}
	}
	if got := stuck.conns.Load(); got < n {
		t.Fatalf("the peer has %d connections, want %d (one per stream)", got, n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.DeletePod(ctx, "client"); err != nil {
		t.Fatal(err)
	}
	line := waitLog(t, c, "node1", `msg="pod removed"`, "pod=default/client")
	m := regexp.MustCompile(` took=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no took= in %q", line)
	}
	took, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatal(err)
	}
	if took >= time.Second {
		t.Errorf("removing the pod with %d stuck peers took %v, want well under a second", n, took)
	} else {
		t.Logf("removing the pod with %d stuck peers took %v", n, took)
	}
	wg.Wait()
}

// stuckListener's connections stop reading after their first 64 KiB (the TLS handshake, the
// HTTP/2 preface and the CONNECT fit), until unstick.
type stuckListener struct {
	net.Listener
	release chan struct{}
	once    sync.Once
	conns   atomic.Int32
}

func (l *stuckListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetReadBuffer(16 << 10)
	l.conns.Add(1)
	return &stuckConn{Conn: c, release: l.release}, nil
}

func (l *stuckListener) unstick() { l.once.Do(func() { close(l.release) }) }

type stuckConn struct {
	net.Conn
	release chan struct{}
	read    int
}

func (c *stuckConn) Read(p []byte) (int, error) {
	if c.read >= 64<<10 {
		<-c.release
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p[:min(len(p), 64<<10-c.read)])
	c.read += n
	return n, err
}
