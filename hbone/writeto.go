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
// WriteTo is a reader: it must not run concurrently with Read.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	c := s.c
	var total int64
	for {
		if s.rdl.expired() {
			return total, os.ErrDeadlineExceeded
		}
		c.mu.Lock()
		if s.localClosed {
			c.mu.Unlock()
			return total, net.ErrClosed
		}
		if s.buf.len() > 0 {
			ch := s.buf.takeFirst()
			c.mu.Unlock()
			n, err := w.Write(ch.b[ch.r:ch.w])
			total += int64(n)
			c.mu.Lock()
			c.consumedLocked(s, int64(ch.w-ch.r))
			c.mu.Unlock()
			chunkPool.Put(ch.b)
			if err != nil {
				return total, err
			}
			continue
		}
		err := s.readErrLocked()
		c.mu.Unlock()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		select {
		case <-s.readWake:
		case <-s.rdl.wait():
		case <-s.closed:
		}
	}
}
