package hbone

import "io"

// Sink is where WriteTo and WriteToAsync deliver a stream's bytes when it can take them without
// waiting: while the reader waits with nothing buffered, the connection's read loop hands each
// received piece to TryWrite itself, saving a goroutine wake-up per message (see
// deliverDirectLocked). It is an alias of an interface literal, so that packages offering sinks need
// not import this one.
//
// TryWrite writes as much of p as the sink takes at once and returns how much that was; it never
// blocks and reports no error (a failing sink takes nothing, and the next Write reports why). Write
// blocks as usual. The stream never calls the two concurrently.
type Sink = interface {
	io.Writer
	TryWrite(p []byte) int
}

// deliverDirectLocked is called by the read loop, with conn.mu held, for a piece of DATA (the first n
// bytes of b) on stream s. If s's WriteTo is parked with nothing buffered and its writer is a Sink,
// the read loop hands the piece to the sink's TryWrite itself: conn.mu is released for the write,
// s.sinkBusy keeps WriteTo off the sink meanwhile (it waits for readWake), and what the sink did not
// take is queued for WriteTo as usual. It reports false, doing nothing, otherwise.
//
// This is done for pieces of every size. For small ones it saves the wake-up of WriteTo's goroutine,
// a large part of a message's latency; for bulk data it saves a goroutine start or wake-up per chunk
// (WriteToAsync) and keeps the chunk hot in cache, and costs the overlap of decrypting and writing,
// which two cores shared by both proxies and both applications did not have to give: the receiving
// proxy spent about 15% fewer CPU seconds per GB this way.
func (c *conn) deliverDirectLocked(s *Stream, b *[recvChunkSize]byte, n int) bool {
	if s.sink == nil || s.buf.len() > 0 {
		return false
	}
	sink := s.sink
	s.sinkBusy = true
	c.mu.Unlock()
	k := sink.TryWrite(b[:n])
	c.mu.Lock()
	s.sinkBusy = false
	s.sinkN += int64(k)
	c.consumedLocked(s, int64(k))
	switch {
	case k == n:
		chunkPool.Put(b)
	case s.done:
		c.consumedLocked(nil, int64(n-k))
		chunkPool.Put(b)
	default:
		// The sink is full (or failing): WriteTo writes the rest, blocking, and sees any error.
		s.sink = nil
		s.buf.addPart(b, k, n)
		s.wakeReaderLocked()
	}
	if s.sinkWait {
		s.sinkWait = false
		s.wakeReaderLocked()
	}
	return true
}
