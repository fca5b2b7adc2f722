package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// HelloworldPort is the port of the helloworld server.
const HelloworldPort = 5000

// DefaultRequestTimeout bounds HTTPGet when its context has no deadline.
const DefaultRequestTimeout = 5 * time.Second

// HelloworldResponse returns the body the helloworld server answers GET /hello with.
func HelloworldResponse(version, instance string) string {
	return "Hello version: " + version + ", instance: " + instance + "\n"
}

// addServer registers a server's stop function; it fails once the pod is deleted.
func (p *Pod) addServer(stop func()) (remove func(), err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return nil, fmt.Errorf("pod %s is deleted", p.rec.Name)
	}
	id := p.nextSrv
	p.nextSrv++
	p.servers[id] = stop
	return func() {
		p.mu.Lock()
		delete(p.servers, id)
		p.mu.Unlock()
	}, nil
}

// StopServers stops every server started on the pod, as if its application died: their listeners
// and connections are closed, so the pod's ports refuse connections. The pod stays in the cluster
// and in the proxies' config, and servers may be started on it again.
func (p *Pod) StopServers() {
	p.mu.Lock()
	stops := p.servers
	p.servers = map[int]func(){}
	p.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
}

// listen opens a TCP listener on port inside the pod, unmarked.
func (p *Pod) listen(port uint16) (net.Listener, error) {
	ln, err := p.ns.Listen(context.Background(), "tcp", ":"+strconv.Itoa(int(port)), redirect.SocketOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.rec.Name, err)
	}
	return ln, nil
}

// ServeHelloworld serves HTTP on port 5000 inside the pod: GET /hello answers
// "Hello version: <version>, instance: <pod name>\n". stop closes the server and its connections;
// deleting the pod stops it too.
func (p *Pod) ServeHelloworld(version string) (stop func(), err error) {
	ln, err := p.listen(HelloworldPort)
	if err != nil {
		return nil, err
	}
	body := HelloworldResponse(version, p.rec.Name)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln) // returns ErrServerClosed after Close
	}()
	var once sync.Once
	stopFn := func() {
		once.Do(func() {
			srv.Close()
			<-done
		})
	}
	remove, err := p.addServer(stopFn)
	if err != nil {
		stopFn()
		return nil, err
	}
	return func() { stopFn(); remove() }, nil
}

// ServeEcho serves a raw TCP echo on port inside the pod: each connection gets back what it sends
// until it half-closes, then the server half-closes too (CloseWrite) and closes. stop closes the
// listener and every open connection; deleting the pod stops it too.
func (p *Pod) ServeEcho(port uint16) (stop func(), err error) {
	ln, err := p.listen(port)
	if err != nil {
		return nil, err
	}
	var (
		mu     sync.Mutex // guards conns, closed
		conns  = map[net.Conn]bool{}
		closed bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = true
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				echo(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	var once sync.Once
	stopFn := func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			closed = true
			open := make([]net.Conn, 0, len(conns))
			for c := range conns {
				open = append(open, c)
			}
			mu.Unlock()
			for _, c := range open {
				c.Close()
			}
			wg.Wait()
		})
	}
	remove, err := p.addServer(stopFn)
	if err != nil {
		stopFn()
		return nil, err
	}
	return func() { stopFn(); remove() }, nil
}

// echo copies c to itself until EOF, then half-closes and closes it.
func echo(c net.Conn) {
	defer c.Close()
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// Dial opens a TCP connection from inside the pod to addr ("ip:port"), unmarked, so the pod's
// redirection applies as to an application's connection.
func (p *Pod) Dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := p.ns.Dial(ctx, "tcp", addr, redirect.SocketOptions{NoDelay: true})
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.rec.Name, err)
	}
	return c, nil
}

// HTTPGet sends GET url from inside the pod over a new connection (no keep-alive), unmarked, and
// returns the response body. The host of url must be an IP literal. A status other than 200 is an
// error (the body is still returned). Without a deadline on ctx, DefaultRequestTimeout applies.
func (p *Pod) HTTPGet(ctx context.Context, url string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultRequestTimeout)
		defer cancel()
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return p.Dial(ctx, addr)
		},
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s from pod %s: %w", url, p.rec.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return string(b), fmt.Errorf("GET %s from pod %s: read body: %w", url, p.rec.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s from pod %s: %w", url, p.rec.Name, errors.New(resp.Status))
	}
	return string(b), nil
}
