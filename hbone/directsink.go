package hbone

import "syscall"

// deliverDirectLocked is called by the read loop, with conn.mu held, for a piece of DATA (the first n
// bytes of b) on stream s. If s's WriteTo is parked with nothing buffered, the read loop writes the
// piece to WriteTo's socket itself without blocking: conn.mu is released for the write(2), s.sinkBusy
// keeps WriteTo off the socket meanwhile (it waits for readWake), and what the socket did not take is
// queued for WriteTo as usual. It reports false, doing nothing, otherwise.
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
	k := c.direct.write(sink, b[:n])
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
		// The socket is full (or failing): WriteTo writes the rest, blocking, and sees any error.
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

// nbWriter writes as much of a buffer to a socket as it takes without waiting; errors (the socket
// is full, closed or failing) just end the write early. Its callback is bound once, so a write
// allocates nothing. Not safe for concurrent use.
type nbWriter struct {
	p  []byte
	n  int
	fn func(fd uintptr) bool
}

// write writes p to the socket behind rc and returns how much of it the socket took.
func (w *nbWriter) write(rc syscall.RawConn, p []byte) int {
	if w.fn == nil {
		w.fn = w.writeFD
	}
	w.p, w.n = p, 0
	_ = rc.Write(w.fn)
	n := w.n
	w.p = nil
	return n
}

func (w *nbWriter) writeFD(fd uintptr) bool {
	for w.n < len(w.p) {
		k, err := syscall.Write(int(fd), w.p[w.n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || k <= 0 {
			break
		}
		w.n += k
	}
	return true // never wait for the socket to become writable
}
