package zds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"
)

// proxyConn is the server's view of one connected proxy. Requests are
// strictly one at a time (reqSlot); a reader goroutine hands each ACK to the
// waiting sender. ACKs are matched to requests by order alone, so an ACK
// that answers no request, or one that comes later than ackTimeout, ends the
// connection: kept, it would be taken for the answer to the next request.
type proxyConn struct {
	c          *net.UnixConn
	ackTimeout time.Duration // per request; 0: none

	reqSlot chan struct{} // capacity 1; full while a request/ACK exchange runs (see lockReq)
	acks    chan string   // ACK texts from readLoop; capacity 1
	waiting atomic.Bool   // a request was written and its ACK has not been read

	closeOnce sync.Once
	done      chan struct{} // closed by close
	err       error         // why the connection ended; written once before done is closed

	synced bool // its snapshot was acknowledged; guarded by Server.mu
}

func newProxyConn(c *net.UnixConn, ackTimeout time.Duration) *proxyConn {
	return &proxyConn{c: c, ackTimeout: ackTimeout, reqSlot: make(chan struct{}, 1),
		acks: make(chan string, 1), done: make(chan struct{})}
}

// lockReq takes the request slot, unless ctx ends or the connection does
// first: a caller never waits on another's exchange longer than it allows.
// Release it with unlockReq.
func (pc *proxyConn) lockReq(ctx context.Context) error {
	select {
	case pc.reqSlot <- struct{}{}:
		return nil
	case <-pc.done:
		return pc.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (pc *proxyConn) unlockReq() { <-pc.reqSlot }

// close ends the connection, recording err (nil becomes net.ErrClosed) as the reason.
func (pc *proxyConn) close(err error) {
	pc.closeOnce.Do(func() {
		if err == nil {
			err = net.ErrClosed
		}
		pc.err = err
		pc.c.Close()
		close(pc.done)
	})
}

// readLoop reads ACKs until the connection fails. An ACK that answers no
// request, fds, or an undecodable response end the connection.
func (pc *proxyConn) readLoop() {
	for {
		data, files, err := readPacket(pc.c)
		if err != nil {
			pc.close(fmt.Errorf("read zds response: %w", err))
			return
		}
		closeFiles(files)
		if len(files) != 0 {
			pc.close(errors.New("zds response with fds"))
			return
		}
		var resp zdsapi.WorkloadResponse
		if err := proto.Unmarshal(data, &resp); err != nil {
			pc.close(fmt.Errorf("decode zds response: %w", err))
			return
		}
		ack := resp.GetAck()
		if ack == nil {
			pc.close(errors.New("zds response without ack"))
			return
		}
		if !pc.waiting.CompareAndSwap(true, false) {
			pc.close(errors.New("unsolicited zds ack: no request was waiting for it"))
			return
		}
		select {
		case pc.acks <- ack.GetError():
		default: // cannot happen: one request at a time, and an abandoned one closes the connection
			pc.close(errors.New("unsolicited zds ack"))
			return
		}
	}
}

// send sends req (with fd if >= 0) and waits for the ACK.
func (pc *proxyConn) send(ctx context.Context, req *zdsapi.WorkloadRequest, fd int) (string, error) {
	if err := pc.lockReq(ctx); err != nil {
		return "", err
	}
	defer pc.unlockReq()
	return pc.exchangeLocked(ctx, req, fd)
}

// exchangeLocked writes req (with fd if >= 0) and waits for the ACK text.
// If ctx ends or ackTimeout passes first the connection is closed, since a
// late ACK would be taken for the next request's. Requires the request slot
// (lockReq).
func (pc *proxyConn) exchangeLocked(ctx context.Context, req *zdsapi.WorkloadRequest, fd int) (string, error) {
	select {
	case <-pc.done:
		return "", pc.err
	default:
	}
	pc.waiting.Store(true)
	if err := writeMessage(pc.c, req, fd); err != nil {
		pc.close(err)
		return "", err
	}
	var timeout <-chan time.Time
	if pc.ackTimeout > 0 {
		t := time.NewTimer(pc.ackTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case ack := <-pc.acks:
		return ack, nil
	case <-pc.done:
		return "", pc.err
	case <-ctx.Done():
		pc.close(fmt.Errorf("abandoned waiting for ack: %w", ctx.Err()))
		return "", ctx.Err()
	case <-timeout:
		pc.close(fmt.Errorf("proxy did not ack %s within %v", requestKind(req), pc.ackTimeout))
		return "", pc.err
	}
}

// requestKind names req's payload for errors ("AddWorkload").
func requestKind(req *zdsapi.WorkloadRequest) string {
	switch req.Payload.(type) {
	case *zdsapi.WorkloadRequest_Add:
		return "AddWorkload"
	case *zdsapi.WorkloadRequest_Del:
		return "DelWorkload"
	case *zdsapi.WorkloadRequest_Keep:
		return "KeepWorkload"
	case *zdsapi.WorkloadRequest_SnapshotSent:
		return "SnapshotSent"
	}
	return "request"
}
