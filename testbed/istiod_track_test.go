package testbed

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pkg/workloadapi"
)

// scriptedADS is a delta ADS server that sends what the test puts in out and reads (and drops)
// requests, so that the tracker sees them.
type scriptedADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	out chan *discovery.DeltaDiscoveryResponse
}

func (s *scriptedADS) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				errc <- err
				return
			}
		}
	}()
	for {
		select {
		case err := <-errc:
			return err
		case resp := <-s.out:
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

// trackerFixture serves scriptedADS behind an ackTracker on loopback.
type trackerFixture struct {
	t       *testing.T
	owned   map[string]map[string]bool // names the "cluster" pushed
	tracker *ackTracker
	ads     *scriptedADS
	conn    *grpc.ClientConn
}

func newTrackerFixture(t *testing.T) *trackerFixture {
	f := &trackerFixture{t: t, tracker: newACKTracker(), ads: &scriptedADS{out: make(chan *discovery.DeltaDiscoveryResponse)},
		owned: map[string]map[string]bool{typeAddress: {"a": true, "b": true}}}
	g := grpc.NewServer(grpc.StreamInterceptor(f.tracker.intercept))
	discovery.RegisterAggregatedDiscoveryServiceServer(g, f.ads)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	f.conn, err = grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.conn.Close() })
	return f
}

// stream opens a client stream and subscribes to both types, announcing initial (name -> version).
func (f *trackerFixture) stream(ctx context.Context, initial map[string]string) discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	f.t.Helper()
	s, err := discovery.NewAggregatedDiscoveryServiceClient(f.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, typ := range []string{typeAddress, typeAuthorization} {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: typ, Node: &core.Node{Id: "ztunnel~10.0.0.1~test"}}
		if typ == typeAddress {
			req.InitialResourceVersions = initial
		}
		if err := s.Send(req); err != nil {
			f.t.Fatal(err)
		}
	}
	return s
}

// push sends a response and returns it as the client received it.
func (f *trackerFixture) push(s discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, resp *discovery.DeltaDiscoveryResponse) {
	f.t.Helper()
	f.ads.out <- resp
	if _, err := s.Recv(); err != nil {
		f.t.Fatal(err)
	}
}

// waitCheck polls check for the loopback peer until it returns (behind != "") == wantBehind and an
// error containing wantErr ("" for none).
func (f *trackerFixture) waitCheck(want xdsResources, wantBehind bool, wantErr string) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		behind, err := f.tracker.check(netip.MustParseAddr("127.0.0.1"), want, f.owned)
		errOK := wantErr == "" && err == nil || wantErr != "" && err != nil && strings.Contains(err.Error(), wantErr)
		if errOK && (behind != "") == wantBehind {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("check = %q, %v; want behind %v, error %q", behind, err, wantBehind, wantErr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wl(uid string) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Uid: uid, Name: uid}}}
}

func resource(t *testing.T, name string, m proto.Message) *discovery.Resource {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &discovery.Resource{Name: name, Version: "1", Resource: a}
}

func TestACKTracker(t *testing.T) {
	f := newTrackerFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	empty := xdsResources{typeAddress: {}, typeAuthorization: {}}
	one := xdsResources{typeAddress: {"a": wl("a")}, typeAuthorization: {}}
	two := xdsResources{typeAddress: {"b": wl("b")}, typeAuthorization: {}}

	f.waitCheck(empty, true, "") // no stream yet
	s := f.stream(ctx, nil)
	f.waitCheck(empty, false, "") // subscribed, nothing sent: the client holds nothing
	f.waitCheck(one, true, "")

	f.push(s, &discovery.DeltaDiscoveryResponse{TypeUrl: typeAddress, Nonce: "n1", Resources: []*discovery.Resource{resource(t, "a", wl("a"))}})
	f.waitCheck(one, true, "") // sent, not ACKed
	if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeAddress, ResponseNonce: "n1"}); err != nil {
		t.Fatal(err)
	}
	f.waitCheck(one, false, "")
	f.waitCheck(empty, true, "")

	// A NACKed push: the applied state stays, and waiting for the new one fails.
	f.push(s, &discovery.DeltaDiscoveryResponse{TypeUrl: typeAddress, Nonce: "n2", RemovedResources: []string{"a"},
		Resources: []*discovery.Resource{resource(t, "b", wl("b"))}})
	if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeAddress, ResponseNonce: "n2", ErrorDetail: &status.Status{Message: "b: bad"}}); err != nil {
		t.Fatal(err)
	}
	f.waitCheck(two, false, "rejected type.googleapis.com/istio.workload.Address: b: bad")
	f.waitCheck(one, false, "")

	// Resent and ACKed: applied; the NACK is forgotten.
	f.push(s, &discovery.DeltaDiscoveryResponse{TypeUrl: typeAddress, Nonce: "n3", RemovedResources: []string{"a"},
		Resources: []*discovery.Resource{resource(t, "b", wl("b"))}})
	if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeAddress, ResponseNonce: "n3"}); err != nil {
		t.Fatal(err)
	}
	f.waitCheck(two, false, "")

	// A different resource under the same name is not the pushed one.
	changed := xdsResources{typeAddress: {"b": wl("b2")}, typeAuthorization: {}}
	f.waitCheck(changed, true, "")

	// A resource someone else set (a name the cluster never pushed) is ignored; a removed one of
	// the cluster's is not.
	f.push(s, &discovery.DeltaDiscoveryResponse{TypeUrl: typeAddress, Nonce: "n4", Resources: []*discovery.Resource{
		resource(t, "other", wl("other")), resource(t, "a", wl("a"))}})
	if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeAddress, ResponseNonce: "n4"}); err != nil {
		t.Fatal(err)
	}
	f.waitCheck(xdsResources{typeAddress: {"b": wl("b"), "a": wl("a")}, typeAuthorization: {}}, false, "")
	f.waitCheck(two, true, "") // still holds "a"
	f.push(s, &discovery.DeltaDiscoveryResponse{TypeUrl: typeAddress, Nonce: "n5", RemovedResources: []string{"a"}})
	if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeAddress, ResponseNonce: "n5"}); err != nil {
		t.Fatal(err)
	}
	f.waitCheck(two, false, "")

	// Reconnect: the new stream starts from what the client announces it still holds.
	cancel()
	f.waitCheck(two, true, "") // no stream
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	f.stream(ctx2, map[string]string{"b": "1"})
	f.waitCheck(two, false, "")
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	f.stream(ctx3, nil) // a restarted client holds nothing
	f.waitCheck(two, true, "")
}
