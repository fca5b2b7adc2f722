package hbone

import (
	"io"
	"net"
	"os"
)

// WriteTo writes the tunnel's bytes to w until the peer half-closes (then it returns nil, as
// io.WriterTo does for EOF). Received chunks are handed to w directly, so no copy buffer is
// needed and a stream waiting for data holds no memory. Flow-control credit is returned to the
// peer only once w has taken the bytes, so a slow w slows the sender down.
//
// If w is a Sink, then while WriteTo waits with nothing buffered, the connection's read loop hands
// DATA payloads to w.TryWrite itself (see deliverDirectLocked), saving a goroutine wake-up per
// message; what w does not take at once is left to WriteTo.
//
// WriteTo is a reader: it must not run concurrently with Read.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	c := s.c
	sink, _ := w.(Sink)
	var total int64
	for {
		c.mu.Lock()
		// Take w back from the read loop before anything else: it may be writing to it right now.
		s.sink = nil
		if s.sinkBusy {
			s.sinkWait = true
			c.mu.Unlock()
			<-s.readWake
			continue
		}
		total += s.sinkN
		s.sinkN = 0
		if s.rdl.get().expired() {
			c.mu.Unlock()
			return total, os.ErrDeadlineExceeded
		}
		if s.localClosed {
			c.mu.Unlock()
			return total, net.ErrClosed
		}
		if s.buf.len() > 0 {
			n, err := s.writeFirstChunkLocked(w)
			total += int64(n)
			if err != nil {
				return total, err
			}
			continue
		}
		err := s.readErrLocked()
		if err == nil {
			s.sink = sink // parked with nothing buffered: the read loop may write to w
		}
		c.mu.Unlock()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		select {
		case <-s.readWake:
		case <-s.rdl.get().wait():
		case <-s.closed:
		}
	}
}

// writeFirstChunkLocked writes the first buffered chunk to w, with conn.mu released for the write,
// then returns the chunk's flow-control credit and its buffer. Called with conn.mu held and something
// buffered; it returns with conn.mu released.
func (s *Stream) writeFirstChunkLocked(w io.Writer) (int, error) {
	c := s.c
	ch := s.buf.takeFirst()
	c.mu.Unlock()
	n, err := w.Write(ch.b[ch.r:ch.w])
	c.mu.Lock()
	c.consumedLocked(s, int64(ch.w-ch.r))
	c.mu.Unlock()
	chunkPool.Put(ch.b)
	return n, err
}
