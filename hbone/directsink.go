package hbone

import "syscall"

// directMax is the largest DATA piece the read loop writes to a waiting WriteTo's socket itself.
// Small pieces are latency-bound messages, where the wake-up of the WriteTo goroutine is a large part
// of the cost; bulk data is left to that goroutine so that decrypting and writing overlap.
const directMax = smallPiece - 1

// deliverDirectLocked is called by the read loop, with conn.mu held, for a piece of DATA (the first n
// bytes of b) on stream s. If s's WriteTo is parked with nothing buffered and the piece is small, the
// read loop writes it to WriteTo's socket itself without blocking: conn.mu is released for the
// write(2), s.sinkBusy keeps WriteTo off the socket meanwhile (it waits for readWake), and what the
// socket did not take is queued for WriteTo as usual. It reports false, doing nothing, otherwise.
func (c *conn) deliverDirectLocked(s *Stream, b *[recvChunkSize]byte, n int) bool {
	if s.sink == nil || n > directMax || s.buf.len() > 0 {
		return false
	}
	sink := s.sink
	s.sinkBusy = true
	c.mu.Unlock()
	k := writeNonBlocking(sink, b[:n])
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

// writeNonBlocking writes as much of p to the socket as it takes without waiting and returns how much
// that was; errors (the socket is full, closed or failing) just end the write early.
func writeNonBlocking(rc syscall.RawConn, p []byte) int {
	n := 0
	_ = rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			k, err := syscall.Write(int(fd), p[n:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil || k <= 0 {
				break
			}
			n += k
		}
		return true // never wait for the socket to become writable
	})
	return n
}
