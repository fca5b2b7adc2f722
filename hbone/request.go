package hbone

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Handler answers HBONE CONNECT requests on a Server.
type Handler interface {
	// ServeHBONE must call exactly one of r.Accept and r.Reject; if it returns without either, the server
	// answers 503. ctx is cancelled when the stream or the connection dies.
	ServeHBONE(ctx context.Context, r *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request)

// ServeHBONE calls f(ctx, r).
func (f HandlerFunc) ServeHBONE(ctx context.Context, r *Request) { f(ctx, r) }

// Request is one inbound CONNECT request. Its methods are safe for concurrent use.
type Request struct {
	Authority  string               // :authority as received (validated with ParseAuthority)
	Header     http.Header          // regular request headers, canonical keys
	TLS        *tls.ConnectionState // of the carrying connection (peer certificates); nil without TLS
	RemoteAddr net.Addr             // of the TCP connection
	LocalAddr  net.Addr             // of the TCP connection

	s        *Stream
	answered bool // guarded by conn.mu
}

// Accept answers 200 (with hdr) and returns the tunnel. The caller owns the Stream and must Close it.
func (r *Request) Accept(hdr http.Header) (*Stream, error) {
	fields, ferr := responseFields(http.StatusOK, hdr)
	s, c := r.s, r.s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.answered {
		return nil, errAlreadyAnswered
	}
	if ferr != nil {
		return nil, fmt.Errorf("accept stream %d: %w", s.id, ferr)
	}
	if err := s.writeErrLocked(); err != nil {
		return nil, fmt.Errorf("accept stream %d: %w", s.id, err)
	}
	r.answered = true
	if !c.enqueueLocked(&writeItem{kind: wHeaders, streamID: s.id, fields: fields}) {
		return nil, fmt.Errorf("accept stream %d: %w", s.id, c.err)
	}
	return s, nil
}

// Reject answers with status code (300-599), ending the stream (END_STREAM on the response headers).
// reason is logged at debug level; HTTP/2 has no reason phrase.
func (r *Request) Reject(code int, reason string) error {
	if code < 300 || code > 599 {
		return fmt.Errorf("reject: status %d is not a 3xx-5xx code", code)
	}
	s, c := r.s, r.s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.answered {
		return errAlreadyAnswered
	}
	r.answered = true
	if err := s.writeErrLocked(); err != nil {
		return fmt.Errorf("reject stream %d: %w", s.id, err)
	}
	c.respondLocked(s, code)
	c.log.Debug("hbone request rejected", "stream", s.id, "authority", r.Authority, "status", code, "reason", reason)
	return nil
}

// respondLocked sends a final status with END_STREAM and ends the stream; an unfinished request side is
// then reset with NO_ERROR (RFC 9113 §8.1).
func (c *conn) respondLocked(s *Stream, code int) {
	// Request data that arrived before the answer will never be read: return its window now.
	c.consumedLocked(nil, int64(s.buf.reset()))
	fields := []hpack.HeaderField{{Name: ":status", Value: fmt.Sprint(code)}}
	c.enqueueLocked(&writeItem{kind: wHeaders, streamID: s.id, fields: fields, end: true})
	s.sentEnd = true
	if s.recvEnd {
		c.maybeFinishLocked(s)
		return
	}
	c.resetStreamLocked(s, ErrCodeNo, false)
}

// onRequestHeaders handles HEADERS on the server: a new CONNECT request, or trailers.
func (c *conn) onRequestHeaders(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := f.StreamID
	if s := c.streams[id]; s != nil {
		return c.onTrailersLocked(s, f)
	}
	if id%2 == 0 {
		return connErr(ErrCodeProtocol, "client opened an even stream id")
	}
	if id <= c.lastPeerID {
		return connErr(ErrCodeStreamClosed, "HEADERS on a closed stream")
	}
	c.lastPeerID = id
	if f.HasPriority() && f.Priority.StreamDep == id {
		// RFC 9113 §5.3.1 (RFC 7540): a stream cannot depend on itself.
		return c.enqueueReplyLocked(&writeItem{kind: wRST, streamID: id, code: ErrCodeProtocol})
	}
	if malformedRequest(f) {
		// RFC 9113 §8.1.1: a malformed request is a stream error; it is not answered.
		return c.enqueueReplyLocked(&writeItem{kind: wRST, streamID: id, code: ErrCodeProtocol})
	}
	// Handlers of reset streams may still be running: count them too, so a peer that opens and resets
	// streams in a loop cannot pile up goroutines ("rapid reset").
	if c.goAwaySent || c.closing || uint32(len(c.streams)) >= c.maxStreams || uint32(c.activeHandlers) >= c.maxStreams {
		return c.enqueueReplyLocked(&writeItem{kind: wRST, streamID: id, code: ErrCodeRefusedStream})
	}
	s := c.newStreamLocked(id)
	s.recvEnd = f.StreamEnded()
	if f.Truncated {
		c.respondLocked(s, http.StatusRequestHeaderFieldsTooLarge)
		return nil
	}
	authority := f.PseudoValue("authority")
	_, _, aerr := ParseAuthority(authority)
	// RFC 9113 §8.5: a CONNECT request has exactly :method and :authority (no extended CONNECT here).
	if f.PseudoValue("method") != http.MethodConnect || aerr != nil || f.PseudoValue("scheme") != "" ||
		f.PseudoValue("path") != "" || f.PseudoValue("protocol") != "" || c.handler == nil {
		code := http.StatusBadRequest
		if c.handler == nil {
			code = http.StatusServiceUnavailable
		}
		c.respondLocked(s, code)
		return nil
	}
	req := &Request{
		Authority:  authority,
		Header:     headerFromFields(f.RegularFields()),
		TLS:        c.tlsState,
		RemoteAddr: c.nc.RemoteAddr(),
		LocalAddr:  c.nc.LocalAddr(),
		s:          s,
	}
	ctx, cancel := context.WithCancel(c.ctx)
	s.cancel = cancel
	c.handlers.Add(1)
	c.activeHandlers++
	go c.runHandler(ctx, req)
	return nil
}

// malformedRequest reports requests RFC 9113 calls malformed (§8.2.2, §8.3.1): with a
// connection-specific header field, a TE other than "trailers", or, for methods other than CONNECT,
// without a non-empty :method, :scheme and :path. (The framer has already refused invalid field
// names and misplaced pseudo-headers; a CONNECT with :scheme or :path is answered 400 as a bad
// tunnel request, as the reference does.)
func malformedRequest(f *http2.MetaHeadersFrame) bool {
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return true
		case "te":
			if hf.Value != "trailers" {
				return true
			}
		}
	}
	method := f.PseudoValue("method")
	if method == http.MethodConnect {
		return false
	}
	return method == "" || f.PseudoValue("scheme") == "" || f.PseudoValue("path") == ""
}

// runHandler runs the handler for one request and answers 503 if it did not.
func (c *conn) runHandler(ctx context.Context, req *Request) {
	defer c.handlers.Done()
	c.handler.ServeHBONE(ctx, req)
	c.mu.Lock()
	answered := req.answered
	c.activeHandlers--
	c.mu.Unlock()
	if !answered {
		_ = req.Reject(http.StatusServiceUnavailable, "handler returned without answering")
	}
}
