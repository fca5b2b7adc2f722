package hbone

import (
	"runtime"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type writeKind uint8

// frameHeaderLen is the size of an HTTP/2 frame header (RFC 9113 §4.1).
const frameHeaderLen = 9

// MaxDataWrite is the largest DATA payload the writer puts in one frame: with its frame header it
// fills the write buffer, four whole TLS records. A caller copying into a Stream from a socket reads
// at most this much at a time, so each DATA frame goes out as full records with no small tail.
const MaxDataWrite = writeBufferSize - frameHeaderLen

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
	framed   []byte // wData, if non-nil: data with FrameHeaderRoom writable bytes in front (see writeDataInPlace)
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
	if len(c.wq) == 1 && !c.writing {
		c.wcond.Signal() // a writer-role holder takes it before releasing the role
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

// writeLoop is the writer goroutine. It takes the writer role whenever frames are queued and nobody
// else holds it, and writes until the queue is empty. Stream.Write takes the role itself when it is
// free (writeInline), so a lone writer's DATA reaches the socket without a hand-off; everything the
// read loop queues (acks, WINDOW_UPDATEs, resets) is written here, so the read loop never blocks on
// the socket.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var batch []*writeItem
	for {
		c.mu.Lock()
		for (len(c.wq) == 0 || c.writing) && c.err == nil {
			c.wcond.Wait()
		}
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		c.writing = true
		c.mu.Unlock()
		// Let goroutines that are about to queue frames run first (other streams' HEADERS and
		// END_STREAMs, when many connections open and close at once): they join this batch and go
		// out with the same write(2).
		runtime.Gosched()
		if !c.writeBatches(&batch, -1) {
			return
		}
	}
}

// maxInlineBatches bounds how many batches a Stream.Write caller writes for others before it hands the
// writer role to the writer goroutine.
const maxInlineBatches = 2

// writeInline is called by a goroutine that just took the free writer role (conn.writing) to write its
// own queued item: it writes what is queued, then releases the role.
func (c *conn) writeInline() {
	c.writeBatches(&c.inlineBatch, maxInlineBatches)
}

// writeBatches writes queued items, one flushed batch at a time, holding the writer role (taken by the
// caller). It releases the role when the queue is empty or after maxBatches batches (-1: no limit),
// waking the writer goroutine if items remain. It reports false once the connection is closed.
func (c *conn) writeBatches(batch *[]*writeItem, maxBatches int) bool {
	for n := 0; ; n++ {
		c.mu.Lock()
		if c.err != nil {
			c.writing = false
			c.mu.Unlock()
			return false
		}
		if len(c.wq) == 0 || n == maxBatches {
			c.writing = false
			if len(c.wq) > 0 {
				c.wcond.Broadcast()
			}
			c.mu.Unlock()
			return true
		}
		b := append((*batch)[:0], c.wq...)
		*batch = b
		clear(c.wq)
		c.wq = c.wq[:0]
		for _, it := range b {
			it.taken = true
		}
		maxFrame := min(c.peerMaxFrame, c.cfg.MaxFrameSize)
		c.mu.Unlock()

		c.renewWriteDeadline()
		c.beginBatch()
		var err error
		var closeItem *writeItem
		for _, it := range b {
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
		clear(b)
		if err == nil {
			err = c.bw.Flush()
		}
		if berr := c.endBatch(); err == nil {
			err = berr
		}
		if err != nil {
			c.close(&ConnError{Reason: "write failed", Err: err})
		} else if closeItem != nil {
			c.close(closeItem.cause)
		}
		if err != nil || closeItem != nil {
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			return false
		}
	}
}

// renewWriteDeadline bounds the socket writes of the writer role's holder (the caller): a write
// blocked for PingTimeout means the peer stopped reading, and the connection is given up. The deadline
// is renewed only once it is a second (or half the timeout) old: setting it costs a timer update, and
// a write still gets at least PingTimeout minus that.
func (c *conn) renewWriteDeadline() {
	renew := min(time.Second, c.cfg.PingTimeout/2)
	if now := time.Now(); c.wdeadline.Sub(now) < c.cfg.PingTimeout-renew {
		c.wdeadline = now.Add(c.cfg.PingTimeout)
		_ = c.nc.SetWriteDeadline(c.wdeadline)
	}
}

// beginBatch starts collecting the TLS records written from now on, to go out with one socket
// write at endBatch (see sockConn). Writer role only.
func (c *conn) beginBatch() {
	if c.sock != nil {
		c.sock.beginBatch()
	}
}

// endBatch writes the records collected since beginBatch. Writer role only.
func (c *conn) endBatch() error {
	if c.sock == nil {
		return nil
	}
	return c.sock.endBatch()
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

// writeData writes it.data as DATA frames of at most maxFrame bytes (and at most what fills the write
// buffer, so a buffer flushed because it is full holds whole TLS records); END_STREAM goes on the last
// one. The frames are built here rather than by the Framer, which would copy each payload once more.
func (c *conn) writeData(it *writeItem, maxFrame uint32) error {
	if it.framed != nil && !it.end && len(it.data) >= inPlaceMin {
		return c.writeDataInPlace(it, maxFrame)
	}
	p := it.data
	limit := min(int(maxFrame), MaxDataWrite)
	for {
		n := min(len(p), limit)
		last := n == len(p)
		hdr := c.hdrScratch[:]
		putDataHeader(hdr, n, it.streamID, it.end && last)
		if _, err := c.bw.Write(hdr); err != nil {
			return err
		}
		if _, err := c.bw.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
		if last {
			return nil
		}
	}
}

// inPlaceMin is the smallest queued DATA payload the writer sends in place rather than through its
// buffer: below it, the copy is cheaper than the extra TLS record it would take.
const inPlaceMin = 4 << 10

// writeDataInPlace is writeData for a payload with room for a frame header in front of it (queued
// by WriteHeadroom while the writer role was taken): what is buffered goes to the TLS layer first,
// to keep the order, then each frame header is written in front of its piece of the payload (over
// the end of the piece before, already sent) and the frame goes to the TLS layer without the copy
// into the write buffer. The caller's write batch (sockConn) still gathers the records into one
// write(2). The payload is not used after this returns, as writeData's contract requires.
func (c *conn) writeDataInPlace(it *writeItem, maxFrame uint32) error {
	if err := c.bw.Flush(); err != nil { // nothing to do if nothing is buffered
		return err
	}
	return c.writeFramesInPlace(it.streamID, it.framed, maxFrame, true)
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
