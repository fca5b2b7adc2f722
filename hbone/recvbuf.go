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

// smallPiece is the size below which add copies a piece into the last chunk's free space instead of
// queuing its chunk: every chunk but the last is then at least half full (or holds one large piece),
// so buffered data pins at most about twice its size in chunks.
const smallPiece = recvChunkSize / 2

// add queues the first n bytes of the pooled array p and takes ownership of p. A small piece that fits
// in the last chunk is copied there and p goes back to the pool, so a run of small frames does not pin
// a chunk each; otherwise p itself becomes the last chunk, without a copy.
func (b *recvBuf) add(p *[recvChunkSize]byte, n int) {
	b.n += n
	if k := len(b.chunks); k > 0 && n < smallPiece {
		if c := &b.chunks[k-1]; recvChunkSize-c.w >= n {
			c.w += copy(c.b[c.w:], p[:n])
			chunkPool.Put(p)
			return
		}
	}
	b.chunks = append(b.chunks, chunk{b: p, w: n})
}

// addPart queues bytes r to w of the pooled array p, taking ownership of p, without a copy.
func (b *recvBuf) addPart(p *[recvChunkSize]byte, r, w int) {
	b.n += w - r
	b.chunks = append(b.chunks, chunk{b: p, r: r, w: w})
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
