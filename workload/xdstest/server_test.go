package xdstest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"istio.io/istio/pkg/workloadapi"
)

func startServer(t *testing.T) (*Server, discovery.AggregatedDiscoveryServiceClient) {
	t.Helper()
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return s, discovery.NewAggregatedDiscoveryServiceClient(conn)
}

func openStream(t *testing.T, c discovery.AggregatedDiscoveryServiceClient) discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	str, err := c.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

func exchange(t *testing.T, str discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, req *discovery.DeltaDiscoveryRequest) *discovery.DeltaDiscoveryResponse {
	t.Helper()
	if req != nil {
		if err := str.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := str.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func names(resp *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, r.GetName())
	}
	slices.Sort(out)
	return out
}

func wl(uid, ip string) *workloadapi.Workload {
	return &workloadapi.Workload{Uid: uid, Namespace: "ns", Addresses: [][]byte{netip.MustParseAddr(ip).AsSlice()}}
}

func TestWildcardResumesFromInitialVersions(t *testing.T) {
	s, c := startServer(t)
	s.Batch(func(b *Batch) {
		b.SetWorkload(wl("a", "10.0.0.1"))
		b.SetWorkload(wl("b", "10.0.0.2"))
	})
	str := openStream(t, c)
	resp := exchange(t, str, &discovery.DeltaDiscoveryRequest{
		TypeUrl:                 TypeAddress,
		InitialResourceVersions: map[string]string{"a": s.Versions(TypeAddress)["a"], "gone": "v0"},
	})
	if got := names(resp); !slices.Equal(got, []string{"b"}) || !slices.Equal(resp.GetRemovedResources(), []string{"gone"}) {
		t.Errorf("first response resources %v removed %v, want [b] and [gone]", got, resp.GetRemovedResources())
	}
	if err := str.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeAddress, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.WaitFor(ctx, func(r *discovery.DeltaDiscoveryRequest) bool { return r.GetResponseNonce() == resp.GetNonce() }); err != nil {
		t.Fatalf("ACK not recorded: %v", err)
	}
	s.Delete(TypeAddress, "a")
	if resp := exchange(t, str, nil); !slices.Equal(resp.GetRemovedResources(), []string{"a"}) || resp.GetNonce() == "" {
		t.Errorf("push after Delete = %v, want removal of a with a nonce", resp)
	}
	s.Disconnect()
	if _, err := str.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after Disconnect = %v, want io.EOF (graceful close)", err)
	}
	if n := len(s.Requests()); n != 2 {
		t.Errorf("recorded %d requests, want 2 (initial, ACK)", n)
	}
}

func TestOnDemandByAlias(t *testing.T) {
	s, c := startServer(t)
	s.Batch(func(b *Batch) {
		b.SetWorkload(wl("w", "10.0.0.5"))
		b.SetWorkload(wl("x", "10.0.0.6"))
	})
	str := openStream(t, c)
	resp := exchange(t, str, &discovery.DeltaDiscoveryRequest{
		TypeUrl: TypeAddress, ResourceNamesSubscribe: []string{"*"}, ResourceNamesUnsubscribe: []string{"*"},
	})
	if len(resp.GetResources())+len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("subscribe-to-nothing response = %v, want empty", resp)
	}
	resp = exchange(t, str, &discovery.DeltaDiscoveryRequest{TypeUrl: TypeAddress, ResourceNamesSubscribe: []string{"/10.0.0.5", "/10.9.9.9"}})
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "w" ||
		!slices.Equal(resp.GetResources()[0].GetAliases(), []string{"/10.0.0.5"}) ||
		!slices.Equal(resp.GetRemovedResources(), []string{"/10.9.9.9"}) {
		t.Fatalf("demand response = %v, want w (alias /10.0.0.5) and removal of /10.9.9.9", resp)
	}
	s.SetWorkload(wl("x", "10.0.0.7")) // not subscribed: no push
	s.SetWorkload(wl("w", "10.0.0.8")) // subscribed by its real name after the demand
	if resp := exchange(t, str, nil); !slices.Equal(names(resp), []string{"w"}) {
		t.Errorf("push = %v, want only w", names(resp))
	}
}
