package hbone

import (
	"context"
	"fmt"
	"net"
	"time"

	"golang.org/x/net/http2/hpack"
)

// newClientConn starts the client side of an HTTP/2 connection on nc, whose TLS handshake is done.
// onGone is called once when the connection stops taking new streams (GOAWAY, idle, closed).
// onClosed is called once after it closed.
func newClientConn(nc net.Conn, cfg Config, idleTimeout time.Duration, onGone, onClosed func(*conn)) *conn {
	c := newConn(context.Background(), roleClient, nc, cfg, defaultClientMaxHeaderList, 0)
	c.idleTimeout = idleTimeout
	c.onGone = onGone
	c.onClosed = onClosed
	c.run()
	go c.readLoop()
	return c
}

// tryReserve reserves a slot for one new stream if the connection can take one (see load). A
// reservation must be used by openStream.
func (c *conn) tryReserve(limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.loadLocked(limit); !ok {
		return false
	}
	c.reserved++
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	return true
}

// load returns how many streams c carries (open and reserved), and whether it is usable and can take
// another one below limit (and the peer's SETTINGS_MAX_CONCURRENT_STREAMS).
func (c *conn) load(limit int) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loadLocked(limit)
}

func (c *conn) loadLocked(limit int) (int, bool) {
	if uint64(limit) > uint64(c.peerMaxStreams) {
		limit = int(c.peerMaxStreams)
	}
	n := len(c.streams) + c.reserved
	return n, c.usableLocked() && n < limit
}

// openStream uses a reservation to send a CONNECT request with the given header block and waits for the
// response. A 200 returns the tunnel; another status returns *StatusError.
func (c *conn) openStream(ctx context.Context, fields []hpack.HeaderField) (*Stream, error) {
	c.mu.Lock()
	c.reserved--
	if !c.usableLocked() {
		c.streamsChangedLocked()
		c.mu.Unlock()
		return nil, &retryableError{err: &ConnError{Reason: "connection no longer takes streams"}}
	}
	if size := headerListSize(fields); c.peerMaxHeaderList > 0 && size > c.peerMaxHeaderList {
		c.streamsChangedLocked()
		c.mu.Unlock()
		return nil, fmt.Errorf("request headers (%d bytes) exceed the peer's limit of %d", size, c.peerMaxHeaderList)
	}
	s := c.newStreamLocked(c.nextID)
	c.nextID += 2
	s.respReady = make(chan struct{})
	c.enqueueLocked(&writeItem{kind: wHeaders, streamID: s.id, fields: fields})
	c.mu.Unlock()

	select {
	case <-s.respReady:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	c.mu.Lock()
	status, respErr := s.status, s.respErr
	c.mu.Unlock()
	if respErr != nil {
		s.Close()
		return nil, respErr
	}
	if status != 200 {
		s.Close()
		return nil, &StatusError{Code: status}
	}
	return s, nil
}
