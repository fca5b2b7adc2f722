package hbone

import (
	"encoding/binary"
	"math/rand/v2"
	"time"
)

// keepalive sends a PING every PingInterval and closes the connection when nothing (no ACK, no other
// frame) has been read for PingTimeout after a PING was sent (reference §2.5).
func (c *conn) keepalive() {
	interval, timeout := c.cfg.PingInterval, c.cfg.PingTimeout
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		now := c.sinceStart()
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		if c.pingOutstanding && time.Duration(c.lastReadNanos.Load()) > c.pingSent {
			c.pingOutstanding = false // the peer is alive, even if the ACK is still in flight
		}
		if c.pingOutstanding && now-c.pingSent >= timeout {
			c.mu.Unlock()
			c.close(&ConnError{Reason: "ping timeout"})
			return
		}
		if !c.pingOutstanding && now-c.pingSent >= interval {
			binary.BigEndian.PutUint64(c.pingData[:], rand.Uint64())
			c.pingOutstanding = true
			c.pingSent = now
			c.enqueueLocked(&writeItem{kind: wPing, ping: c.pingData})
		}
		next := c.pingSent + interval - now
		if c.pingOutstanding {
			// Wake at the deadline, or earlier for the next interval if that is still ahead.
			deadline := c.pingSent + timeout - now
			if next <= 0 || next > deadline {
				next = deadline
			}
		}
		c.mu.Unlock()
		t.Reset(max(next, time.Millisecond))
	}
}
