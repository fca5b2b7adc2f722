package hbone

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// maxWriteChunk bounds the bytes handed to the writer per item, so one stream cannot hold the writer
// (and the other streams' frames) for long.
const maxWriteChunk = 256 << 10

// Stream is one HBONE tunnel: a CONNECT stream carrying one TCP connection. It implements net.Conn
// (with working deadlines) plus CloseWrite for half-close.
//
// Stream is safe for one concurrent reader and one concurrent writer; Close, CloseWrite and the deadline
// setters may be called from any goroutine.
type Stream struct {
	c  *conn
	id uint32

	rdl, wdl  lazyDeadline  // created by the first Set*Deadline with a non-zero time
	readWake  chan struct{} // 1-buffered: data arrived, or the read side ended
	sendWake  chan struct{} // 1-buffered: send window grew, or the stream ended
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
	respReady chan struct{} // client: closed once respDone is set
	cancel    context.CancelFunc

	wmu   sync.Mutex // serialises Write and CloseWrite, guards witem and wdone use
	witem writeItem
	wdone chan error

	// Guarded by conn.mu.
	buf         recvBuf
	sendWin     int64 // bytes we may still send
	recvAvail   int64 // bytes the peer may still send
	recvUnacked int64 // consumed bytes not yet returned with WINDOW_UPDATE
	wantCredit  bool  // a writer waits for send window
	sentEnd     bool  // we sent (queued) END_STREAM
	recvEnd     bool  // the peer sent END_STREAM
	localClosed bool  // Close was called
	done        bool  // removed from the connection (both ends done, reset, or conn closed)
	rst         *StreamError
	connErr     error
	respDone    bool // client: the final response (or a failure) arrived
	status      int
	respHeader  http.Header
	respErr     error

	// WriteTo's hand-over to the read loop (directsink.go), guarded by conn.mu.
	sink     Sink  // set while WriteTo waits with nothing buffered and w is a Sink
	sinkBusy bool  // the read loop is writing to sink; WriteTo must not touch w
	sinkWait bool  // WriteTo waits for sinkBusy to clear: notify readWake
	sinkN    int64 // bytes the read loop wrote to sink, not yet counted by WriteTo

	async *asyncCopy // set by WriteToAsync (writetoasync.go), guarded by conn.mu
}

func newStream(c *conn, id uint32) *Stream {
	return &Stream{
		c:        c,
		id:       id,
		readWake: make(chan struct{}, 1),
		sendWake: make(chan struct{}, 1),
		closed:   make(chan struct{}),
		wdone:    make(chan error, 1),
	}
}

// Read reads tunnel bytes. It returns io.EOF once the peer half-closed (END_STREAM), after all data
// before that was read. A reset (RST_STREAM from the peer, whatever its code, or a local one) is an
// error, *StreamError, once the data received before it was read: unlike the reference, which reads a
// peer's NO_ERROR or CANCEL reset as EOF, a tunnel cut short is never mistaken for a complete one
// (RFC 9113 §8.5: a reset stream is a TCP reset).
func (s *Stream) Read(p []byte) (int, error) {
	c := s.c
	for {
		if s.rdl.get().expired() {
			return 0, os.ErrDeadlineExceeded
		}
		c.mu.Lock()
		if s.localClosed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if s.buf.len() > 0 {
			n := s.buf.read(p)
			c.consumedLocked(s, int64(n))
			c.mu.Unlock()
			return n, nil
		}
		err := s.readErrLocked()
		c.mu.Unlock()
		if err != nil || len(p) == 0 {
			return 0, err
		}
		select {
		case <-s.readWake:
		case <-s.rdl.get().wait():
		case <-s.closed:
		}
	}
}

// readErrLocked is what Read returns once the buffer is empty, or nil if more data may come.
func (s *Stream) readErrLocked() error {
	switch {
	case s.recvEnd:
		return io.EOF
	case s.rst != nil:
		return s.rst
	case s.connErr != nil:
		return s.connErr
	}
	return nil
}

// writeErrLocked is why Write cannot send, or nil.
func (s *Stream) writeErrLocked() error {
	switch {
	case s.localClosed:
		return net.ErrClosed
	case s.sentEnd:
		return errWriteAfterCloseWrite
	case s.rst != nil:
		return s.rst
	case s.connErr != nil:
		return s.connErr
	}
	return nil
}

// Write sends p as DATA frames, within the peer's flow-control windows. It blocks until p has been
// handed to the connection's writer, the write deadline passes, or the stream ends.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n := 0
	for len(p) > 0 {
		k, err := s.takeCredit(len(p))
		if err != nil {
			return n, err
		}
		if err := s.sendData(p[:k], nil); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// takeCredit waits until the stream and connection send windows are both open and takes up to max bytes
// of them.
func (s *Stream) takeCredit(max int) (int, error) {
	c := s.c
	for {
		if s.wdl.get().expired() {
			return 0, os.ErrDeadlineExceeded
		}
		c.mu.Lock()
		if err := s.writeErrLocked(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		k := min(int64(max), s.sendWin, c.sendWin, maxWriteChunk)
		if k > 0 {
			s.sendWin -= k
			c.sendWin -= k
			s.wantCredit = false
			c.mu.Unlock()
			return int(k), nil
		}
		s.wantCredit = true
		c.mu.Unlock()
		select {
		case <-s.sendWake:
		case <-s.wdl.get().wait():
		case <-s.closed:
		}
	}
}

// sendData queues one DATA item (credit already taken) and waits until it is written. If no goroutine
// holds the writer role, this one takes it and writes the item itself. Otherwise, if the deadline
// passes or the stream is closed before the writer took it, it is withdrawn and its credit returned.
//
// framed, if non-nil, is p with FrameHeaderRoom writable bytes in front (a WriteHeadroom buffer), so
// that the writer may build the frame headers in place rather than copy p into its buffer.
func (s *Stream) sendData(p, framed []byte) error {
	c := s.c
	c.mu.Lock()
	err := s.writeErrLocked()
	// Nobody is writing: take the writer role before queuing, so the writer goroutine is not woken,
	// and write the item (and whatever else is queued) on this goroutine.
	inline := err == nil && !c.writing
	if inline {
		c.writing = true
	}
	if err == nil {
		s.witem = writeItem{kind: wData, streamID: s.id, data: p, framed: framed, done: s.wdone}
		if !c.enqueueLocked(&s.witem) {
			err = c.err
			if err == nil {
				err = &ConnError{Reason: "connection closing"}
			}
		}
	}
	if err != nil {
		if inline {
			c.writing = false
			if len(c.wq) > 0 {
				c.wcond.Broadcast()
			}
		}
		s.giveBackLocked(len(p))
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	if inline {
		c.writeInline()
		return <-s.wdone
	}

	answered, err := s.waitWritten()
	if answered {
		return err
	}
	c.mu.Lock()
	withdrawn := c.withdrawLocked(&s.witem)
	if withdrawn {
		s.giveBackLocked(len(p))
	}
	c.mu.Unlock()
	if withdrawn {
		return err
	}
	// The writer has the item: it answers promptly (socket writes are bounded by a deadline).
	return <-s.wdone
}

// waitWritten waits for the queued item's result (answered), the write deadline or Close. On the
// latter two it returns os.ErrDeadlineExceeded or net.ErrClosed with the item maybe still queued: the
// caller withdraws it then.
func (s *Stream) waitWritten() (answered bool, err error) {
	for {
		select {
		case err := <-s.wdone:
			return true, err
		case <-s.wdl.get().wait():
			return false, os.ErrDeadlineExceeded
		case <-s.closed:
			return false, net.ErrClosed
		case <-s.sendWake:
			// The window grew (takeCredit re-checks it anyway) or a write deadline was just created:
			// wait again, with its channel.
		}
	}
}

func (s *Stream) giveBackLocked(n int) {
	s.sendWin += int64(n)
	s.c.sendWin += int64(n)
}

// CloseWrite half-closes the tunnel: it sends END_STREAM (an empty DATA frame). The peer reads io.EOF;
// this side can keep reading. Calling it again is a no-op.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.sentEnd && !s.localClosed {
		return nil
	}
	if err := s.writeErrLocked(); err != nil {
		return err
	}
	if !c.enqueueLocked(&writeItem{kind: wData, streamID: s.id, end: true}) {
		return c.err
	}
	s.sentEnd = true
	c.maybeFinishLocked(s)
	return nil
}

// Close ends both directions. If the stream has not ended both ways already it is reset with CANCEL.
// Unread data is discarded. Blocked Read and Write calls return.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.localClosed {
		return nil
	}
	s.localClosed = true
	c.consumedLocked(nil, int64(s.buf.reset()))
	if !s.done {
		c.resetStreamLocked(s, ErrCodeCancel, false)
	}
	s.wakeReaderLocked() // defensive: a parked WriteToAsync has no goroutine to see s.closed
	return nil
}

// Abort ends both directions at once with RST_STREAM(CONNECT_ERROR), the HTTP/2 form of a TCP reset
// (RFC 9113 §8.5): the peer resets the TCP connection it carries the tunnel to. Use it when the TCP
// connection on this side failed or was reset; Close (CANCEL) is for ending a tunnel the local side no
// longer wants. Unread data is discarded; blocked Read and Write calls return. After Close or Abort,
// Abort does nothing.
func (s *Stream) Abort() error {
	c := s.c
	c.mu.Lock()
	if !s.localClosed && !s.done {
		c.resetStreamLocked(s, ErrCodeConnect, false)
	}
	c.mu.Unlock()
	return s.Close()
}

// HeadroomBuffer is the buffer layout WriteHeadroom works best with: room bytes free in front of the
// payload, size bytes in all (room plus a whole number of the largest DATA frames, so every frame
// fills whole TLS records).
func (s *Stream) HeadroomBuffer() (room, size int) {
	return FrameHeaderRoom, FrameHeaderRoom + 4*MaxDataWrite
}

// ResponseHeader returns the headers of the CONNECT response (client side); nil on the server side.
func (s *Stream) ResponseHeader() http.Header { return s.respHeader }

// LocalAddr returns the local address of the underlying connection.
func (s *Stream) LocalAddr() net.Addr { return s.c.nc.LocalAddr() }

// RemoteAddr returns the remote address of the underlying connection.
func (s *Stream) RemoteAddr() net.Addr { return s.c.nc.RemoteAddr() }

// SetDeadline sets both the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.setReadDeadline(t)
	s.setWriteDeadline(t)
	return nil
}

// SetReadDeadline sets the read deadline; Read then fails with os.ErrDeadlineExceeded.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.setReadDeadline(t)
	return nil
}

// SetWriteDeadline sets the write deadline; Write then fails with os.ErrDeadlineExceeded.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.setWriteDeadline(t)
	return nil
}

// setReadDeadline sets the read deadline. A reader blocked before the deadline object existed waits on
// a nil channel for it: wake it so it re-checks (spurious wake-ups are harmless, Read and WriteTo loop).
func (s *Stream) setReadDeadline(t time.Time) {
	if s.rdl.set(t) {
		notify(s.readWake)
	}
}

// setWriteDeadline sets the write deadline, waking a writer blocked before the deadline object existed
// (takeCredit and sendData both also wait on sendWake and re-check).
func (s *Stream) setWriteDeadline(t time.Time) {
	if s.wdl.set(t) {
		notify(s.sendWake)
	}
}

var _ net.Conn = (*Stream)(nil)
