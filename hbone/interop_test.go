package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestInteropXNetClient: x/net's http2.Transport CONNECTs to our Server and gets an echo tunnel.
func TestInteropXNetClient(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	authority := make(chan string, 1)
	addr := startServer(t, &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		authority <- r.Authority
		echoHandler(ctx, r)
	})})
	tr := &http2.Transport{TLSClientConfig: pki.client.Clone()}
	defer tr.CloseIdleConnections()

	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, "https://"+addr.String(), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "10.0.0.5:8080"
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := <-authority; got != "10.0.0.5:8080" {
		t.Errorf("authority %q", got)
	}
	for _, msg := range []string{"ping", "pong"} {
		go pw.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo = %q, %v", buf, err)
		}
	}
	pw.Close() // END_STREAM from the x/net side
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: %q, %v; want a clean EOF", rest, err)
	}

	// A non-CONNECT request is answered 400 by the server itself.
	get, _ := http.NewRequest(http.MethodGet, "https://"+addr.String()+"/", nil)
	resp2, err := tr.RoundTrip(get)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 400 {
		t.Errorf("GET status %d, want 400", resp2.StatusCode)
	}
}

// TestInteropXNetServer: our Pool CONNECTs to an x/net http2.Server handler.
func TestInteropXNetServer(t *testing.T) {
	checkLeaks(t)
	pki := newTestPKI(t)
	addr := serveXNet(t, pki, xnetEcho)
	pool, _ := testPool(t, pki, PoolConfig{})
	defer pool.Close()
	k := testKey(netipMust(addr))
	s, err := pool.Connect(ctxTimeout(t, 5*time.Second), k, "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer s.Close()
	if got := s.ResponseHeader().Get("baggage"); got != "k8s.cluster.name=xnet" {
		t.Errorf("response baggage %q", got)
	}
	payload := pattern(3, 1<<20)
	go func() {
		s.Write(payload)
		s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || len(got) != len(payload) || string(got) != string(payload) {
		t.Errorf("echo: %d bytes, %v; want %d bytes intact", len(got), err, len(payload))
	}

	_, err = pool.Connect(ctxTimeout(t, 5*time.Second), k, "10.0.0.1:403", nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 403 {
		t.Errorf("Connect = %v, want StatusError 403", err)
	}
}

// xnetEcho is an x/net HTTP/2 CONNECT handler that echoes the tunnel until its end, with a baggage
// response header (403 for non-CONNECT requests and for authority 10.0.0.1:403).
var xnetEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect || r.Host == "10.0.0.1:403" {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	w.Header().Set("Baggage", "k8s.cluster.name=xnet")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			w.(http.Flusher).Flush()
		}
		if err != nil {
			return // returning ends our direction with END_STREAM
		}
	}
})

// serveXNet serves h with x/net's http2.Server over TLS (pki's server config, ALPN h2) on
// loopback until the end of the test, and returns its address.
func serveXNet(t *testing.T, pki *testPKI, h http.Handler) string {
	t.Helper()
	cfg := pki.server.Clone()
	cfg.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	h2 := &http2.Server{}
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					c.Close()
					return
				}
				h2.ServeConn(c, &http2.ServeConnOpts{Handler: h})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-serveDone
	})
	return ln.Addr().String()
}
