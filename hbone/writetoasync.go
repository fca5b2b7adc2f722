package hbone

import (
	"io"
	"net"
)

// asyncCopy is the state of a WriteToAsync. total is touched only by the one drain goroutine that is
// running (a goroutine hands over to the next through conn.mu: it parks under mu, the next is started
// under mu); parked is guarded by conn.mu.
type asyncCopy struct {
	w      Sink
	done   func(int64, error)
	total  int64
	parked bool // no drain goroutine runs: the next read-side event must start one
}

// WriteToAsync does what WriteTo(w) does, but without a goroutine waiting while the stream is idle:
// a short-lived goroutine is started when bytes or the end of the stream arrive, writes what is
// buffered, and exits once the buffer is empty. done is called once, on such a goroutine, with what
// WriteTo would have returned (nil once the peer half-closed). An idle tunnel then costs no stack for
// this direction; received pieces still go straight from the read loop to w while w takes them (see
// deliverDirectLocked), and a drain goroutine is started only for what w did not take.
// Write errors of w are passed to done as they are, so the caller can tell them from the stream's.
//
// Read deadlines do not apply to it. It is a reader: Read, WriteTo and WriteToAsync must not be called
// on s afterwards. Close ends it (done gets net.ErrClosed).
func (s *Stream) WriteToAsync(w Sink, done func(int64, error)) {
	a := &asyncCopy{w: w, done: done}
	c := s.c
	c.mu.Lock()
	s.async = a
	c.mu.Unlock()
	go s.drainAsync()
}

// wakeReaderLocked tells the stream's reader that data arrived or the read side ended: it wakes a
// blocked Read or WriteTo, or starts a drain goroutine for a parked WriteToAsync.
func (s *Stream) wakeReaderLocked() {
	if a := s.async; a != nil {
		if a.parked {
			a.parked = false
			go s.drainAsync()
		}
		return
	}
	notify(s.readWake)
}

// drainAsync is one drain goroutine of WriteToAsync: the loop of WriteTo, except that where WriteTo
// would wait it parks the copy and returns.
func (s *Stream) drainAsync() {
	c, a := s.c, s.async
	for {
		c.mu.Lock()
		// Take w back from the read loop before anything else: it may be writing to it right now.
		s.sink = nil
		if s.sinkBusy {
			s.sinkWait = true // the read loop wakes us when it is done with w
			a.parked = true
			c.mu.Unlock()
			return
		}
		a.total += s.sinkN
		s.sinkN = 0
		if s.localClosed {
			c.mu.Unlock()
			a.done(a.total, net.ErrClosed)
			return
		}
		if s.buf.len() > 0 {
			n, err := s.writeFirstChunkLocked(a.w)
			a.total += int64(n)
			if err != nil {
				a.done(a.total, err)
				return
			}
			continue
		}
		err := s.readErrLocked()
		if err == nil {
			s.sink = a.w // parked with nothing buffered: the read loop may write to w
			a.parked = true
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if err == io.EOF {
			err = nil
		}
		a.done(a.total, err)
		return
	}
}
