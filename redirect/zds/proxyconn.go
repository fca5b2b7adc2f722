package zds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"
)

// proxyConn is the server's view of one connected proxy. Requests are
// strictly one at a time (reqMu); a reader goroutine hands each ACK to the
// waiting sender.
type proxyConn struct {
	c *net.UnixConn

	reqMu sync.Mutex  // held for a whole request/ACK exchange
	acks  chan string // ACK texts from readLoop; capacity 1

	closeOnce sync.Once
	done      chan struct{} // closed by close
	err       error         // why the connection ended; written once before done is closed

	synced bool // its snapshot was acknowledged; guarded by Server.mu
}

func newProxyConn(c *net.UnixConn) *proxyConn {
	return &proxyConn{c: c, acks: make(chan string, 1), done: make(chan struct{})}
}

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

// readLoop reads ACKs until the connection fails. An ACK nobody waits for,
// fds, or an undecodable response end the connection.
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
		select {
		case pc.acks <- ack.GetError():
		default:
			pc.close(errors.New("unsolicited zds ack"))
			return
		}
	}
}

// send sends req (with fd if >= 0) and waits for the ACK.
func (pc *proxyConn) send(ctx context.Context, req *zdsapi.WorkloadRequest, fd int) (string, error) {
	pc.reqMu.Lock()
	defer pc.reqMu.Unlock()
	return pc.exchangeLocked(ctx, req, fd)
}

// exchangeLocked writes req (with fd if >= 0) and waits for the ACK text.
// If ctx ends first the connection is closed, since a late ACK would be
// taken for the next request's. Requires pc.reqMu held.
func (pc *proxyConn) exchangeLocked(ctx context.Context, req *zdsapi.WorkloadRequest, fd int) (string, error) {
	select {
	case <-pc.done:
		return "", pc.err
	default:
	}
	if err := writeMessage(pc.c, req, fd); err != nil {
		pc.close(err)
		return "", err
	}
	select {
	case ack := <-pc.acks:
		return ack, nil
	case <-pc.done:
		return "", pc.err
	case <-ctx.Done():
		pc.close(fmt.Errorf("abandoned waiting for ack: %w", ctx.Err()))
		return "", ctx.Err()
	}
}
