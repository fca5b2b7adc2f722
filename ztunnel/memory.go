package ztunnel

import (
	"context"
	"runtime/debug"
	"time"
)

// Returning memory to the OS after configuration changes. Parsing a large config (a local
// file or a big xDS push) makes several times the size of the resulting index in short-lived
// garbage; the Go runtime hands that memory back to the OS only slowly, so without this a
// node proxy that loaded 10 000 workloads keeps a few hundred MB resident that it does not use.
const (
	memoryReleaseSettle = time.Second     // wait for a burst of changes to end
	memoryReleaseEvery  = 2 * time.Second // at most this often: a forced collection costs CPU
)

// hintMemoryFreed tells releaseMemoryAfterChanges that a lot of memory became free for another
// reason than a config change: many connections went idle and their copies gave up their
// goroutines' stacks (relay.Config.OnParks). Never blocks.
func (p *Proxy) hintMemoryFreed() {
	select {
	case p.memFreed <- struct{}{}:
	default:
	}
}

// releaseMemoryAfterChanges runs a collection that returns free heap memory to the OS once the
// config (or the set of idle connections, see hintMemoryFreed) has been quiet for
// memoryReleaseSettle after a change, at most once every memoryReleaseEvery (a few milliseconds
// of CPU for an index of 10 000 workloads). Runs until ctx is done.
func (p *Proxy) releaseMemoryAfterChanges(ctx context.Context) error {
	var last time.Time
	for {
		changed := p.store.Changed()
		select {
		case <-changed:
		case <-p.memFreed:
		case <-ctx.Done():
			return nil
		}
		// Debounce: wait until no change came for memoryReleaseSettle.
		settle := time.NewTimer(memoryReleaseSettle)
		for quiet := false; !quiet; {
			changed = p.store.Changed()
			select {
			case <-changed:
				settle.Reset(memoryReleaseSettle)
			case <-p.memFreed:
				settle.Reset(memoryReleaseSettle)
			case <-settle.C:
				quiet = true
			case <-ctx.Done():
				settle.Stop()
				return nil
			}
		}
		if wait := memoryReleaseEvery - time.Since(last); !last.IsZero() && wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
		}
		debug.FreeOSMemory()
		last = time.Now()
	}
}
