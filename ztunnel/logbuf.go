package ztunnel

import (
	"io"
	"sync"
	"time"
)

// LogBuffer collects log lines and writes them to an underlying writer in batches: when Limit
// bytes have gathered, or Delay after the first line of a batch, whichever comes first. With an
// access-log line per connection, that is one write(2) per batch instead of one per connection
// (on stderr piped to the container runtime, each write also wakes the reader). Flush writes at
// once; the logger flushes after every warning or error, so those are never held back, and the
// process flushes on its way out (Close).
//
// Lines still buffered when the process dies without Close (SIGKILL, a crash) are lost: at most
// Delay's worth of info and debug lines.
//
// All methods are safe for concurrent use; lines keep the order of the Write calls.
type LogBuffer struct {
	w     io.Writer
	delay time.Duration
	limit int

	mu     sync.Mutex
	buf    []byte
	timer  *time.Timer // armed while buf holds a batch; nil before the first
	closed bool        // after Close, writes go straight through
	err    error       // the last write error, returned by the next Flush
}

// Defaults of NewLogBuffer.
const (
	DefaultLogFlushDelay = 50 * time.Millisecond
	DefaultLogFlushLimit = 32 << 10
)

// NewLogBuffer returns a LogBuffer writing to w. delay <= 0 and limit <= 0 take the defaults.
func NewLogBuffer(w io.Writer, delay time.Duration, limit int) *LogBuffer {
	if delay <= 0 {
		delay = DefaultLogFlushDelay
	}
	if limit <= 0 {
		limit = DefaultLogFlushLimit
	}
	return &LogBuffer{w: w, delay: delay, limit: limit}
}

// Write adds p to the batch (p is copied). It never fails: a failed write of a batch is reported
// by the next Flush, like the lost line of an unbuffered logger, which has nowhere to go either.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		if _, err := b.w.Write(p); err != nil {
			b.err = err
		}
		return len(p), nil
	}
	first := len(b.buf) == 0
	b.buf = append(b.buf, p...)
	switch {
	case len(b.buf) >= b.limit:
		b.flushLocked()
	case first:
		if b.timer == nil {
			b.timer = time.AfterFunc(b.delay, b.onTimer)
		} else {
			b.timer.Reset(b.delay)
		}
	}
	return len(p), nil
}

func (b *LogBuffer) onTimer() {
	b.mu.Lock()
	b.flushLocked()
	b.mu.Unlock()
}

// Flush writes the batch now. It returns the error of the first failed write since the last
// Flush, if any.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	err := b.err
	b.err = nil
	return err
}

// Close flushes and makes later writes go straight to the underlying writer (for the last lines
// of a process on its way out).
func (b *LogBuffer) Close() error {
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
	b.mu.Unlock()
	return b.Flush()
}

func (b *LogBuffer) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	if _, err := b.w.Write(b.buf); err != nil && b.err == nil {
		b.err = err
	}
	if cap(b.buf) > 4*b.limit {
		b.buf = nil // a burst grew it: do not keep the memory
	} else {
		b.buf = b.buf[:0]
	}
}
