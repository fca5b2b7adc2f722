package workload

import (
	"errors"
	"io"
	"maps"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reasons a stream to the control plane ended, as in the reference's
// istio_xds_connection_terminations_total{reason} (ztunnel-behavior.md §3.3).
const (
	TerminationConnectionError = "ConnectionError" // could not connect or open the stream
	TerminationError           = "Error"           // the stream failed
	TerminationReconnect       = "Reconnect"       // the server recycled the stream (e.g. MaxConnectionAge)
	TerminationComplete        = "Complete"        // the server closed the stream gracefully
)

// XDSStats are the client's counters since NewXDSClient. The maps are copies.
type XDSStats struct {
	Messages     map[string]uint64 // responses received, by type URL
	Bytes        map[string]uint64 // serialized size of the responses received, by type URL
	NACKs        map[string]uint64 // responses NACKed, by type URL
	Terminations map[string]uint64 // streams ended, by Termination* reason
}

func newXDSStats() XDSStats {
	return XDSStats{
		Messages:     map[string]uint64{},
		Bytes:        map[string]uint64{},
		NACKs:        map[string]uint64{},
		Terminations: map[string]uint64{},
	}
}

// Stats returns a copy of the client's counters.
func (c *XDSClient) Stats() XDSStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return XDSStats{
		Messages:     maps.Clone(c.stats.Messages),
		Bytes:        maps.Clone(c.stats.Bytes),
		NACKs:        maps.Clone(c.stats.NACKs),
		Terminations: maps.Clone(c.stats.Terminations),
	}
}

func (c *XDSClient) countResponse(typeURL string, size int, nacked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Messages[typeURL]++
	c.stats.Bytes[typeURL] += uint64(size)
	if nacked {
		c.stats.NACKs[typeURL]++
	}
}

func (c *XDSClient) countTermination(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Terminations[reason]++
}

// connectError marks a failure to dial or to open the stream.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// nextBackoff classifies how a stream ended (err nil = the server closed it with OK) and
// returns the termination reason and the delay before the next attempt, given the previous
// delay. Connection failures and most stream errors double the delay up to 15s; a graceful
// close, a local failure and the statuses istiod produces when it recycles streams reset it.
func nextBackoff(err error, prev time.Duration) (reason string, next time.Duration) {
	double := min(2*prev, xdsMaxBackoff)
	var ce *connectError
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return TerminationComplete, xdsInitialBackoff
	case errors.As(err, &ce):
		return TerminationConnectionError, double
	}
	st, ok := status.FromError(err)
	if !ok {
		return TerminationError, xdsInitialBackoff // a local failure: retry promptly
	}
	switch st.Code() {
	case codes.Unknown, codes.Canceled, codes.DeadlineExceeded:
		return TerminationReconnect, xdsInitialBackoff
	case codes.Unavailable:
		if msg := st.Message(); strings.Contains(msg, "transport is closing") || strings.Contains(msg, "received prior goaway") {
			return TerminationReconnect, xdsInitialBackoff
		}
	}
	return TerminationError, double
}
