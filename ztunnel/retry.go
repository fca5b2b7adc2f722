package ztunnel

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/ztunnel-go/ztunnel/hbone"
	"github.com/ztunnel-go/ztunnel/workload"
)

// maxUpstreamAttempts bounds the attempts of one outbound connection to a service: the first
// endpoint and at most two others (Envoy's TCP proxy default max_connect_attempts is 1; Istio's
// HTTP retry default is 2 retries, which is what this follows).
const maxUpstreamAttempts = 3

// setupError is a failure to prepare an attempt on one endpoint (its configuration does not let
// it be reached: no address, no gateway): another endpoint may do, but the host did not fail.
type setupError struct{ err error }

func (e *setupError) Error() string { return e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// localError is a failure on this side that no other endpoint would avoid (our certificate could
// not be had): no retry, and the host did not fail.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// classifyConnect says what a connect error means: the outcome to report for the host (0 for
// none), the status of a CONNECT answered non-200, and whether another endpoint should be tried.
// err nil is a success. A connection whose client went away (ctx done) is nobody's failure.
func classifyConnect(ctx context.Context, err error) (o outcome, status int, retry bool) {
	if err == nil {
		return outcomeConnectOK, 0, false
	}
	if ctx.Err() != nil || errors.Is(err, hbone.ErrPoolClosed) {
		return 0, 0, false
	}
	var le *localError
	if errors.As(err, &le) {
		return 0, 0, false
	}
	var se *setupError
	if errors.As(err, &se) {
		return 0, 0, true
	}
	var st *hbone.StatusError
	if errors.As(err, &st) {
		// 5xx: the destination's proxy could not reach the workload (or is overloaded); anything
		// else (401 denied by policy, 400) another endpoint would answer the same way.
		return outcomeStatus, st.Code, st.Code >= 500
	}
	var sr *hbone.StreamError
	if errors.As(err, &sr) {
		return outcomeReset, 0, true
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return outcomeConnectTimeout, 0, true
	}
	return outcomeConnectFailed, 0, true
}

// pickCandidateAvoiding picks among the candidates of cs that avoid does not reject, by capacity;
// false if it rejects them all (unlike selectEndpointAvoiding, which then falls back to any).
func pickCandidateAvoiding(cs *candidateSet, rnd randSource, avoid func(upstream) bool) (upstream, bool) {
	var total uint64
	for i, up := range cs.ups {
		if !avoid(up) {
			total += weightAt(cs, i)
		}
	}
	if total == 0 {
		return upstream{}, false
	}
	x := rnd(total)
	for i, up := range cs.ups {
		if avoid(up) {
			continue
		}
		if w := weightAt(cs, i); x < w {
			return up, true
		} else {
			x -= w
		}
	}
	return upstream{}, false // not reached
}

// countRetry counts an attempt on another endpoint after a failed connect.
func (p *Proxy) countRetry(svc *workload.Service) {
	if p.metrics != nil {
		p.metrics.retries.WithLabelValues(svc.Key()).Inc()
	}
}
