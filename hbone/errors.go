package hbone

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/net/http2"
)

// ErrCode is an HTTP/2 error code (RFC 9113 §7), as carried in RST_STREAM and GOAWAY frames.
type ErrCode uint32

// HTTP/2 error codes (RFC 9113 §7).
const (
	ErrCodeNo                 ErrCode = 0x0
	ErrCodeProtocol           ErrCode = 0x1
	ErrCodeInternal           ErrCode = 0x2
	ErrCodeFlowControl        ErrCode = 0x3
	ErrCodeSettingsTimeout    ErrCode = 0x4
	ErrCodeStreamClosed       ErrCode = 0x5
	ErrCodeFrameSize          ErrCode = 0x6
	ErrCodeRefusedStream      ErrCode = 0x7
	ErrCodeCancel             ErrCode = 0x8
	ErrCodeCompression        ErrCode = 0x9
	ErrCodeConnect            ErrCode = 0xa
	ErrCodeEnhanceYourCalm    ErrCode = 0xb
	ErrCodeInadequateSecurity ErrCode = 0xc
	ErrCodeHTTP11Required     ErrCode = 0xd
)

func (c ErrCode) String() string { return http2.ErrCode(c).String() }

var (
	// ErrServerClosed is returned by Server.Serve after Server.Shutdown.
	ErrServerClosed = errors.New("hbone: server closed")
	// ErrPoolClosed is returned by Pool.Connect after Pool.Close. It unwraps to net.ErrClosed.
	ErrPoolClosed = fmt.Errorf("hbone: pool closed: %w", net.ErrClosed)

	errWriteAfterCloseWrite = errors.New("hbone: write after CloseWrite")
	errAlreadyAnswered      = errors.New("hbone: request already answered")
)

// ConnError reports that the HTTP/2 connection carrying a stream ended. It unwraps to net.ErrClosed and to
// the underlying cause (an I/O error, for example), if any.
type ConnError struct {
	Code   ErrCode // the GOAWAY code sent or received; ErrCodeNo for plain closes and I/O errors
	Remote bool    // true if the peer ended the connection (GOAWAY received, socket closed by the peer)
	Reason string  // what happened, e.g. "ping timeout"
	Err    error   // the underlying cause; may be nil
}

func (e *ConnError) Error() string {
	s := "hbone: connection closed"
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Code != ErrCodeNo {
		s += " (" + e.Code.String() + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap makes errors.Is(err, net.ErrClosed) true for every ConnError.
func (e *ConnError) Unwrap() []error {
	if e.Err == nil {
		return []error{net.ErrClosed}
	}
	return []error{net.ErrClosed, e.Err}
}

// StreamError reports that one stream was reset (RST_STREAM) while its connection stays usable.
type StreamError struct {
	StreamID uint32
	Code     ErrCode
	Remote   bool // true if the peer sent the RST_STREAM, false if we did
}

func (e *StreamError) Error() string {
	by := "locally"
	if e.Remote {
		by = "by peer"
	}
	return fmt.Sprintf("hbone: stream %d reset %s: %v", e.StreamID, by, e.Code)
}

// PeerReset reports whether the peer reset the stream (as opposed to this side, after a protocol or
// flow-control error): the tunnel's other end meant to cut it, as a TCP reset does.
func (e *StreamError) PeerReset() bool { return e.Remote }

// StatusError is returned by Pool.Connect when the server answers the CONNECT with a status other than 200.
type StatusError struct {
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hbone: CONNECT rejected with status %d", e.Code)
}

// retryableError marks a Connect failure that happened before the server processed the request (GOAWAY
// or REFUSED_STREAM, or a connection that became unusable before the request was sent).
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

func isRetryable(err error) bool {
	var r *retryableError
	return errors.As(err, &r)
}
