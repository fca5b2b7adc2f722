package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"istio.io/istio/pkg/zdsapi"
)

// Reconnect backoff, as in ztunnel.
const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = 15 * time.Second
)

// DefaultPath is where istio-cni's node agent listens.
const DefaultPath = "/var/run/ztunnel/ztunnel.sock"

// Client is the proxy's end of ZDS.
type Client struct {
	// Path of the node agent's socket; empty: DefaultPath.
	Path string
	// Handler receives the workloads; required.
	Handler Handler
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// OnConnect, if set, is called with true once a connection's snapshot
	// has been reconciled, and with false when that connection ends
	// (readiness). Called from Run's goroutine.
	OnConnect func(connected bool)
}

func (c *Client) withDefaults() Client {
	d := *c
	if d.Path == "" {
		d.Path = DefaultPath
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.OnConnect == nil {
		d.OnConnect = func(bool) {}
	}
	return d
}

// Run connects to the node agent and serves it until ctx is done, then
// returns nil. Connection failures and protocol errors are retried with a
// backoff from 10 ms doubling to 15 s, reset after a connection made progress.
func (c *Client) Run(ctx context.Context) error {
	cfg := c.withDefaults()
	if cfg.Handler == nil {
		return errors.New("zds client: nil Handler")
	}
	backoff := minBackoff
	for {
		progressed, err := cfg.serveOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			backoff = minBackoff
		}
		cfg.Logger.Warn("zds connection ended", "path", cfg.Path, "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// serveOnce runs one connection. progressed reports whether at least one
// request was handled.
func (c *Client) serveOnce(ctx context.Context) (progressed bool, err error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", c.Path)
	if err != nil {
		return false, fmt.Errorf("dial zds %s: %w", c.Path, err)
	}
	conn := nc.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if err := writeMessage(conn, &zdsapi.ZdsHello{Version: zdsapi.Version_V1}, -1); err != nil {
		return false, fmt.Errorf("zds hello: %w", err)
	}
	c.Logger.Info("connected to zds", "path", c.Path)
	sess := newSession(c.Handler)
	ready := false
	defer func() {
		if ready {
			c.OnConnect(false)
		}
	}()
	for {
		data, files, err := readPacket(conn)
		if err != nil {
			if badDatagram(err) {
				err = &protocolError{err}
				// Best effort: tell the agent why we hang up.
				_ = writeMessage(conn, ackResponse(err.Error()), -1)
			}
			return progressed, fmt.Errorf("read zds request: %w", err)
		}
		nack, perr := sess.handle(ctx, data, files)
		if werr := writeMessage(conn, ackResponse(nack), -1); werr != nil {
			return progressed, fmt.Errorf("zds ack: %w", werr)
		}
		if perr != nil {
			return progressed, perr
		}
		progressed = true
		if nack != "" {
			c.Logger.Warn("zds request nacked", "error", nack)
		}
		if sess.snapshotDone && !ready {
			ready = true
			c.OnConnect(true)
		}
	}
}
