package hbone

import (
	"crypto/tls"
	"net"
	"sync"
)

// sockConn is the socket under an HBONE connection's TLS layer. It batches writes: crypto/tls writes
// each record (at most 16 KiB of payload) with its own write(2). Between beginBatch and endBatch the
// records are collected in a pooled buffer instead and go out with one write(2), so a 64 KiB DATA
// frame makes one trip through the network stack of both hosts instead of four. Outside a batch,
// writes go to the socket at once; an idle connection holds no batch buffer.
//
// Reads are not buffered: crypto/tls reads into its own record buffer, which takes whatever the socket
// holds up to that buffer's free space, and a buffer of ours under it would cost a copy of every byte
// (measured: no fewer CPU seconds per GB with a 64 KiB read buffer).
//
// beginBatch and endBatch are called by the HBONE connection's writer-role holder only.
type sockConn struct {
	net.Conn

	// mu guards batching and wbuf. It is held across the socket write that ends a batch, so that a
	// record written meanwhile by the TLS layer for another goroutine (the close_notify alert of Close,
	// a key update answered by the read loop) cannot overtake the records of the batch; those rare
	// writes are the only contention. A batch write blocked on a peer that stopped reading therefore
	// holds up the close_notify of a Close: conn.closeSocket closes the socket (Conn.Close does not take
	// mu) after a short grace, which fails the blocked write and frees mu.
	mu       sync.Mutex
	batching bool
	wbuf     *[]byte // pooled; non-nil only while a batch holds bytes
}

// batchBufSize is the capacity of a write batch: writeBufferSize bytes of plaintext as whole TLS
// records, plus room for their overhead (5-byte header, content type, 16-byte tag) and a small frame.
const batchBufSize = writeBufferSize + 4*64

var batchBufPool = sync.Pool{New: func() any { b := make([]byte, 0, batchBufSize); return &b }}

func newSockConn(nc net.Conn) *sockConn { return &sockConn{Conn: nc} }

// Write writes p to the socket, or adds it to the open batch (writing the batch first if p does not
// fit, and p directly if it is larger than a batch).
func (c *sockConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return c.Conn.Write(p)
	}
	if c.wbuf != nil && len(*c.wbuf)+len(p) > cap(*c.wbuf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > batchBufSize {
		return c.Conn.Write(p)
	}
	if c.wbuf == nil {
		c.wbuf = batchBufPool.Get().(*[]byte)
	}
	*c.wbuf = append(*c.wbuf, p...)
	return len(p), nil
}

// flushLocked writes the batch's bytes and gives its buffer back to the pool. Requires c.mu held.
func (c *sockConn) flushLocked() error {
	if c.wbuf == nil {
		return nil
	}
	b := c.wbuf
	c.wbuf = nil
	_, err := c.Conn.Write(*b)
	*b = (*b)[:0]
	batchBufPool.Put(b)
	return err
}

// beginBatch starts collecting writes.
func (c *sockConn) beginBatch() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

// endBatch writes what the batch collected and ends it.
func (c *sockConn) endBatch() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	return c.flushLocked()
}

// sockConnOf returns the sockConn under nc's TLS layer, or nil if there is none.
func sockConnOf(nc net.Conn) *sockConn {
	if tc, ok := nc.(*tls.Conn); ok {
		if sc, ok := tc.NetConn().(*sockConn); ok {
			return sc
		}
	}
	return nil
}
