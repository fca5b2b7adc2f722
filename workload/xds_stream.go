package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/ztunnel-go/ztunnel/internal/controlplane"
)

// runStream runs one connection: dial, open the delta ADS stream, send the initial requests,
// then serve responses and demands until the stream or ctx ends. Responses are read by one
// goroutine and handled, in order, by this one (the go-control-plane shape); this goroutine is
// the only sender. gen numbers the stream for the demand bookkeeping. A nil error means the
// server closed the stream gracefully.
func (c *XDSClient) runStream(ctx context.Context, gen uint64) error {
	conn, err := controlplane.Dial(c.cfg.Dial, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(xdsMaxMessageSize)))
	if err != nil {
		return &connectError{err}
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: the receiver has stopped before the conn closes
	defer cancel()

	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		return &connectError{err}
	}
	responses := make(chan *discovery.DeltaDiscoveryResponse)
	recvErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case responses <- resp:
			case <-sctx.Done():
				return
			}
		}
	}()
	// send reports the stream's own error when a Send fails because the stream ended.
	send := func(req *discovery.DeltaDiscoveryRequest) error {
		err := stream.Send(req)
		for errors.Is(err, io.EOF) { // the stream is over; its status comes from Recv
			select {
			case err = <-recvErr:
				if errors.Is(err, io.EOF) {
					return err // closed gracefully
				}
			case <-responses: // drain what is still buffered: it cannot be ACKed any more
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("send %s request: %w", req.GetTypeUrl(), err)
		}
		return err
	}

	for _, req := range c.initialRequests(gen) {
		if err := send(req); err != nil {
			return err
		}
	}
	c.log.Info("xds stream established", "address", c.cfg.Dial.Address, "stream", gen,
		"known_addresses", len(c.state.known[TypeAddress]), "known_policies", len(c.state.known[TypeAuthorization]))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case resp := <-responses:
			if err := c.handleResponse(resp, send); err != nil {
				return err
			}
		case <-c.kick:
			if names := c.takeUnsentDemands(gen); len(names) > 0 {
				c.log.Debug("xds on-demand subscribe", "names", names)
				if err := send(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeAddress, ResourceNamesSubscribe: names}); err != nil {
					return err
				}
			}
		}
	}
}

// initialRequests returns the first request of each type for stream gen: node, the held
// versions, and the subscription (wildcard; for on-demand Address, "*" subscribed and
// unsubscribed at once plus every held or demanded name).
func (c *XDSClient) initialRequests(gen uint64) []*discovery.DeltaDiscoveryRequest {
	reqs := make([]*discovery.DeltaDiscoveryRequest, 0, 2)
	for _, typeURL := range []string{TypeAddress, TypeAuthorization} {
		req := &discovery.DeltaDiscoveryRequest{
			Node:                    c.node,
			TypeUrl:                 typeURL,
			InitialResourceVersions: c.state.knownVersions(typeURL),
		}
		if typeURL == TypeAddress && c.cfg.OnDemand {
			req.ResourceNamesSubscribe = []string{"*"}
			for name := range req.InitialResourceVersions {
				req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, name)
			}
			for _, name := range c.takeUnsentDemands(gen) {
				if _, held := req.InitialResourceVersions[name]; !held {
					req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, name)
				}
			}
			slices.Sort(req.ResourceNamesSubscribe[1:])
			req.ResourceNamesUnsubscribe = []string{"*"}
		}
		reqs = append(reqs, req)
	}
	return reqs
}

// handleResponse applies one response, wakes the demands it answers, and ACKs or NACKs it.
func (c *XDSClient) handleResponse(resp *discovery.DeltaDiscoveryResponse, send func(*discovery.DeltaDiscoveryRequest) error) error {
	res := c.state.apply(resp)
	c.countResponse(resp.GetTypeUrl(), proto.Size(resp), res.nack != "")
	c.notifyDemands(res.served)
	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
	if res.nack != "" {
		c.log.Warn("xds NACK", "type", resp.GetTypeUrl(), "nonce", resp.GetNonce(), "error", res.nack)
		ack.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: res.nack}
	} else {
		c.log.Debug("xds ACK", "type", resp.GetTypeUrl(), "nonce", resp.GetNonce(),
			"resources", len(resp.GetResources()), "removed", len(resp.GetRemovedResources()))
	}
	if err := send(ack); err != nil {
		return err
	}
	if res.nack == "" {
		c.markSynced(resp.GetTypeUrl())
	}
	return nil
}
