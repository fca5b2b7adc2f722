package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type role uint8

const (
	roleClient role = iota
	roleServer
)

func (r role) String() string {
	if r == roleClient {
		return "client"
	}
	return "server"
}

const (
	// tlsRecordPayload is the largest TLS record payload (RFC 8446 §5.1). crypto/tls writes each record
	// with its own write(2), so the writer hands it whole multiples of this.
	tlsRecordPayload = 16 << 10
	// writeBufferSize is the size of the buffered writer in front of the socket: four full TLS records.
	// The writer flushes it when full (whole records) and at the end of each batch.
	writeBufferSize = 4 * tlsRecordPayload
	// maxStreamID is the largest stream identifier (RFC 9113 §5.1.1).
	maxStreamID = 1<<31 - 1
	// maxQueuedControl bounds the frames queued for the writer in answer to the peer (PING and SETTINGS
	// acknowledgements, resets); a peer that makes us queue more is flooding us (ENHANCE_YOUR_CALM).
	maxQueuedControl = 1024
	// goAwayFlushWait is how long a failing connection waits for its GOAWAY to be written before closing.
	goAwayFlushWait = time.Second
	// closeGrace is how long closing a TLS connection may wait for its close_notify alert to be written
	// before the socket under the TLS layer is closed anyway. A peer that stopped reading would otherwise
	// hold every closer for crypto/tls's own 5 s alert deadline (x/net's HTTP/2 gives such closes 250 ms
	// too).
	closeGrace = 250 * time.Millisecond
)

// conn is one HTTP/2 connection, client or server side: the shared engine under Pool and Server.
//
// Goroutines: the read loop (owns rfr; makes every protocol decision), the writer goroutine, the
// keepalive loop and the callers of Stream.Write. Whoever holds the writer role (conn.writing, see
// write.go) owns wfr, bw, henc, hbuf and wdeadline. They share the fields guarded by mu.
type conn struct {
	// Immutable after newConn.
	role role
	nc   net.Conn
	cfg  Config
	log  *slog.Logger
	rfr  *http2.Framer // read loop only

	// Used only by the goroutine holding the writer role, kept here so writing allocates nothing.
	hdrScratch    [frameHeaderLen]byte // the DATA frame header being written (writeData)
	inlineBatch   []*writeItem         // writeInline's batch
	wfr           *http2.Framer        // writer role only
	bw            *pooledWriter        // writer role only; holds a buffer only between a write and its flush
	sock          *sockConn            // the socket under nc's TLS layer, for write batches; nil if nc is not one
	henc          *hpack.Encoder
	hbuf          bytes.Buffer // writer role only: henc's output
	wdeadline     time.Time    // writer role only: the write deadline last set on nc
	start         time.Time
	done          chan struct{} // closed when the connection is closed
	writerDone    chan struct{} // closed when the writer goroutine has exited
	ctx           context.Context
	cancel        context.CancelFunc
	idleTimeout   time.Duration        // client: close after this long without streams; 0 = never
	onGone        func(*conn)          // client: called once, without mu, when the conn must get no new streams
	onClosed      func(*conn)          // called once, without mu, after the conn closed
	readDone      chan struct{}        // closed when the read loop has returned
	handler       Handler              // server
	maxStreams    uint32               // server: our SETTINGS_MAX_CONCURRENT_STREAMS
	tlsState      *tls.ConnectionState // server: TLS state of nc, if any
	handlers      sync.WaitGroup
	lastReadNanos atomic.Int64 // time since start when the last frame was read

	// mu guards everything below, and the fields of every Stream documented as guarded by conn.mu.
	// Lock order: Pool.mu, then conn.mu. Never held during socket I/O or while calling out of the package.
	mu             sync.Mutex
	wcond          *sync.Cond // signalled with mu when wq becomes non-empty or the conn closes
	wq             []*writeItem
	writing        bool  // a goroutine holds the writer role: it alone writes to the socket
	closing        bool  // a close item is queued: nothing more may be queued, no new streams
	err            error // *ConnError once closed
	goneNotified   bool
	streams        map[uint32]*Stream
	lastPeerID     uint32 // highest stream id the peer opened (server)
	nextID         uint32 // next stream id we open (client)
	reserved       int    // client: slots reserved by the pool, not yet opened
	singleUse      bool   // client: close once the last stream is gone (ConnectOver)
	activeHandlers int    // server: handler goroutines running
	idleTimer      *time.Timer

	sawSettings       bool
	peerMaxFrame      uint32
	peerInitWindow    int64
	peerMaxStreams    uint32
	peerMaxHeaderList uint32 // 0 = no limit announced

	sendWin     int64 // connection-level send window
	recvAvail   int64 // connection-level bytes the peer may still send
	recvUnacked int64 // bytes consumed but not yet returned with WINDOW_UPDATE

	goAwaySent bool
	goAwayRecv bool

	pingOutstanding bool
	pingData        [8]byte
	pingSent        time.Duration // since start
}

// newConn sets up a connection and queues its preface (client), SETTINGS and connection WINDOW_UPDATE.
// maxStreams is announced as SETTINGS_MAX_CONCURRENT_STREAMS by a server. Call run to start it.
func newConn(parent context.Context, r role, nc net.Conn, cfg Config, maxHeaderList, maxStreams uint32) *conn {
	c := &conn{
		role:           r,
		nc:             nc,
		cfg:            cfg,
		log:            cfg.Logger.With("hbone.role", r.String(), "peer", addrString(nc.RemoteAddr())),
		start:          time.Now(),
		done:           make(chan struct{}),
		writerDone:     make(chan struct{}),
		readDone:       make(chan struct{}),
		streams:        make(map[uint32]*Stream),
		peerMaxFrame:   minFrameSize,
		peerInitWindow: initialWindow,
		peerMaxStreams: math.MaxUint32,
		sendWin:        initialWindow,
		recvAvail:      int64(cfg.ConnWindow),
		maxStreams:     maxStreams,
	}
	c.wcond = sync.NewCond(&c.mu)
	c.ctx, c.cancel = context.WithCancel(parent)
	c.rfr = http2.NewFramer(nil, nc)
	c.rfr.SetReuseFrames()
	c.rfr.SetMaxReadFrameSize(cfg.MaxFrameSize)
	c.rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.rfr.MaxHeaderListSize = maxHeaderList
	c.bw = &pooledWriter{w: nc}
	c.sock = sockConnOf(nc)
	c.wfr = http2.NewFramer(c.bw, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)

	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: cfg.StreamWindow},
		{ID: http2.SettingMaxFrameSize, Val: cfg.MaxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	}
	if r == roleClient {
		c.nextID = 1
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		c.enqueueLocked(&writeItem{kind: wPreface})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.maxStreams})
	}
	c.enqueueLocked(&writeItem{kind: wSettings, settings: settings})
	if inc := cfg.ConnWindow - initialWindow; inc > 0 {
		c.enqueueLocked(&writeItem{kind: wWindowUpdate, incr: inc})
	}
	return c
}

// run starts the writer and keepalive goroutines.
func (c *conn) run() {
	go c.writeLoop()
	go c.keepalive()
}

// sinceStart is the monotonic time since the connection started.
func (c *conn) sinceStart() time.Duration { return time.Since(c.start) }

// close ends the connection with cause (wrapped as *ConnError if it is not one). It is idempotent: the
// first cause wins. Every stream fails with the cause, queued writes are answered, the socket is closed.
// It returns within about closeGrace even if the peer stopped reading (see closeSocket).
func (c *conn) close(cause error) {
	ce := asConnError(cause)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = ce
	for _, it := range c.wq {
		if it.done != nil {
			it.done <- ce
		}
	}
	c.wq = nil
	c.wcond.Broadcast()
	for _, s := range c.streams {
		s.connErr = ce
		if s.respReady != nil && !s.respDone {
			s.respDone = true
			s.respErr = ce
			close(s.respReady)
		}
		c.finishStreamLocked(s)
	}
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	close(c.done)
	c.mu.Unlock()

	c.cancel()
	c.closeSocket()
	c.notifyGone()
	if c.onClosed != nil {
		c.onClosed(c)
	}
	c.log.Debug("hbone connection closed", "reason", ce.Error())
}

// closeSocket closes nc. Closing a TLS connection first writes a close_notify alert, which waits behind
// any batch write blocked on a full socket (sockConn holds its lock across that write) and then for
// the socket itself, up to 5 s (crypto/tls's alert deadline). If that takes longer than closeGrace, the
// socket under the TLS layer is closed: the blocked writes fail at once and Close returns.
func (c *conn) closeSocket() {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		_ = c.nc.Close()
		return
	}
	raw := tc.NetConn()
	force := time.AfterFunc(closeGrace, func() { _ = raw.Close() })
	_ = tc.Close()
	force.Stop()
}

// wait blocks until the read loop and the writer have exited (after close).
func (c *conn) wait() {
	<-c.readDone
	<-c.writerDone
}

// closeGracefullyLocked queues a close after everything already queued has been written (the writer
// flushes, then closes). No-op if the connection is already closing.
func (c *conn) closeGracefullyLocked(cause error) {
	if c.closing || c.err != nil {
		return
	}
	c.wq = append(c.wq, &writeItem{kind: wClose, cause: cause})
	c.closing = true
	c.wcond.Signal()
}

// failConn reports a connection error: GOAWAY(code) is sent (best effort, bounded wait), then the
// connection closes. It returns the *ConnError for the read loop to return.
func (c *conn) failConn(code ErrCode, reason string) error {
	ce := &ConnError{Code: code, Reason: reason}
	c.mu.Lock()
	c.enqueueLocked(&writeItem{kind: wGoAway, streamID: c.lastPeerID, code: code, data: []byte(reason)})
	c.closeGracefullyLocked(ce)
	c.mu.Unlock()
	t := time.NewTimer(goAwayFlushWait)
	defer t.Stop()
	select {
	case <-c.writerDone:
	case <-t.C:
	}
	c.close(ce)
	return ce
}

// notifyGone tells the pool (once) that this connection takes no more streams. Called without mu.
func (c *conn) notifyGone() {
	c.mu.Lock()
	notified := c.goneNotified
	c.goneNotified = true
	c.mu.Unlock()
	if !notified && c.onGone != nil {
		c.onGone(c)
	}
}

// usableLocked reports whether new streams may be opened on the connection.
func (c *conn) usableLocked() bool {
	return c.err == nil && !c.closing && !c.goAwayRecv && !c.goAwaySent && c.nextID <= maxStreamID
}

// newStreamLocked registers a stream with the current windows.
func (c *conn) newStreamLocked(id uint32) *Stream {
	s := newStream(c, id)
	s.sendWin = c.peerInitWindow
	s.recvAvail = int64(c.cfg.StreamWindow)
	c.streams[id] = s
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	return s
}

// maybeFinishLocked frees s once both directions have ended.
func (c *conn) maybeFinishLocked(s *Stream) {
	if s.sentEnd && s.recvEnd {
		c.finishStreamLocked(s)
	}
}

// finishStreamLocked removes s from the connection: it no longer counts against concurrency limits.
// Data already buffered in s stays readable.
func (c *conn) finishStreamLocked(s *Stream) {
	if s.done {
		return
	}
	s.done = true
	delete(c.streams, s.id)
	if s.cancel != nil {
		s.cancel()
	}
	s.wakeReaderLocked()
	notify(s.sendWake)
	c.streamsChangedLocked()
}

// resetStreamLocked ends s abruptly with code; if !remote an RST_STREAM is sent.
func (c *conn) resetStreamLocked(s *Stream, code ErrCode, remote bool) {
	if s.done {
		return
	}
	s.rst = &StreamError{StreamID: s.id, Code: code, Remote: remote}
	if !remote {
		c.enqueueLocked(&writeItem{kind: wRST, streamID: s.id, code: code})
	}
	if s.respReady != nil && !s.respDone {
		s.respDone = true
		s.respErr = s.rst
		if remote && code == ErrCodeRefusedStream {
			s.respErr = &retryableError{err: s.rst}
		}
		close(s.respReady)
	}
	c.finishStreamLocked(s)
}

// streamsChangedLocked runs after a stream ended or a reservation was dropped: it arms the idle timer
// and completes a graceful shutdown once the last stream is gone.
func (c *conn) streamsChangedLocked() {
	if c.err != nil || len(c.streams)+c.reserved > 0 {
		return
	}
	if c.singleUse && !c.closing {
		c.enqueueLocked(&writeItem{kind: wGoAway, code: ErrCodeNo, data: []byte("done")})
		c.closeGracefullyLocked(&ConnError{Reason: "its one stream ended"})
		return
	}
	if c.goAwaySent || c.goAwayRecv {
		c.closeGracefullyLocked(&ConnError{Remote: c.goAwayRecv, Reason: "GOAWAY and no streams left"})
		return
	}
	if c.idleTimeout > 0 {
		if c.idleTimer == nil {
			c.idleTimer = time.AfterFunc(c.idleTimeout, c.onIdle)
		} else {
			c.idleTimer.Reset(c.idleTimeout)
		}
	}
}

// onIdle closes a client connection that has had no streams for idleTimeout.
func (c *conn) onIdle() {
	c.mu.Lock()
	idle := c.err == nil && !c.closing && len(c.streams)+c.reserved == 0
	if idle {
		c.enqueueLocked(&writeItem{kind: wGoAway, code: ErrCodeNo, data: []byte("idle")})
		c.closeGracefullyLocked(&ConnError{Reason: "idle timeout"})
	}
	c.mu.Unlock()
	if idle {
		c.notifyGone()
	}
}

// consumedLocked returns n bytes of receive window to the peer (connection level, and stream level if
// s is non-nil and still receiving), batching WINDOW_UPDATEs until half a window has been consumed.
func (c *conn) consumedLocked(s *Stream, n int64) {
	if n <= 0 {
		return
	}
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.cfg.ConnWindow/2) {
		c.enqueueLocked(&writeItem{kind: wWindowUpdate, incr: uint32(c.recvUnacked)})
		c.recvAvail += c.recvUnacked
		c.recvUnacked = 0
	}
	if s == nil || s.recvEnd || s.done {
		return
	}
	s.recvUnacked += n
	if s.recvUnacked >= int64(c.cfg.StreamWindow/2) {
		c.enqueueLocked(&writeItem{kind: wWindowUpdate, streamID: s.id, incr: uint32(s.recvUnacked)})
		s.recvAvail += s.recvUnacked
		s.recvUnacked = 0
	}
}

// asConnError wraps err as a *ConnError unless it already is one.
func asConnError(err error) *ConnError {
	var ce *ConnError
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, io.EOF) {
		return &ConnError{Remote: true, Reason: "peer closed the connection", Err: err}
	}
	return &ConnError{Err: err}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
