package hbone

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	istiohbone "istio.io/istio/pkg/hbone"
)

// TestInteropXNetDouble: our double-HBONE client through a gateway and to a destination that are
// both x/net's http2.Server (a CONNECT handler relaying the tunnel as TCP, and an echoing one): an
// HTTP/2 implementation other than ours on every hop. (istio's Go double-HBONE server cannot be the
// peer here: its inner TLS server enables only HTTP/1 and cleartext HTTP/2, so it never negotiates
// h2 for the inner tunnel; its dialer is tested against our side below.)
func TestInteropXNetDouble(t *testing.T) {
	pki := newTestPKI(t)
	dest := serveXNet(t, pki, xnetEcho)
	gw := serveXNet(t, pki, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up, err := net.Dial("tcp", dest)
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		defer up.Close()
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		go func() {
			io.Copy(up, r.Body)
			up.(*net.TCPConn).CloseWrite()
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	}))
	pool, _ := testPool(t, pki, PoolConfig{})
	ctx := ctxTimeout(t, 10*time.Second)
	outer, err := pool.Connect(ctx, testKey(netipMust(gw)), "helloworld.sample.svc.cluster.local:5000", nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ConnectThrough(ctx, outer, pki.client, Config{}, "helloworld.sample.svc.cluster.local:5000", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := pattern(7, 1<<20)
	go func() {
		s.Write(payload)
		s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo through x/net's gateway and destination: %d bytes, %v; want %d", len(got), err, len(payload))
	}
}

// TestInteropIstioDoubleDialer: istio's Go double-HBONE dialer through our Server playing the
// gateway (relaying the inner bytes to a TCP address, as startTestGateway does) to our Server
// playing the destination: both layers of our server side take istio's client.
func TestInteropIstioDoubleDialer(t *testing.T) {
	pki := newTestPKI(t)
	destSrv := &Server{TLSConfig: pki.server, Handler: echoHandler}
	dest := startServer(t, destSrv)
	gw := startTestGateway(t, pki, dest.String())
	// istio's dialer keeps its HTTP/2 connections (and the outer request body) open after the
	// tunnel is closed: end them from our side, so that the servers' cleanup need not wait.
	defer destSrv.Close()
	defer gw.srv.Close()

	outerTLS := pki.client.Clone()
	outerTLS.NextProtos = []string{"h2"}
	innerTLS := pki.client.Clone()
	innerTLS.NextProtos = []string{"h2"}
	d := istiohbone.NewDoubleDialer(
		istiohbone.Config{ProxyAddress: gw.addr, TLS: outerTLS},
		istiohbone.Config{ProxyAddress: "hbone.test:15008", TLS: innerTLS},
		innerTLS)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", "helloworld.sample.svc.cluster.local:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("hello from istio's dialer")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through our gateway and server: %q, %v", got, err)
	}
}
