package hbone

import "sync"

// recvChunkSize is the allocation unit of stream receive buffers.
const recvChunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { return new([recvChunkSize]byte) }}

// chunk is a pooled piece of a recvBuf: bytes b[r:w] are unread.
type chunk struct {
	b    *[recvChunkSize]byte
	r, w int
}

// recvBuf is a stream's queue of received, not yet read bytes. It holds pooled chunks only while it has
// data, so an idle stream pins no buffer memory. Not safe for concurrent use (guarded by conn.mu).
type recvBuf struct {
	chunks []chunk
	n      int // unread bytes
}

func (b *recvBuf) len() int { return b.n }

func (b *recvBuf) write(p []byte) {
	b.n += len(p)
	for len(p) > 0 {
		if k := len(b.chunks); k > 0 && b.chunks[k-1].w < recvChunkSize {
			c := &b.chunks[k-1]
			m := copy(c.b[c.w:], p)
			c.w += m
			p = p[m:]
			continue
		}
		b.chunks = append(b.chunks, chunk{b: chunkPool.Get().(*[recvChunkSize]byte)})
	}
}

func (b *recvBuf) read(p []byte) int {
	n := 0
	for len(p) > 0 && len(b.chunks) > 0 {
		c := &b.chunks[0]
		m := copy(p, c.b[c.r:c.w])
		c.r += m
		n += m
		p = p[m:]
		if c.r == c.w {
			b.dropFirst()
		}
	}
	b.n -= n
	return n
}

// takeFirst detaches the first chunk (its unread bytes are c.b[c.r:c.w]); the caller returns
// c.b to chunkPool when done with it.
func (b *recvBuf) takeFirst() chunk {
	c := b.chunks[0]
	b.chunks[0] = chunk{}
	b.chunks = b.chunks[1:]
	if len(b.chunks) == 0 {
		b.chunks = nil
	}
	b.n -= c.w - c.r
	return c
}

func (b *recvBuf) dropFirst() {
	chunkPool.Put(b.chunks[0].b)
	b.chunks[0] = chunk{}
	b.chunks = b.chunks[1:]
	if len(b.chunks) == 0 {
		b.chunks = nil // release the slice's backing array too
	}
}

// reset discards all unread data and returns how many bytes were dropped.
func (b *recvBuf) reset() int {
	n := b.n
	for len(b.chunks) > 0 {
		b.dropFirst()
	}
	b.n = 0
	return n
}
