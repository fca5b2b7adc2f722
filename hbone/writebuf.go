package hbone

import (
	"bufio"
	"io"
	"sync"
)

// writeBufPool holds the buffered writers of idle connection writers: a connection holds one only
// from its first buffered write until the flush that ends the batch, so idle connections share them.
var writeBufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(io.Discard, writeBufferSize) }}

// pooledWriter is a bufio.Writer in front of w that is taken from writeBufPool on the first write and
// given back by a successful Flush. It is used by the holder of the writer role only (no locking).
// After a failed write or flush it keeps its writer, and with it bufio's sticky error.
type pooledWriter struct {
	w  io.Writer
	bw *bufio.Writer // nil while idle (nothing buffered)
}

func (p *pooledWriter) get() *bufio.Writer {
	if p.bw == nil {
		p.bw = writeBufPool.Get().(*bufio.Writer)
		p.bw.Reset(p.w)
	}
	return p.bw
}

func (p *pooledWriter) Write(b []byte) (int, error) { return p.get().Write(b) }

func (p *pooledWriter) WriteString(s string) (int, error) { return p.get().WriteString(s) }

// Flush writes what is buffered to w and, if that succeeded, returns the buffer to the pool.
func (p *pooledWriter) Flush() error {
	if p.bw == nil {
		return nil
	}
	if err := p.bw.Flush(); err != nil {
		return err
	}
	p.bw.Reset(io.Discard) // drop the reference to w before pooling
	writeBufPool.Put(p.bw)
	p.bw = nil
	return nil
}
