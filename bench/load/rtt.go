package load

import (
	"context"
	"fmt"
	"io"
	"time"
)

// rttTimeout bounds one round trip.
const rttTimeout = 10 * time.Second

// rttWarmup round trips are made before recording.
const rttWarmup = 20

// RTT opens one connection in echo mode and, after a few unrecorded round trips, sends size bytes
// and reads them back, again and again, for d or maxCount round trips. It returns each recorded
// round trip's duration.
func RTT(ctx context.Context, dial Dialer, size int, d time.Duration, maxCount int) ([]time.Duration, error) {
	if size < 1 || maxCount < 1 {
		return nil, fmt.Errorf("rtt: size %d, count %d: want both at least 1", size, maxCount)
	}
	c, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("rtt: dial: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write([]byte{ModeEcho}); err != nil {
		return nil, fmt.Errorf("rtt: write mode: %w", err)
	}
	out := make([]byte, size)
	for i := range out {
		out[i] = byte(i)
	}
	in := make([]byte, size)
	roundTrip := func() (time.Duration, error) {
		t0 := time.Now()
		c.SetDeadline(t0.Add(rttTimeout))
		if _, err := c.Write(out); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, in); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	for i := range rttWarmup {
		if _, err := roundTrip(); err != nil {
			return nil, fmt.Errorf("rtt: warm-up round trip %d: %w", i, err)
		}
	}
	samples := make([]time.Duration, 0, min(maxCount, 1<<16))
	end := time.Now().Add(d)
	for len(samples) < maxCount && time.Now().Before(end) {
		rt, err := roundTrip()
		if err != nil {
			return nil, fmt.Errorf("rtt: round trip %d: %w", len(samples), err)
		}
		samples = append(samples, rt)
	}
	return samples, nil
}
