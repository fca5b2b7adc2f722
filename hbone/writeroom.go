package hbone

import (
	"errors"

	"golang.org/x/net/http2"
)

// FrameHeaderRoom is how many bytes WriteHeadroom needs free in front of the payload: the size of an
// HTTP/2 frame header (RFC 9113 §4.1).
const FrameHeaderRoom = frameHeaderLen

var errNoHeadroom = errors.New("hbone: WriteHeadroom buffer shorter than FrameHeaderRoom")

// WriteHeadroom sends b[FrameHeaderRoom:] as Write does, but without copying it when it can: each
// DATA frame header is written in place, the first into b[:FrameHeaderRoom] and every later one over
// the last bytes of the payload already sent, and the frames go from b to the connection's socket
// (its TLS layer) directly. That takes the connection's writer role being free with nothing queued
// when a piece is ready to go; otherwise the piece takes Write's path (queued, one copy). Flow
// control, deadlines and ordering are Write's. b's contents are undefined afterwards. It returns how
// many payload bytes were sent.
//
// A caller copying from a socket reads into b[FrameHeaderRoom:], with b at most FrameHeaderRoom plus
// a multiple of MaxDataWrite long, so that every frame fills whole TLS records.
func (s *Stream) WriteHeadroom(b []byte) (int, error) {
	if len(b) < FrameHeaderRoom {
		return 0, errNoHeadroom
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n := 0
	for len(b) > FrameHeaderRoom {
		k, err := s.takeCredit(len(b) - FrameHeaderRoom)
		if err != nil {
			return n, err
		}
		if err := s.sendInPlace(b[:FrameHeaderRoom+k]); err != nil {
			return n, err
		}
		n += k
		b = b[k:] // the next header goes over the last FrameHeaderRoom bytes just sent
	}
	return n, nil
}

// sendInPlace sends f[FrameHeaderRoom:] (credit already taken) as DATA frames built in place in f,
// written to the socket by this goroutine, if the writer role is free and nothing is queued: then
// everything queued before has reached the socket, so the frames keep their place in the stream's
// order. Otherwise it falls back to sendData. Frames queued for the writer meanwhile are written
// after ours, on this goroutine (as writeInline does), before the role is released.
func (s *Stream) sendInPlace(f []byte) error {
	c := s.c
	c.mu.Lock()
	if c.writing || len(c.wq) > 0 || c.err != nil || c.closing || s.writeErrLocked() != nil {
		c.mu.Unlock()
		return s.sendData(f[FrameHeaderRoom:], f) // it re-checks the errors and returns the credit
	}
	c.writing = true
	maxFrame := min(c.peerMaxFrame, c.cfg.MaxFrameSize)
	c.mu.Unlock()

	c.renewWriteDeadline()
	if err := c.writeFramesInPlace(s.id, f, maxFrame, false); err != nil {
		c.close(&ConnError{Reason: "write failed", Err: err})
		c.mu.Lock()
		c.writing = false
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	if len(c.wq) == 0 || c.err != nil {
		c.writing = false
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	c.writeInline() // releases the role
	return nil
}

// writeFramesInPlace writes f[FrameHeaderRoom:] to the socket as DATA frames of stream id of at most
// maxFrame (and MaxDataWrite) bytes, each header written into the FrameHeaderRoom bytes in front of
// its payload: f's room for the first, the end of the previous payload (already written) for the
// others. The caller holds the writer role, with nothing buffered in c.bw. If inBatch, the caller's
// write batch is open and the frames join it; otherwise each frame goes out as writeFrame sends it.
func (c *conn) writeFramesInPlace(id uint32, f []byte, maxFrame uint32, inBatch bool) error {
	limit := min(int(maxFrame), MaxDataWrite)
	for len(f) > FrameHeaderRoom {
		n := min(len(f)-FrameHeaderRoom, limit)
		putDataHeader(f, n, id, false)
		frame := f[:FrameHeaderRoom+n]
		var err error
		if inBatch {
			_, err = c.nc.Write(frame)
		} else {
			err = c.writeFrame(frame)
		}
		if err != nil {
			return err
		}
		f = f[n:]
	}
	return nil
}

// putDataHeader writes the header of a DATA frame of n payload bytes on stream id into h[:9].
func putDataHeader(h []byte, n int, id uint32, end bool) {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	_ = h[frameHeaderLen-1]
	h[0], h[1], h[2] = byte(n>>16), byte(n>>8), byte(n)
	h[3], h[4] = byte(http2.FrameData), flags
	h[5], h[6], h[7], h[8] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
}

// writeFrame writes one frame to nc; a frame larger than one TLS record goes as one write batch.
func (c *conn) writeFrame(f []byte) error {
	if len(f) <= tlsRecordPayload {
		_, err := c.nc.Write(f)
		return err
	}
	c.beginBatch()
	_, err := c.nc.Write(f)
	if berr := c.endBatch(); err == nil {
		err = berr
	}
	return err
}
