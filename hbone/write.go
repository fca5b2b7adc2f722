package hbone

import (
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type writeKind uint8

const (
	wPreface writeKind = iota
	wSettings
	wSettingsAck
	wWindowUpdate
	wPing
	wRST
	wGoAway
	wHeaders
	wData
	wTableSize // not a frame: apply the peer's SETTINGS_HEADER_TABLE_SIZE to the HPACK encoder
	wClose     // not a frame: flush, then close the connection with cause
)

// writeItem is one unit of work for the writer goroutine. Items are written in queue order, which is
// what orders HPACK state, stream-id allocation and DATA before RST_STREAM.
type writeItem struct {
	kind     writeKind
	streamID uint32
	end      bool   // wData, wHeaders: END_STREAM
	data     []byte // wData payload (not retained after done is signalled); wGoAway debug data
	code     ErrCode
	fields   []hpack.HeaderField // wHeaders
	settings []http2.Setting     // wSettings
	incr     uint32              // wWindowUpdate increment; wTableSize size
	ping     [8]byte
	ack      bool
	cause    error // wClose

	// done, if non-nil, receives exactly one value: nil once the item is written to the buffered writer,
	// or the error that prevented it. Must have a buffer of 1.
	done chan error
	// taken is set (under conn.mu) when the writer has removed the item from the queue; an untaken item
	// can still be withdrawn by its sender.
	taken bool
}

// enqueueLocked queues it for the writer. It reports false, queuing nothing, once the connection is
// closed or closing.
func (c *conn) enqueueLocked(it *writeItem) bool {
	if c.err != nil || c.closing {
		return false
	}
	c.wq = append(c.wq, it)
	if len(c.wq) == 1 {
		c.wcond.Signal()
	}
	return true
}

// enqueueReplyLocked queues a frame the peer made us send (acks, resets) and fails the connection with
// ENHANCE_YOUR_CALM if the peer makes us queue too many (RFC 9113 §10.5).
func (c *conn) enqueueReplyLocked(it *writeItem) error {
	if len(c.wq) > maxQueuedControl+len(c.streams) {
		return connErr(ErrCodeEnhanceYourCalm, "peer caused too many queued control frames")
	}
	c.enqueueLocked(it)
	return nil
}

// withdrawLocked removes an untaken item from the queue; it reports false if the writer already took it.
func (c *conn) withdrawLocked(it *writeItem) bool {
	if it.taken {
		return false
	}
	for i, q := range c.wq {
		if q == it {
			c.wq = append(c.wq[:i], c.wq[i+1:]...)
			return true
		}
	}
	return false
}

// writeLoop is the writer goroutine: it takes everything queued, writes it, flushes once per batch.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var batch []*writeItem
	for {
		c.mu.Lock()
		for len(c.wq) == 0 && c.err == nil {
			c.wcond.Wait()
		}
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		batch = append(batch[:0], c.wq...)
		clear(c.wq)
		c.wq = c.wq[:0]
		for _, it := range batch {
			it.taken = true
		}
		maxFrame := min(c.peerMaxFrame, c.cfg.MaxFrameSize)
		c.mu.Unlock()

		// A write blocked this long means the peer stopped reading; give up on the connection.
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.PingTimeout))
		var err error
		var closeItem *writeItem
		for _, it := range batch {
			switch {
			case it.kind == wClose:
				closeItem = it
			case err == nil:
				err = c.writeItem(it, maxFrame)
			}
			if it.done != nil {
				it.done <- err
			}
		}
		clear(batch)
		if err == nil {
			err = c.bw.Flush()
		}
		if err != nil {
			c.close(&ConnError{Reason: "write failed", Err: err})
			return
		}
		if closeItem != nil {
			c.close(closeItem.cause)
			return
		}
	}
}

func (c *conn) writeItem(it *writeItem, maxFrame uint32) error {
	switch it.kind {
	case wPreface:
		_, err := c.bw.WriteString(http2.ClientPreface)
		return err
	case wSettings:
		return c.wfr.WriteSettings(it.settings...)
	case wSettingsAck:
		return c.wfr.WriteSettingsAck()
	case wWindowUpdate:
		return c.wfr.WriteWindowUpdate(it.streamID, it.incr)
	case wPing:
		return c.wfr.WritePing(it.ack, it.ping)
	case wRST:
		return c.wfr.WriteRSTStream(it.streamID, http2.ErrCode(it.code))
	case wGoAway:
		return c.wfr.WriteGoAway(it.streamID, http2.ErrCode(it.code), it.data)
	case wHeaders:
		return c.writeHeaders(it, maxFrame)
	case wData:
		return c.writeData(it, maxFrame)
	case wTableSize:
		c.henc.SetMaxDynamicTableSizeLimit(it.incr)
	}
	return nil
}

// writeData writes it.data as DATA frames of at most maxFrame bytes; END_STREAM goes on the last one.
func (c *conn) writeData(it *writeItem, maxFrame uint32) error {
	p := it.data
	for {
		n := min(len(p), int(maxFrame))
		last := n == len(p)
		if err := c.wfr.WriteData(it.streamID, it.end && last, p[:n]); err != nil {
			return err
		}
		p = p[n:]
		if last {
			return nil
		}
	}
}

// writeHeaders HPACK-encodes it.fields and writes a HEADERS frame plus CONTINUATIONs as needed.
func (c *conn) writeHeaders(it *writeItem, maxFrame uint32) error {
	c.hbuf.Reset()
	for _, f := range it.fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := c.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), int(maxFrame))]
		block = block[len(frag):]
		var err error
		if first {
			err = c.wfr.WriteHeaders(http2.HeadersFrameParam{
				StreamID:      it.streamID,
				BlockFragment: frag,
				EndStream:     it.end,
				EndHeaders:    len(block) == 0,
			})
			first = false
		} else {
			err = c.wfr.WriteContinuation(it.streamID, len(block) == 0, frag)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
