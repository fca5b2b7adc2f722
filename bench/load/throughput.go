package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Dialer opens a connection to a Server along the path being measured.
type Dialer func(ctx context.Context) (net.Conn, error)

// drainTimeout bounds the wait for the sink's byte count after the sending stops.
const drainTimeout = 30 * time.Second

// maxStreamBytes bounds what one throughput stream sends, whatever the duration.
const maxStreamBytes = 1 << 40

// ThroughputResult is the outcome of Throughput.
type ThroughputResult struct {
	// Bytes is what the sinks counted, over all streams.
	Bytes int64
	// Elapsed runs from the start of the first stream until the last stream's count arrived.
	Elapsed time.Duration
}

// Gbps returns the throughput in Gbit/s (10^9 bit/s).
func (r ThroughputResult) Gbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e9
}

// Throughput opens streams connections in sink mode at once and sends on each for d (or until
// maxStreamBytes), then half-closes and waits for the sink's count, so the result counts only bytes
// that arrived. Any stream failing fails the measurement.
func Throughput(ctx context.Context, dial Dialer, streams int, d time.Duration) (ThroughputResult, error) {
	if streams < 1 {
		return ThroughputResult{}, fmt.Errorf("throughput: %d streams: want at least 1", streams)
	}
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range streams {
		c, err := dial(ctx)
		if err != nil {
			return ThroughputResult{}, fmt.Errorf("throughput: dial stream %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards total, last and errs
		total int64
		last  time.Duration
		errs  []error
	)
	start := time.Now()
	stopAt := start.Add(d)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := sendToSink(c, stopAt)
			elapsed := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("stream %d: %w", i, err))
				return
			}
			total += n
			last = max(last, elapsed)
		}()
	}
	// Unblock the streams if ctx ends first.
	stop := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.SetDeadline(time.Now())
		}
	})
	wg.Wait()
	stop()
	if err := errors.Join(errs...); err != nil {
		return ThroughputResult{}, fmt.Errorf("throughput: %w", err)
	}
	return ThroughputResult{Bytes: total, Elapsed: last}, nil
}

// sendToSink writes the sink mode byte and then full buffers until stopAt, half-closes and returns
// the count the sink reports.
func sendToSink(c net.Conn, stopAt time.Time) (int64, error) {
	buf := make([]byte, BufSize)
	for i := range buf {
		buf[i] = byte(i)
	}
	c.SetWriteDeadline(stopAt.Add(drainTimeout))
	if _, err := c.Write([]byte{ModeSink}); err != nil {
		return 0, fmt.Errorf("write mode: %w", err)
	}
	var sent int64
	for sent < maxStreamBytes && time.Now().Before(stopAt) {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return 0, fmt.Errorf("write after %d bytes: %w", sent, err)
		}
	}
	if err := closeWrite(c); err != nil {
		return 0, err
	}
	c.SetReadDeadline(time.Now().Add(drainTimeout))
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("read sink count after sending %d bytes: %w", sent, err)
	}
	got := int64(binary.BigEndian.Uint64(b[:]))
	if got != sent {
		return 0, fmt.Errorf("sink counted %d bytes, sent %d", got, sent)
	}
	return got, nil
}

// closeWrite half-closes c.
func closeWrite(c net.Conn) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("half-close: %T cannot", c)
	}
	if err := cw.CloseWrite(); err != nil {
		return fmt.Errorf("half-close: %w", err)
	}
	return nil
}
