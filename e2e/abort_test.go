package e2e

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// A transfer cut in the middle reaches the client as a connection reset, never as a clean end,
// and the client's proxy logs and counts it as failed (issue 10, item 1): first the application
// resets its connection (the reset travels through both proxies), then the destination node's
// proxy dies mid-transfer (the tunnel dies).
func TestMidStreamAbortIsAReset(t *testing.T) {
	c := twoNodes(t)
	server := addPod(t, c, testbed.PodSpec{Name: "server", Node: "node2", ServiceAccount: "server", Enrolled: true})
	client := addPod(t, c, testbed.PodSpec{Name: "client", Node: "node1", ServiceAccount: "client", Enrolled: true})
	// 8080: reads one line's worth, then resets. 8081: streams bytes until the connection dies.
	serve(t, server, 8080, func(c net.Conn) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		c.Write([]byte("partial answer"))
		time.Sleep(100 * time.Millisecond) // the answer reaches the client first
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	chunk := make([]byte, 32<<10)
	serve(t, server, 8081, func(c net.Conn) {
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	scraper := newNodeScraper(t, c, "node1")

	// The application resets.
	conn := dial(t, client, netip.AddrPortFrom(server.IP(), 8080).String())
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %q, then %v; want a connection reset", got, err)
	}
	waitLog(t, c, "node1", "connection failed", "dst.addr="+server.IP().String()+":8080", "error=\"upstream reset the connection")
	waitLog(t, c, "node2", "connection failed", "dst.addr="+server.IP().String()+":8080", "error=\"upstream reset the connection")
	fams := scraper.scrape(t)
	if n := sum(fams, "istio_tcp_connections_closed_total", labels{"reporter": "source", "response_flags": "CONNECT"}); n < 1 {
		t.Errorf("istio_tcp_connections_closed_total{reporter=source,response_flags=CONNECT} = %v, want the reset connection\n%s",
			n, dump(fams, "istio_tcp_connections_closed_total"))
	}

	// The tunnel dies: the destination node's proxy is killed mid-transfer.
	conn = dial(t, client, netip.AddrPortFrom(server.IP(), 8081).String())
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 1<<20)); err != nil {
		t.Fatalf("transfer did not start: %v", err)
	}
	proc, err := os.FindProcess(c.ProxyPID("node2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, conn)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %d more bytes, then %v; want a connection reset", n, err)
	}
	waitLog(t, c, "node1", "connection failed", "dst.addr="+server.IP().String()+":8081", "error=\"upstream failed")
}
