package hbone

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// gatewayFor starts an HBONE server playing an east-west gateway: it accepts every CONNECT and
// relays the stream's bytes, as plain TCP, to inner (half-closes passed on both ways). It records
// each outer authority and how the outer stream ended.
type testGateway struct {
	addr        string
	srv         *Server
	mu          sync.Mutex
	authorities []string
	ends        []error // the outer stream's read end: nil for END_STREAM
}

func startTestGateway(t *testing.T, pki *testPKI, inner string) *testGateway {
	t.Helper()
	g := &testGateway{}
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		up, err := net.Dial("tcp", inner)
		if err != nil {
			r.Reject(http.StatusServiceUnavailable, err.Error())
			return
		}
		defer up.Close()
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		done := make(chan struct{})
		go func() {
			io.Copy(up, s)
			up.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		_, err = io.Copy(struct{ io.Writer }{s}, up)
		if err == nil {
			s.CloseWrite()
		}
		<-done
		g.mu.Lock()
		g.authorities = append(g.authorities, r.Authority)
		_, rerr := s.Read(make([]byte, 1))
		if rerr == io.EOF {
			rerr = nil
		}
		g.ends = append(g.ends, rerr)
		g.mu.Unlock()
	})}
	g.addr = startServer(t, srv).String()
	g.srv = srv
	return g
}

// TestConnectThrough: a tunnel through a gateway carries bytes both ways end to end, the inner
// TLS is between the client and the destination (the destination sees the client's certificate),
// the inner CONNECT carries its authority and headers, and when the tunnel ends cleanly the outer
// stream ends with END_STREAM both ways (no reset at the gateway).
func TestConnectThrough(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	var (
		mu       sync.Mutex
		peerURIs []string
		inHeader http.Header
		inAuth   string
	)
	dest := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		mu.Lock()
		for _, c := range r.TLS.PeerCertificates[:1] {
			for _, u := range c.URIs {
				peerURIs = append(peerURIs, u.String())
			}
		}
		inHeader, inAuth = r.Header, r.Authority
		mu.Unlock()
		echoHandler.ServeHBONE(ctx, r)
	})}
	destAddr := startServer(t, dest)
	gw := startTestGateway(t, pki, destAddr.String())
	pool, _ := testPool(t, pki, PoolConfig{})

	ctx := ctxTimeout(t, 10*time.Second)
	outer, err := pool.Connect(ctx, testKey(netipMust(gw.addr)), "helloworld.sample.svc.cluster.local:5000", nil)
	if err != nil {
		t.Fatal(err)
	}
	hdr := http.Header{"X-Forwarded-Network": {"network1"}}
	s, err := ConnectThrough(ctx, outer, pki.client, Config{}, "helloworld.sample.svc.cluster.local:5000", hdr)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("through the gateway "), 50000) // 1 MB
	go func() {
		s.Write(payload)
		s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo through the gateway: %d bytes, %v; want %d", len(got), err, len(payload))
	}
	s.Close()
	waitFor(t, "the gateway's stream to end", 10*time.Second, func() bool {
		gw.mu.Lock()
		defer gw.mu.Unlock()
		return len(gw.ends) == 1
	})
	gw.mu.Lock()
	if gw.ends[0] != nil || gw.authorities[0] != "helloworld.sample.svc.cluster.local:5000" {
		t.Errorf("gateway: authority %q, outer stream ended with %v; want the service authority and END_STREAM", gw.authorities[0], gw.ends[0])
	}
	gw.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if len(peerURIs) != 1 || peerURIs[0] != "spiffe://test/ns/client/sa/client" {
		t.Errorf("the destination saw client identity %q, want the client's own (inner TLS end to end)", peerURIs)
	}
	if inAuth != "helloworld.sample.svc.cluster.local:5000" || inHeader.Get("x-forwarded-network") != "network1" {
		t.Errorf("inner CONNECT: authority %q, x-forwarded-network %q", inAuth, inHeader.Get("x-forwarded-network"))
	}
}

// An inner peer that fails verification fails ConnectThrough with the TLS error, and the outer
// stream is closed.
func TestConnectThroughVerifiesInnerPeer(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	other := newTestPKI(t) // a destination whose certificate our roots do not trust
	dest := &Server{TLSConfig: other.server, Handler: echoHandler}
	destAddr := startServer(t, dest)
	gw := startTestGateway(t, pki, destAddr.String())
	pool, _ := testPool(t, pki, PoolConfig{})
	ctx := ctxTimeout(t, 10*time.Second)
	outer, err := pool.Connect(ctx, testKey(netipMust(gw.addr)), "svc.ns.svc.cluster.local:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ConnectThrough(ctx, outer, pki.client, Config{}, "svc.ns.svc.cluster.local:80", nil)
	if err == nil || !strings.Contains(err.Error(), "inner tls handshake") {
		t.Fatalf("ConnectThrough to an untrusted destination = %v, want an inner TLS handshake error", err)
	}
	if _, werr := outer.Write([]byte("x")); werr == nil {
		t.Error("the outer stream is still open after the failed inner handshake")
	}
}
