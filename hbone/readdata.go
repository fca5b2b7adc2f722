package hbone

import (
	"fmt"
	"io"

	"golang.org/x/net/http2"
)

// readData is the read loop's fast path for an unpadded DATA frame whose header was just read: if the
// frame is one onData would queue on a stream (the stream is open for receiving and the frame fits
// both windows), the payload is read from the socket straight into pooled receive chunks, one chunk
// at a time, and each is queued as soon as it is read. That skips the framer's payload buffer and the
// copy out of it. It reports false, having read nothing, for every other case; the caller then reads
// the frame through the framer and onData decides (errors, resets, dropped data).
//
// The windows are taken when the frame starts, as onData does. If the stream ends locally (Close, or
// the connection closes) while the payload is being read, the rest is read and dropped and its
// connection window returned, as onData does for a frame on a closed stream.
func (c *conn) readData(fh http2.FrameHeader) (bool, error) {
	size := int64(fh.Length)
	c.mu.Lock()
	s := c.streams[fh.StreamID]
	if !c.sawSettings || s == nil || s.recvEnd || (c.role == roleClient && !s.respDone) ||
		size > s.recvAvail || size > c.recvAvail {
		c.mu.Unlock()
		return false, nil
	}
	c.recvAvail -= size
	s.recvAvail -= size
	c.mu.Unlock()

	for rem := int(size); rem > 0; {
		n := min(rem, recvChunkSize)
		b := chunkPool.Get().(*[recvChunkSize]byte)
		if _, err := io.ReadFull(c.nc, b[:n]); err != nil {
			chunkPool.Put(b)
			return true, fmt.Errorf("read frame: %w", err)
		}
		rem -= n
		c.mu.Lock()
		switch {
		case s.done:
			c.consumedLocked(nil, int64(n))
			chunkPool.Put(b)
		case c.deliverDirectLocked(s, b, n):
		default:
			s.buf.add(b, n)
			s.wakeReaderLocked()
		}
		c.mu.Unlock()
	}
	if fh.Flags.Has(http2.FlagDataEndStream) {
		c.mu.Lock()
		if !s.done {
			s.recvEnd = true
			s.wakeReaderLocked()
			c.maybeFinishLocked(s)
		}
		c.mu.Unlock()
	}
	return true, nil
}
