package xdstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The type URLs served, as ztunnel subscribes them.
const (
	TypeAddress       = "type.googleapis.com/istio.workload.Address"
	TypeAuthorization = "type.googleapis.com/istio.security.Authorization"
)

// Server is a fake delta ADS server. Create it with NewServer, then Serve it on a listener or
// Register it on a grpc.Server of your own. State-of-the-world ADS is Unimplemented.
type Server struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	log *slog.Logger

	mu        sync.Mutex                   // guards all fields below
	resources map[string]map[string]*entry // type URL -> name -> resource
	version   uint64                       // last version handed out
	nonce     uint64                       // last nonce handed out
	streams   map[*stream]struct{}
	requests  []*discovery.DeltaDiscoveryRequest
	headers   []metadata.MD
	newReq    chan struct{} // closed and replaced when a request is recorded
	grpc      *grpc.Server  // set by Serve
}

// entry is one stored resource.
type entry struct {
	version string
	body    *anypb.Any
	aliases []string // other names the resource answers to (Address: "network/ip" of its IPs/VIPs)
}

// stream is one client stream. Its fields are guarded by Server.mu.
type stream struct {
	subs  map[string]*subscription // type URL -> subscription; absent until the first request
	queue []*discovery.DeltaDiscoveryResponse
	wake  chan struct{} // capacity 1: queue is non-empty
	done  chan struct{} // closed by Disconnect
}

type subscription struct {
	wildcard bool
	names    map[string]bool
}

func (sub *subscription) wants(name string) bool { return sub.wildcard || sub.names[name] }

// NewServer returns an empty server. A nil logger means slog.Default().
func NewServer(logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.Default()
	}
	return &Server{
		log:       logger,
		resources: map[string]map[string]*entry{},
		streams:   map[*stream]struct{}{},
		newReq:    make(chan struct{}),
	}
}

// Register adds the ADS service to g, e.g. next to a fake CA. Servers whose clients ping
// every 30s (ztunnel's keepalive) should allow it, as Serve does.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s)
}

// Serve serves plaintext gRPC on ln until Stop; it returns the error of grpc.Server.Serve.
func (s *Server) Serve(ln net.Listener) error {
	g := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: 10 * time.Second, PermitWithoutStream: true,
	}))
	s.Register(g)
	s.mu.Lock()
	s.grpc = g
	s.mu.Unlock()
	return g.Serve(ln)
}

// Stop stops the gRPC server started by Serve, closing its listener and every connection.
func (s *Server) Stop() {
	s.mu.Lock()
	g := s.grpc
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
}

// Disconnect ends every current stream with an OK status (a graceful close); clients are
// expected to reconnect.
func (s *Server) Disconnect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		close(st.done)
		delete(s.streams, st)
	}
}

// Requests returns copies of every request received so far, in order.
func (s *Server) Requests() []*discovery.DeltaDiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*discovery.DeltaDiscoveryRequest, len(s.requests))
	for i, r := range s.requests {
		out[i] = proto.Clone(r).(*discovery.DeltaDiscoveryRequest)
	}
	return out
}

// WaitFor returns a copy of the first request, among those already received and those still
// to come, for which match returns true, or ctx's error.
func (s *Server) WaitFor(ctx context.Context, match func(*discovery.DeltaDiscoveryRequest) bool) (*discovery.DeltaDiscoveryRequest, error) {
	next := 0
	for {
		s.mu.Lock()
		pending := s.requests[next:]
		next = len(s.requests)
		wait := s.newReq
		s.mu.Unlock()
		for _, r := range pending {
			if match(r) {
				return proto.Clone(r).(*discovery.DeltaDiscoveryRequest), nil
			}
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for xDS request: %w", ctx.Err())
		}
	}
}

// Versions returns the current version of every resource of typeURL, by name.
func (s *Server) Versions(typeURL string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.resources[typeURL]))
	for name, e := range s.resources[typeURL] {
		out[name] = e.version
	}
	return out
}

// Headers returns copies of the metadata of every stream opened so far, in order.
func (s *Server) Headers() []metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]metadata.MD, len(s.headers))
	for i, md := range s.headers {
		out[i] = md.Copy()
	}
	return out
}

// DeltaAggregatedResources serves one client stream: a goroutine reads and handles requests
// while this one sends the queued responses, until the client goes away or Disconnect.
func (s *Server) DeltaAggregatedResources(str discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	md, _ := metadata.FromIncomingContext(str.Context())
	st := &stream{subs: map[string]*subscription{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.mu.Lock()
	s.headers = append(s.headers, md.Copy())
	s.streams[st] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := str.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			s.handleRequest(st, req)
		}
	}()
	for {
		select {
		case <-st.done:
			return nil
		case <-str.Context().Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-st.wake:
			s.mu.Lock()
			out := st.queue
			st.queue = nil
			s.mu.Unlock()
			for _, resp := range out {
				if err := str.Send(resp); err != nil {
					return err
				}
			}
		}
	}
}

// handleRequest records req and answers subscription changes. ACKs and NACKs (a nonce and no
// subscription change) are only recorded.
func (s *Server) handleRequest(st *stream, req *discovery.DeltaDiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, proto.Clone(req).(*discovery.DeltaDiscoveryRequest))
	close(s.newReq)
	s.newReq = make(chan struct{})

	typeURL := req.GetTypeUrl()
	sub, seen := st.subs[typeURL]
	if seen && len(req.GetResourceNamesSubscribe()) == 0 && len(req.GetResourceNamesUnsubscribe()) == 0 {
		return // ACK or NACK
	}
	if !seen {
		sub = &subscription{names: map[string]bool{}, wildcard: len(req.GetResourceNamesSubscribe()) == 0}
		st.subs[typeURL] = sub
	}
	var asked []string
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			sub.wildcard = true
			continue
		}
		sub.names[n] = true
		asked = append(asked, n)
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			sub.wildcard = false
			continue
		}
		delete(sub.names, n)
	}
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL}
	have := s.resources[typeURL]
	if !seen {
		held := req.GetInitialResourceVersions()
		for n := range held {
			if !sub.wildcard {
				sub.names[n] = true
			}
		}
		if sub.wildcard {
			for n, e := range have {
				if held[n] != e.version {
					resp.Resources = append(resp.Resources, e.resource(n, nil))
				}
			}
		}
		for n, v := range held {
			if e := have[n]; e == nil {
				resp.RemovedResources = append(resp.RemovedResources, n)
			} else if !sub.wildcard && v != e.version && !slices.Contains(asked, n) {
				resp.Resources = append(resp.Resources, e.resource(n, nil))
			}
		}
		if sub.wildcard {
			asked = nil // all sent above
		}
	}
	for _, n := range asked {
		name, e := s.lookupLocked(typeURL, n)
		switch {
		case e == nil:
			resp.RemovedResources = append(resp.RemovedResources, n)
		case name == n:
			resp.Resources = append(resp.Resources, e.resource(name, nil))
		default:
			sub.names[name] = true // istiod subscribes the stream to what it was sent
			resp.Resources = append(resp.Resources, e.resource(name, []string{n}))
		}
	}
	s.enqueueLocked(st, resp)
}

// lookupLocked finds a resource by name, then by alias.
func (s *Server) lookupLocked(typeURL, n string) (string, *entry) {
	if e := s.resources[typeURL][n]; e != nil {
		return n, e
	}
	for name, e := range s.resources[typeURL] {
		if slices.Contains(e.aliases, n) {
			return name, e
		}
	}
	return "", nil
}

func (e *entry) resource(name string, aliases []string) *discovery.Resource {
	return &discovery.Resource{Name: name, Version: e.version, Resource: e.body, Aliases: aliases}
}

// enqueueLocked stamps resp with a nonce and queues it on st.
func (s *Server) enqueueLocked(st *stream, resp *discovery.DeltaDiscoveryResponse) {
	s.nonce++
	resp.Nonce = "n" + strconv.FormatUint(s.nonce, 10)
	st.queue = append(st.queue, resp)
	select {
	case st.wake <- struct{}{}:
	default:
	}
}
