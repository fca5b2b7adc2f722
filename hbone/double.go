package hbone

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Double HBONE (ztunnel-behavior.md §2.7): to reach a workload on another network, an outer CONNECT
// goes to that network's gateway (pooled, see Pool), and inside that stream a second, end-to-end
// TLS handshake and a CONNECT of its own reach the workload's proxy. The gateway terminates only the
// outer tunnel and relays the inner bytes: it cannot read them. The inner connection is not pooled:
// it carries one stream and closes with it.

// tunnelLinger bounds how long closing a tunnel used as a connection (tunnelConn) waits for the
// peer to end its side after ours was ended, before it resets the stream.
const tunnelLinger = 5 * time.Second

// ConnectThrough opens an inner tunnel through outer, an established CONNECT stream to a gateway: a
// TLS handshake with tlsCfg inside outer (TLS 1.3, ALPN h2 forced), then a CONNECT for authority with
// hdr on an HTTP/2 connection of its own (ConnectOver). It owns outer from now on: outer ends when
// the inner connection closes, with END_STREAM both ways when it closes cleanly. On error outer is
// closed.
func ConnectThrough(ctx context.Context, outer *Stream, tlsCfg *tls.Config, cfg Config, authority string, hdr http.Header) (*Stream, error) {
	if tlsCfg == nil {
		outer.Close()
		return nil, fmt.Errorf("hbone connect %s through a gateway: no TLS config for the inner tunnel", authority)
	}
	tcfg := tlsCfg.Clone()
	tcfg.NextProtos = []string{"h2"}
	tcfg.MinVersion = tls.VersionTLS13
	tc := tls.Client(&tunnelConn{Stream: outer}, tcfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		outer.Close()
		return nil, fmt.Errorf("hbone connect %s through a gateway: inner tls handshake: %w", authority, err)
	}
	if proto := tc.ConnectionState().NegotiatedProtocol; proto != "h2" {
		outer.Close()
		return nil, fmt.Errorf("hbone connect %s through a gateway: inner tls: negotiated ALPN %q, want h2", authority, proto)
	}
	s, err := ConnectOver(ctx, tc, cfg, authority, hdr)
	if err != nil {
		return nil, fmt.Errorf("hbone connect %s through a gateway: %w", authority, err)
	}
	return s, nil
}

// ConnectOver opens one CONNECT stream for authority, with the extra headers hdr, on a new HTTP/2
// connection over nc, whose TLS handshake is done. The connection carries only that stream: once
// the stream has ended it sends GOAWAY and closes nc. On error nc is closed.
func ConnectOver(ctx context.Context, nc net.Conn, cfg Config, authority string, hdr http.Header) (*Stream, error) {
	fields, err := requestFields(authority, hdr)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c := newClientConn(nc, cfg.withDefaults(), 0, nil, nil)
	c.mu.Lock()
	c.singleUse = true
	c.reserved++
	c.mu.Unlock()
	s, err := c.openStream(ctx, fields)
	if err != nil {
		c.close(err)
		return nil, err
	}
	return s, nil
}

// tunnelConn is a CONNECT stream used as the connection under a TLS layer (the inner tunnel of
// double HBONE). Closing it ends our side (END_STREAM) and lets the peer end its side before the
// stream goes, as closing a TCP socket sends a FIN rather than a reset: the reader still running
// (the inner connection's read loop, through TLS) closes the stream once it sees the peer's end,
// or after tunnelLinger.
type tunnelConn struct {
	*Stream

	mu       sync.Mutex
	closing  bool // Close was called; guarded by mu
	readDone bool // a Read failed or saw the end: no reader will close the stream; guarded by mu
}

func (t *tunnelConn) Read(p []byte) (int, error) {
	n, err := t.Stream.Read(p)
	if err != nil {
		t.mu.Lock()
		t.readDone = true
		closing := t.closing
		t.mu.Unlock()
		if closing {
			t.Stream.Close()
		}
	}
	return n, err
}

func (t *tunnelConn) Close() error {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return nil
	}
	t.closing = true
	readDone := t.readDone
	t.mu.Unlock()
	if err := t.Stream.CloseWrite(); err != nil || readDone {
		return t.Stream.Close()
	}
	return t.Stream.SetReadDeadline(time.Now().Add(tunnelLinger))
}
