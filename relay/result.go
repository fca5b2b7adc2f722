package relay

import (
	"errors"
	"syscall"
)

// Result reports what moved through a relayed connection and how it ended.
type Result struct {
	// Received counts bytes from downstream to upstream, Sent the other way: Istio's convention for
	// istio_tcp_received_bytes_total and istio_tcp_sent_bytes_total.
	Received, Sent int64
	// Down and Up say how each side ended.
	Down, Up End
	// Err is why the relay failed: a *Error when a side reset or failed, the context's cause when the
	// context ended first; nil when both directions ended with end of stream.
	Err error
}

// End is how one side of a relayed connection ended.
type End uint8

const (
	// Closed: the relay closed the side before it ended on its own (the other side failed, or the
	// context ended).
	Closed End = iota
	// FIN: the side ended its byte stream cleanly (TCP FIN, HTTP/2 END_STREAM).
	FIN
	// Reset: the side reset the connection (TCP RST, RST_STREAM from the peer), or went away while
	// bytes were still being sent to it (EPIPE).
	Reset
	// Failed: the side's transport failed: an I/O error, or a tunnel whose HTTP/2 connection died
	// (ping timeout, protocol error, closed socket).
	Failed
)

func (e End) String() string {
	switch e {
	case FIN:
		return "FIN"
	case Reset:
		return "reset"
	case Failed:
		return "failed"
	}
	return "closed"
}

// Error is the failure that aborted a relay.
type Error struct {
	Side string // "downstream" or "upstream"
	End  End    // Reset or Failed
	Op   string // what the relay was doing with that side: "read", "write" or "half-close"
	Err  error
}

func (e *Error) Error() string {
	what := "failed"
	if e.End == Reset {
		what = "reset the connection"
	}
	return e.Side + " " + what + " (" + e.Op + "): " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// classify tells a reset from other failures. Errors that know they are a reset say so with a
// PeerReset method (an HBONE stream reset by its peer).
func classify(err error) End {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return Reset
	}
	var pr interface{ PeerReset() bool }
	if errors.As(err, &pr) && pr.PeerReset() {
		return Reset
	}
	return Failed
}
