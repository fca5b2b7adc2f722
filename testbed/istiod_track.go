package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
)

// deltaADSMethod is the gRPC method of the delta ADS stream.
const deltaADSMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

// resourceSet is one type's resources by name. Sets are never modified once shared: a change makes
// a new set.
type resourceSet map[string]proto.Message

// ackTracker watches the fake istiod's delta ADS streams (as a gRPC stream interceptor) to tell
// what state each proxy has applied: for every response sent it records the resources the client
// holds after it, and when the client ACKs that response's nonce (a request with the nonce and no
// error_detail) that state becomes the client's applied state. A NACK is remembered until a later
// ACK of the same type. Proxies are told apart by their source address (their node IP).
type ackTracker struct {
	mu      sync.Mutex // guards everything below and the fields of every trackedStream
	streams map[*trackedStream]bool
	// lastAcked is the applied state per peer, kept across streams: a reconnecting client announces
	// what it still holds (initial_resource_versions) and starts from that part of it.
	lastAcked map[netip.Addr]map[string]resourceSet
	seq       uint64 // orders streams and responses
}

// trackedStream is one delta ADS stream. Its fields are guarded by ackTracker.mu.
type trackedStream struct {
	peer    netip.Addr
	opened  uint64
	nodeID  string
	sent    map[string]resourceSet // per type: the client's state once it applies all responses sent
	acked   map[string]resourceSet // per type: the state of the last ACKed response
	nack    map[string]string      // per type: error_detail of a NACK not followed by an ACK
	pending map[string]pendingResponse
}

type pendingResponse struct {
	typeURL string
	seq     uint64
	state   resourceSet
}

func newACKTracker() *ackTracker {
	return &ackTracker{streams: map[*trackedStream]bool{}, lastAcked: map[netip.Addr]map[string]resourceSet{}}
}

// intercept is a grpc.StreamServerInterceptor that tracks delta ADS streams.
func (t *ackTracker) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != deltaADSMethod {
		return handler(srv, ss)
	}
	st := t.open(peerAddr(ss.Context()))
	defer t.close(st)
	return handler(srv, &trackedServerStream{ServerStream: ss, t: t, st: st})
}

// trackedServerStream reports the messages of one stream to the tracker.
type trackedServerStream struct {
	grpc.ServerStream
	t  *ackTracker
	st *trackedStream
}

// SendMsg records a response before sending it, so that its ACK cannot arrive first.
func (s *trackedServerStream) SendMsg(m any) error {
	if resp, ok := m.(*discovery.DeltaDiscoveryResponse); ok {
		s.t.sent(s.st, resp)
	}
	return s.ServerStream.SendMsg(m)
}

// RecvMsg records a request before the server sees it.
func (s *trackedServerStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if req, ok := m.(*discovery.DeltaDiscoveryRequest); ok {
		s.t.received(s.st, req)
	}
	return nil
}

func peerAddr(ctx context.Context) netip.Addr {
	if p, ok := peer.FromContext(ctx); ok {
		if a, ok := p.Addr.(*net.TCPAddr); ok {
			return a.AddrPort().Addr().Unmap()
		}
	}
	return netip.Addr{}
}

func (t *ackTracker) open(addr netip.Addr) *trackedStream {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	st := &trackedStream{
		peer: addr, opened: t.seq,
		sent: map[string]resourceSet{}, acked: map[string]resourceSet{},
		nack: map[string]string{}, pending: map[string]pendingResponse{},
	}
	t.streams[st] = true
	return st
}

func (t *ackTracker) close(st *trackedStream) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.streams, st)
}

// sent records a response: the state it leads to, under its nonce.
func (t *ackTracker) sent(st *trackedStream, resp *discovery.DeltaDiscoveryResponse) {
	// Decode outside the lock; a resource that does not decode is kept as nil and matches nothing.
	updates := make(map[string]proto.Message, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		var msg proto.Message
		if r.GetResource() != nil {
			if m, err := r.GetResource().UnmarshalNew(); err == nil {
				msg = m
			}
		}
		updates[r.GetName()] = msg
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	typ := resp.GetTypeUrl()
	state := make(resourceSet, len(st.sent[typ])+len(updates))
	for k, v := range st.sent[typ] {
		state[k] = v
	}
	for _, name := range resp.GetRemovedResources() {
		delete(state, name)
	}
	for k, v := range updates {
		state[k] = v
	}
	st.sent[typ] = state
	t.seq++
	st.pending[resp.GetNonce()] = pendingResponse{typeURL: typ, seq: t.seq, state: state}
}

// received records a request: a subscription (no nonce) or an ACK/NACK of a response.
func (t *ackTracker) received(st *trackedStream, req *discovery.DeltaDiscoveryRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st.nodeID == "" && req.GetNode() != nil {
		st.nodeID = req.GetNode().GetId()
	}
	typ := req.GetTypeUrl()
	if req.GetResponseNonce() == "" {
		if _, ok := st.acked[typ]; !ok {
			// First request of the type on this stream: the client holds what it announces.
			base := resourceSet{}
			prev := t.lastAcked[st.peer][typ]
			for name := range req.GetInitialResourceVersions() {
				if m, ok := prev[name]; ok {
					base[name] = m
				}
			}
			st.acked[typ], st.sent[typ] = base, base
		}
		return
	}
	p, ok := st.pending[req.GetResponseNonce()]
	if !ok {
		return
	}
	for nonce, o := range st.pending {
		if o.typeURL == p.typeURL && o.seq <= p.seq {
			delete(st.pending, nonce)
		}
	}
	if d := req.GetErrorDetail(); d != nil {
		st.nack[p.typeURL] = d.GetMessage()
		return
	}
	delete(st.nack, p.typeURL)
	st.acked[p.typeURL] = p.state
	if t.lastAcked[st.peer] == nil {
		t.lastAcked[st.peer] = map[string]resourceSet{}
	}
	t.lastAcked[st.peer][p.typeURL] = p.state
}

// check reports whether the proxy connecting from addr has applied want: for every type, it holds
// each resource of want, equal to it, and no other resource named in owned (the names the caller
// ever pushed; resources set by others are ignored). If not, it returns why; err is set if the
// proxy rejected (NACKed) the config.
func (t *ackTracker) check(addr netip.Addr, want xdsResources, owned map[string]map[string]bool) (behind string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var st *trackedStream
	for s := range t.streams {
		if s.peer == addr && (st == nil || s.opened > st.opened) {
			st = s
		}
	}
	if st == nil {
		return "no xDS stream", nil
	}
	for _, typ := range []string{typeAddress, typeAuthorization} {
		got, ok := st.acked[typ]
		if !ok {
			return fmt.Sprintf("not subscribed to %s", typ), nil
		}
		if holds(got, want[typ], owned[typ]) {
			continue
		}
		if msg, ok := st.nack[typ]; ok {
			return "", fmt.Errorf("proxy %s (%s) rejected %s: %s", st.nodeID, addr, typ, msg)
		}
		return fmt.Sprintf("%s: has not applied the last push (%d resources, %d pushed)", typ, len(got), len(want[typ])), nil
	}
	return "", nil
}

// holds reports whether got has every resource of want (equal) and no other owned one.
func holds(got, want resourceSet, owned map[string]bool) bool {
	for name, w := range want {
		g, ok := got[name]
		if !ok || g == nil || !proto.Equal(g, w) {
			return false
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok && owned[name] {
			return false
		}
	}
	return true
}
