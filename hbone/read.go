package hbone

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/net/http2"
)

// protoError is a connection error (RFC 9113 §5.4.1) detected by the read loop.
type protoError struct {
	code   ErrCode
	reason string
}

func (e *protoError) Error() string { return fmt.Sprintf("%v: %s", e.code, e.reason) }

func connErr(code ErrCode, reason string) error { return &protoError{code: code, reason: reason} }

// readLoop reads frames until the connection fails, then closes it.
func (c *conn) readLoop() {
	defer close(c.readDone)
	c.close(c.readFrames())
}

// readFrames reads and handles frames; it returns the reason the connection must close.
//
// DATA payloads for a stream that can take them are read straight into the stream's receive chunks
// (readData); every other frame goes through the framer.
func (c *conn) readFrames() error {
	for {
		fh, err := c.rfr.ReadFrameHeader()
		if err != nil {
			if err := c.frameReadError(err); err != nil {
				return err
			}
			continue
		}
		if fh.Type == http2.FrameData && !fh.Flags.Has(http2.FlagDataPadded) && fh.StreamID != 0 {
			handled, err := c.readData(fh)
			if err != nil {
				return c.failWith(err)
			}
			if handled {
				c.lastReadNanos.Store(int64(c.sinceStart()))
				continue
			}
		}
		f, err := c.rfr.ReadFrameForHeader(fh)
		if err != nil {
			if err := c.frameReadError(err); err != nil {
				return err
			}
			continue
		}
		c.lastReadNanos.Store(int64(c.sinceStart()))
		if err := c.handleFrame(f); err != nil {
			return c.failWith(err)
		}
	}
}

// frameReadError answers an error from the framer. It returns nil if the read loop may go on (a
// stream error, answered with RST_STREAM), else the reason the connection must close.
func (c *conn) frameReadError(err error) error {
	var se http2.StreamError
	if errors.As(err, &se) {
		if err := c.onStreamError(se); err != nil {
			return c.failWith(err)
		}
		return nil
	}
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		reason := "invalid frame"
		if d := c.rfr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
		return c.failConn(ErrCode(ce), reason)
	case errors.Is(err, http2.ErrFrameTooLarge):
		return c.failConn(ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")
	}
	return fmt.Errorf("read frame: %w", err)
}

// failWith turns a handler error into the connection's close cause, sending GOAWAY for protocol errors.
func (c *conn) failWith(err error) error {
	var pe *protoError
	if errors.As(err, &pe) {
		return c.failConn(pe.code, pe.reason)
	}
	return err
}

func (c *conn) handleFrame(f http2.Frame) error {
	if !c.sawSettings {
		// RFC 9113 §3.4: the peer's preface ends with a (non-ACK) SETTINGS frame.
		if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
			return connErr(ErrCodeProtocol, "first frame is not SETTINGS")
		}
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.MetaHeadersFrame:
		if c.role == roleServer {
			return c.onRequestHeaders(f)
		}
		return c.onResponseHeaders(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		return c.onPing(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.onRSTStream(f)
	case *http2.GoAwayFrame:
		return c.onGoAway(f)
	case *http2.PushPromiseFrame:
		return connErr(ErrCodeProtocol, "PUSH_PROMISE is not allowed")
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID { // RFC 9113 §5.3.1 (RFC 7540): a stream cannot depend on itself
			return c.onStreamError(http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol})
		}
	}
	return nil // PRIORITY, PRIORITY_UPDATE, unknown types: ignored (RFC 9113 §4.1, §5.5)
}

// idleIDLocked reports whether id names a stream that was never opened (RFC 9113 §5.1).
func (c *conn) idleIDLocked(id uint32) bool {
	peerOpened := id%2 == 1 // clients open odd streams
	if c.role == roleServer && peerOpened {
		return id > c.lastPeerID
	}
	if c.role == roleClient && !peerOpened {
		return true // we disabled push: the server opens no streams
	}
	if c.role == roleClient {
		return id >= c.nextID
	}
	return true // a server never opens streams
}

// onStreamError answers a stream-level error reported by the framer (RFC 9113 §5.4.2).
func (c *conn) onStreamError(se http2.StreamError) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[se.StreamID]; s != nil {
		c.resetStreamLocked(s, ErrCode(se.Code), false)
		return nil
	}
	if c.role == roleServer && se.StreamID%2 == 1 && se.StreamID > c.lastPeerID {
		c.lastPeerID = se.StreamID // a malformed request still opens (and closes) its stream
	}
	return c.enqueueReplyLocked(&writeItem{kind: wRST, streamID: se.StreamID, code: ErrCode(se.Code)})
}

func (c *conn) onData(f *http2.DataFrame) error {
	size := int64(f.Length) // flow control counts padding too (RFC 9113 §6.9)
	data := f.Data()
	c.mu.Lock()
	defer c.mu.Unlock()
	if size > c.recvAvail {
		return connErr(ErrCodeFlowControl, "peer exceeded the connection window")
	}
	c.recvAvail -= size
	s := c.streams[f.StreamID]
	if s == nil {
		if c.idleIDLocked(f.StreamID) {
			return connErr(ErrCodeProtocol, "DATA on an idle stream")
		}
		// A closed stream (RFC 9113 §6.1): drop the data, return the window, and answer with
		// STREAM_CLOSED (harmless if the peer's DATA crossed our RST_STREAM).
		c.consumedLocked(nil, size)
		return c.enqueueReplyLocked(&writeItem{kind: wRST, streamID: f.StreamID, code: ErrCodeStreamClosed})
	}
	switch {
	case s.recvEnd:
		c.consumedLocked(nil, size)
		c.resetStreamLocked(s, ErrCodeStreamClosed, false)
		return nil
	case c.role == roleClient && !s.respDone:
		c.consumedLocked(nil, size)
		c.resetStreamLocked(s, ErrCodeProtocol, false) // DATA before the response HEADERS
		return nil
	case size > s.recvAvail:
		c.consumedLocked(nil, size)
		c.resetStreamLocked(s, ErrCodeFlowControl, false)
		return nil
	}
	s.recvAvail -= size
	c.consumedLocked(s, size-int64(len(data))) // padding is consumed at once
	if len(data) > 0 {
		s.buf.write(data)
		s.wakeReaderLocked()
	}
	if f.StreamEnded() {
		s.recvEnd = true
		s.wakeReaderLocked()
		c.maybeFinishLocked(s)
	}
	return nil
}

// onResponseHeaders handles HEADERS on the client: the CONNECT response, or trailers.
func (c *conn) onResponseHeaders(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.StreamID]
	if s == nil {
		if c.idleIDLocked(f.StreamID) {
			return connErr(ErrCodeProtocol, "HEADERS on an idle stream")
		}
		return nil // a stream we already closed
	}
	if s.respDone {
		return c.onTrailersLocked(s, f)
	}
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code < 100 || code > 999 || f.Truncated {
		c.resetStreamLocked(s, ErrCodeProtocol, false)
		return nil
	}
	if code < 200 {
		if f.StreamEnded() || code == 101 { // 101 is not allowed in HTTP/2 (RFC 9113 §8.6)
			c.resetStreamLocked(s, ErrCodeProtocol, false)
		}
		return nil // an interim response: keep waiting for the final one
	}
	s.respDone = true
	s.status = code
	s.respHeader = headerFromFields(f.RegularFields())
	close(s.respReady)
	if f.StreamEnded() {
		s.recvEnd = true
		s.wakeReaderLocked()
		c.maybeFinishLocked(s)
	}
	return nil
}

// onTrailersLocked handles a second HEADERS on a stream: trailers must end the stream.
func (c *conn) onTrailersLocked(s *Stream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() || s.recvEnd {
		c.resetStreamLocked(s, ErrCodeProtocol, false)
		return nil
	}
	s.recvEnd = true
	s.wakeReaderLocked()
	c.maybeFinishLocked(s)
	return nil
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return connErr(ErrCode(ce), fmt.Sprintf("invalid setting %v", st))
			}
			return connErr(ErrCodeProtocol, fmt.Sprintf("invalid setting %v", st))
		}
		switch st.ID {
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = st.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = st.Val
		case http2.SettingMaxHeaderListSize:
			c.peerMaxHeaderList = st.Val
		case http2.SettingHeaderTableSize:
			c.enqueueLocked(&writeItem{kind: wTableSize, incr: st.Val})
		case http2.SettingEnablePush:
			if c.role == roleClient && st.Val != 0 {
				return connErr(ErrCodeProtocol, "server sent SETTINGS_ENABLE_PUSH=1")
			}
		case http2.SettingInitialWindowSize:
			return c.setPeerInitialWindowLocked(int64(st.Val))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !c.sawSettings {
		c.sawSettings = true
		if c.role == roleServer {
			_ = c.nc.SetReadDeadline(time.Time{}) // the preface deadline is over
		}
	}
	return c.enqueueReplyLocked(&writeItem{kind: wSettingsAck})
}

// setPeerInitialWindowLocked applies a changed SETTINGS_INITIAL_WINDOW_SIZE to every open stream
// (RFC 9113 §6.9.2); windows may become negative.
func (c *conn) setPeerInitialWindowLocked(v int64) error {
	delta := v - c.peerInitWindow
	c.peerInitWindow = v
	for _, s := range c.streams {
		s.sendWin += delta
		if s.sendWin > maxWindow {
			return connErr(ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window")
		}
		if delta > 0 {
			notify(s.sendWake)
		}
	}
	return nil
}

func (c *conn) onPing(f *http2.PingFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.IsAck() {
		if c.pingOutstanding && f.Data == c.pingData {
			c.pingOutstanding = false
		}
		return nil
	}
	return c.enqueueReplyLocked(&writeItem{kind: wPing, ack: true, ping: f.Data})
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	incr := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWin += incr
		if c.sendWin > maxWindow {
			return connErr(ErrCodeFlowControl, "connection window overflow")
		}
		for _, s := range c.streams {
			if s.wantCredit {
				notify(s.sendWake)
			}
		}
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if c.idleIDLocked(f.StreamID) {
			return connErr(ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
		}
		return nil
	}
	s.sendWin += incr
	if s.sendWin > maxWindow {
		c.resetStreamLocked(s, ErrCodeFlowControl, false)
		return nil
	}
	notify(s.sendWake)
	return nil
}

func (c *conn) onRSTStream(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.StreamID]
	if s == nil {
		if c.idleIDLocked(f.StreamID) {
			return connErr(ErrCodeProtocol, "RST_STREAM on an idle stream")
		}
		return nil
	}
	c.resetStreamLocked(s, ErrCode(f.ErrCode), true)
	return nil
}

func (c *conn) onGoAway(f *http2.GoAwayFrame) error {
	c.mu.Lock()
	c.goAwayRecv = true
	refused := &ConnError{Code: ErrCode(f.ErrCode), Remote: true, Reason: "GOAWAY received"}
	for id, s := range c.streams {
		// Streams we opened above the peer's last id were never processed (RFC 9113 §6.8).
		if c.role == roleClient && id > f.LastStreamID {
			s.connErr = refused
			if s.respReady != nil && !s.respDone {
				s.respDone = true
				s.respErr = &retryableError{err: refused}
				close(s.respReady)
			}
			c.finishStreamLocked(s)
		}
	}
	c.streamsChangedLocked()
	c.mu.Unlock()
	c.log.Debug("hbone GOAWAY received", "code", ErrCode(f.ErrCode).String(), "last_stream", f.LastStreamID,
		"debug", string(f.DebugData()))
	c.notifyGone()
	return nil
}
