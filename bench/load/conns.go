package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connTimeout bounds one connect + echo + close.
const connTimeout = 10 * time.Second

// ConnRateResult is the outcome of ConnRate.
type ConnRateResult struct {
	// Done counts completed connections (connect, 1-byte echo, EOF, close).
	Done int64
	// Failed counts attempts that failed; FirstErr is the first failure.
	Failed   int64
	FirstErr error
	// Elapsed runs from the start until the last client stopped.
	Elapsed time.Duration
}

// PerSecond returns completed connections per second.
func (r ConnRateResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Done) / r.Elapsed.Seconds()
}

// ConnRate runs clients loops for d (or until maxCount connections in all): each connects, sends
// ModeOnce, reads the echo and the server's EOF, and closes. It fails if more than 1 % of the
// attempts failed.
func ConnRate(ctx context.Context, dial Dialer, clients int, d time.Duration, maxCount int64) (ConnRateResult, error) {
	if clients < 1 || maxCount < 1 {
		return ConnRateResult{}, fmt.Errorf("conn rate: %d clients, count %d: want both at least 1", clients, maxCount)
	}
	ctx, cancel := context.WithTimeout(ctx, d+connTimeout)
	defer cancel()
	var (
		started, done, failed atomic.Int64
		errOnce               sync.Once
		firstErr              error
		wg                    sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil && started.Add(1) <= maxCount {
				if err := oneConn(ctx, dial); err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	r := ConnRateResult{Done: done.Load(), Failed: failed.Load(), FirstErr: firstErr, Elapsed: time.Since(start)}
	if r.Failed*100 > r.Done+r.Failed || r.Done == 0 {
		return r, fmt.Errorf("conn rate: %d of %d attempts failed, first: %w", r.Failed, r.Done+r.Failed, errors.Join(firstErr, ctx.Err()))
	}
	return r, nil
}

// oneConn makes one connection in ModeOnce.
func oneConn(ctx context.Context, dial Dialer) error {
	ctx, cancel := context.WithTimeout(ctx, connTimeout)
	defer cancel()
	c, err := dial(ctx)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte{ModeOnce}); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	var b [2]byte
	n, err := io.ReadFull(c, b[:])
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != 1 || b[0] != ModeOnce {
		return fmt.Errorf("read echo and EOF: got %d bytes %q, %v", n, b[:n], err)
	}
	return nil
}

// Held is a set of open, idle connections in echo mode.
type Held struct {
	conns []net.Conn
}

// Hold opens n connections in echo mode, parallel (at most 16 dials at a time), and makes one
// 1-byte round trip on each so that each is known to reach the server. On error the connections
// opened so far are closed.
func Hold(ctx context.Context, dial Dialer, n int) (*Held, error) {
	h := &Held{conns: make([]net.Conn, n)}
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 16)
		mu   sync.Mutex // guards errs
		errs []error
	)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := holdOne(ctx, dial)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("connection %d: %w", i, err))
				mu.Unlock()
				return
			}
			h.conns[i] = c
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		h.Close()
		return nil, fmt.Errorf("hold %d connections: %d failed, first: %w", n, len(errs), errs[0])
	}
	return h, nil
}

func holdOne(ctx context.Context, dial Dialer) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connTimeout)
	defer cancel()
	c, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	var b [1]byte
	_, err = c.Write([]byte{ModeEcho, 'x'})
	if err == nil {
		_, err = io.ReadFull(c, b[:])
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("echo: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// Len returns the number of held connections.
func (h *Held) Len() int { return len(h.conns) }

// Close closes every held connection.
func (h *Held) Close() {
	for _, c := range h.conns {
		if c != nil {
			c.Close()
		}
	}
}
