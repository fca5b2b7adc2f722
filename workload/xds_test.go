package workload

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ztunnel-go/ztunnel/internal/controlplane"
)

const (
	uidA  = "cluster1//v1/Pod/ns1/a"
	uidB  = "cluster1//v1/Pod/ns1/b"
	hostS = "svc.ns1.svc.cluster.local"
	keyS  = "ns1/" + hostS
)

func TestXDSInitialSyncNodeAndHeaders(t *testing.T) {
	f := startFakeIstiod(t)
	f.Batch(func(b *xdstestBatch) {
		b.SetWorkload(pbWorkload(uidA, "ns1", "10.0.0.1", keyS))
		b.SetService(pbService("ns1", hostS, "10.96.0.1"))
		b.SetAuthorization(pbPolicy("ns1", "allow-80"))
	})
	tokenFile := filepath.Join(t.TempDir(), "istio-token")
	if err := os.WriteFile(tokenFile, []byte("token-one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testXDSConfig(t, f.addr)
	cfg.Dial.TokenPath = tokenFile
	cfg.Dial.ClusterID = "cluster-7"
	cfg.Dial.Headers = map[string]string{"X-Test": "yes"}
	c := runXDSClient(t, cfg, nil)
	waitSynced(t, c)

	snap := cfg.Store.Load()
	w := snap.WorkloadByUID(uidA)
	if w == nil {
		t.Fatalf("workload %s missing after sync", uidA)
	}
	if got := snap.WorkloadByAddr("", netip.MustParseAddr("10.0.0.1")); got != w {
		t.Errorf("WorkloadByAddr(10.0.0.1) = %v, want %s", got, uidA)
	}
	svc := snap.ServiceByVIP("", netip.MustParseAddr("10.96.0.1"))
	if svc == nil || svc.Key() != keyS {
		t.Fatalf("ServiceByVIP(10.96.0.1) = %v, want %s", svc, keyS)
	}
	if ep := svc.Endpoints[uidA]; ep == nil || ep.Port[80] != 8080 {
		t.Errorf("service endpoints = %v, want %s with 80->8080", svc.Endpoints, uidA)
	}
	if snap.PolicyByKey("ns1/allow-80") == nil {
		t.Error("policy ns1/allow-80 missing after sync")
	}

	reqs := f.Requests()
	if len(reqs) < 2 {
		t.Fatalf("server saw %d requests, want the two initial ones", len(reqs))
	}
	for i, typeURL := range []string{TypeAddress, TypeAuthorization} {
		r := reqs[i]
		if r.GetTypeUrl() != typeURL || r.GetNode().GetId() != testNodeID ||
			len(r.GetResourceNamesSubscribe())+len(r.GetResourceNamesUnsubscribe())+len(r.GetInitialResourceVersions()) != 0 {
			t.Errorf("initial request %d = %v, want a wildcard %s request with node %s", i, r, typeURL, testNodeID)
		}
		md := map[string]string{}
		for k, v := range r.GetNode().GetMetadata().GetFields() {
			md[k] = v.GetStringValue()
		}
		if diff := cmp.Diff(cfg.Metadata, md); diff != "" {
			t.Errorf("node metadata (-want +got):\n%s", diff)
		}
	}
	// Both ACKs arrive (Synced is closed only after they were sent).
	for _, typeURL := range []string{TypeAddress, TypeAuthorization} {
		waitRequest(t, f, "ACK of "+typeURL, func(r *discovery.DeltaDiscoveryRequest) bool {
			return r.GetTypeUrl() == typeURL && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil
		})
	}
	md := f.Headers()[0]
	got := []string{strings.Join(md.Get("authorization"), ","), strings.Join(md.Get("clusterid"), ","), strings.Join(md.Get("x-test"), ",")}
	if diff := cmp.Diff([]string{"Bearer token-one", "cluster-7", "yes"}, got); diff != "" {
		t.Errorf("stream headers authorization, clusterid, x-test (-want +got):\n%s", diff)
	}
	st := c.Stats()
	if st.Messages[TypeAddress] != 1 || st.Messages[TypeAuthorization] != 1 || st.Bytes[TypeAddress] == 0 || len(st.NACKs) != 0 {
		t.Errorf("stats = %+v, want one message of each type, some bytes, no NACKs", st)
	}
}

func TestXDSUpdatesAndLateService(t *testing.T) {
	f := startFakeIstiod(t)
	cfg := testXDSConfig(t, f.addr)
	c := runXDSClient(t, cfg, nil)
	waitSynced(t, c) // empty pushes of both types
	st := cfg.Store

	f.SetWorkload(pbWorkload(uidA, "ns1", "10.0.0.1", keyS))
	waitStore(t, st, "workload A before its service", func(s *Snapshot) bool {
		return s.WorkloadByUID(uidA) != nil && s.ServiceByHost("ns1", hostS) == nil
	})
	f.SetService(pbService("ns1", hostS, "10.96.0.1"))
	waitStore(t, st, "service joined with A", func(s *Snapshot) bool {
		svc := s.ServiceByHost("ns1", hostS)
		return svc != nil && svc.Endpoints[uidA] != nil
	})
	f.Batch(func(b *xdstestBatch) {
		b.SetWorkload(pbWorkload(uidA, "ns1", "10.0.0.2", keyS)) // new IP
		b.SetWorkload(pbWorkload(uidB, "ns1", "10.0.0.3", keyS))
	})
	waitStore(t, st, "A moved and B joined", func(s *Snapshot) bool {
		svc := s.ServiceByHost("ns1", hostS)
		return s.WorkloadByAddr("", netip.MustParseAddr("10.0.0.2")) != nil &&
			s.WorkloadByAddr("", netip.MustParseAddr("10.0.0.1")) == nil && svc != nil && len(svc.Endpoints) == 2
	})
	f.SetAuthorization(pbPolicy("ns1", "p"))
	waitStore(t, st, "policy added", func(s *Snapshot) bool { return s.PolicyByKey("ns1/p") != nil })
	deny := pbPolicy("ns1", "p")
	deny.Action = security.Action_DENY
	f.SetAuthorization(deny)
	waitStore(t, st, "policy updated", func(s *Snapshot) bool {
		p := s.PolicyByKey("ns1/p")
		return p != nil && p.Action == PolicyActionDeny
	})
	f.Delete(TypeAuthorization, "ns1/p")
	waitStore(t, st, "policy removed", func(s *Snapshot) bool { return s.PolicyByKey("ns1/p") == nil })
	f.Delete(TypeAddress, keyS)
	waitStore(t, st, "service removed, workloads kept", func(s *Snapshot) bool {
		return s.ServiceByHost("ns1", hostS) == nil && len(s.Workloads()) == 2
	})
	f.Delete(TypeAddress, uidA)
	waitStore(t, st, "workload A removed", func(s *Snapshot) bool {
		return s.WorkloadByUID(uidA) == nil && s.WorkloadByUID(uidB) != nil
	})
	if n := c.Stats().NACKs; len(n) != 0 {
		t.Errorf("NACKs = %v, want none", n)
	}
}

func TestXDSRejectsBadResourcesIndividually(t *testing.T) {
	f := startFakeIstiod(t)
	cfg := testXDSConfig(t, f.addr)
	c := runXDSClient(t, cfg, nil)
	waitSynced(t, c)
	f.SetWorkload(pbWorkload("keep", "ns1", "10.0.0.7"))
	waitStore(t, cfg.Store, "keep applied", func(s *Snapshot) bool { return s.WorkloadByUID("keep") != nil })
	keepVersion := f.Versions(TypeAddress)["keep"]

	badIP := pbWorkload("bad-ip", "ns1", "10.0.0.8")
	badIP.Addresses = [][]byte{{10, 0, 0}}
	legacy := pbWorkload("legacy", "ns1", "10.0.0.9")
	legacy.TunnelProtocol = workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS
	badEnum := pbWorkload("bad-enum", "ns1", "10.0.0.10")
	badEnum.Status = 7
	keepBroken := pbWorkload("keep", "ns1", "10.0.0.7")
	keepBroken.Addresses = [][]byte{make([]byte, 5)}
	badCIDR := pbService("ns1", "cidr.example", "10.96.0.0")
	length := uint32(33)
	badCIDR.Addresses[0].Length = &length
	f.Batch(func(b *xdstestBatch) {
		b.SetWorkload(badIP)
		b.SetWorkload(legacy)
		b.SetWorkload(badEnum)
		b.SetWorkload(keepBroken)
		b.SetService(badCIDR)
		b.Set(TypeAddress, "mismatch", &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: pbWorkload("other", "ns1", "10.0.0.11")}})
		b.Set(TypeAddress, "garbage", &anypb.Any{TypeUrl: TypeAddress, Value: []byte{0xff, 0xff, 0xff}})
		b.SetWorkload(pbWorkload("good", "ns1", "10.0.0.12"))
		b.SetAuthorization(&security.Authorization{Name: "bad-port", Namespace: "ns1", Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{DestinationPorts: []uint32{70000}}}}}}}})
		b.SetAuthorization(&security.Authorization{Name: "bad-match", Namespace: "ns1", Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{Principals: []*security.StringMatch{{}}}}}}}}})
		b.SetAuthorization(pbPolicy("ns1", "good"))
	})
	nack := waitRequest(t, f, "Address NACK", func(r *discovery.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeAddress && isNACK(r)
	})
	msg := nack.GetErrorDetail().GetMessage()
	t.Logf("Address NACK: %s", msg)
	for _, want := range []string{
		"bad-ip: addresses[0]: IP address is 3 bytes",
		"legacy: tunnel protocol LEGACY_ISTIO_MTLS is not supported",
		"bad-enum: unknown workload status 7",
		"keep: addresses[0]: IP address is 5 bytes",
		"ns1/cidr.example: addresses[0]: invalid CIDR 10.96.0.0/33",
		`mismatch: name does not match the workload uid "other"`,
		"garbage: decode:",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Address NACK message lacks %q", want)
		}
	}
	if strings.Contains(msg, "good") {
		t.Errorf("Address NACK message names the good resource: %s", msg)
	}
	if n := strings.Count(msg, "; "); n != 6 {
		t.Errorf("Address NACK lists %d rejects, want 7 separated by \"; \"", n+1)
	}
	pnack := waitRequest(t, f, "Authorization NACK", func(r *discovery.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeAuthorization && isNACK(r)
	})
	pmsg := pnack.GetErrorDetail().GetMessage()
	for _, want := range []string{"ns1/bad-port: rules[0][0][0]: destination ports: [0]: 70000 is out of range", "ns1/bad-match: rules[0][0][0]: principals: [0]: string match has no match type"} {
		if !strings.Contains(pmsg, want) {
			t.Errorf("Authorization NACK message %q lacks %q", pmsg, want)
		}
	}
	snap := waitStore(t, cfg.Store, "good resources applied", func(s *Snapshot) bool {
		return s.WorkloadByUID("good") != nil && s.PolicyByKey("ns1/good") != nil
	})
	for _, uid := range []string{"bad-ip", "legacy", "bad-enum", "other", "mismatch"} {
		if snap.WorkloadByUID(uid) != nil {
			t.Errorf("rejected workload %s is in the store", uid)
		}
	}
	if w := snap.WorkloadByUID("keep"); w == nil || w.IPs[0] != netip.MustParseAddr("10.0.0.7") {
		t.Errorf("workload keep = %v, want the last good version kept", w)
	}
	if snap.ServiceByHost("ns1", "cidr.example") != nil || snap.PolicyByKey("ns1/bad-port") != nil {
		t.Error("rejected service or policy is in the store")
	}
	if st := c.Stats(); st.NACKs[TypeAddress] != 1 || st.NACKs[TypeAuthorization] != 1 {
		t.Errorf("NACK counters = %v, want one per type", st.NACKs)
	}

	// Rejected names are not held: the reconnect request does not claim them, and "keep"
	// claims its last good version.
	f.Disconnect()
	re := waitRequest(t, f, "reconnect Address request", func(r *discovery.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeAddress && len(r.GetInitialResourceVersions()) > 0
	})
	want := map[string]string{"keep": keepVersion, "good": f.Versions(TypeAddress)["good"]}
	if diff := cmp.Diff(want, re.GetInitialResourceVersions()); diff != "" {
		t.Errorf("initial_resource_versions after NACK (-want +got):\n%s", diff)
	}
}

func TestXDSReconnectKeepsStateAndResumes(t *testing.T) {
	f := startFakeIstiod(t)
	f.Batch(func(b *xdstestBatch) {
		b.SetWorkload(pbWorkload(uidA, "ns1", "10.0.0.1", keyS))
		b.SetService(pbService("ns1", hostS, "10.96.0.1"))
		b.SetAuthorization(pbPolicy("ns1", "p"))
	})
	cfg := testXDSConfig(t, f.addr)
	c := runXDSClient(t, cfg, nil)
	waitSynced(t, c)
	before := cfg.Store.Load()
	addrVersions, polVersions := f.Versions(TypeAddress), f.Versions(TypeAuthorization)

	f.Stop() // the server goes away; the client keeps retrying
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Terminations[TerminationConnectionError] < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no connection errors while the server was down: %v", c.Stats().Terminations)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cfg.Store.Load() != before {
		t.Fatal("store changed while disconnected, want the last good snapshot kept")
	}
	f.Delete(TypeAddress, uidA) // changes while the client is away
	f.SetWorkload(pbWorkload(uidB, "ns1", "10.0.0.2", keyS))
	f.restart(t)

	for _, tc := range []struct {
		typeURL string
		want    map[string]string
	}{{TypeAddress, addrVersions}, {TypeAuthorization, polVersions}} {
		r := waitRequest(t, f, "reconnect "+tc.typeURL, func(r *discovery.DeltaDiscoveryRequest) bool {
			return r.GetTypeUrl() == tc.typeURL && r.GetNode() != nil && len(r.GetInitialResourceVersions()) > 0
		})
		if diff := cmp.Diff(tc.want, r.GetInitialResourceVersions()); diff != "" {
			t.Errorf("%s initial_resource_versions (-want +got):\n%s", tc.typeURL, diff)
		}
	}
	after := waitStore(t, cfg.Store, "A removed, B added after reconnect", func(s *Snapshot) bool {
		return s.WorkloadByUID(uidA) == nil && s.WorkloadByUID(uidB) != nil
	})
	if got := after.ServiceByHost("ns1", hostS); got == nil || got.Endpoints[uidB] == nil || got.Endpoints[uidA] != nil {
		t.Errorf("service endpoints after reconnect = %v, want only B", got)
	}
	if after.PolicyByKey("ns1/p") != before.PolicyByKey("ns1/p") {
		t.Error("unchanged policy was replaced on reconnect, want it kept (not resent)")
	}
}

func TestXDSTokenRotationOnReconnect(t *testing.T) {
	f := startFakeIstiod(t)
	tokenFile := filepath.Join(t.TempDir(), "istio-token")
	if err := os.WriteFile(tokenFile, []byte("token-one"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testXDSConfig(t, f.addr)
	cfg.Dial.TokenPath = tokenFile
	c := runXDSClient(t, cfg, nil)
	waitSynced(t, c)
	if err := os.WriteFile(tokenFile, []byte("token-two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.Disconnect() // graceful: the client reconnects at once with a fresh request
	deadline := time.Now().Add(10 * time.Second)
	for len(f.Headers()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("client did not reconnect within 10s of Disconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h := f.Headers()
	var got []string
	for _, md := range h[:2] {
		got = append(got, strings.Join(md.Get("authorization"), ",")+" "+strings.Join(md.Get("clusterid"), ","))
	}
	if diff := cmp.Diff([]string{"Bearer token-one Kubernetes", "Bearer token-two Kubernetes"}, got); diff != "" {
		t.Errorf("authorization and clusterid per stream (-want +got):\n%s", diff)
	}
	if n := c.Stats().Terminations[TerminationComplete]; n != 1 {
		t.Errorf("Complete terminations = %d, want 1 after a graceful Disconnect", n)
	}
}

func TestXDSOnDemand(t *testing.T) {
	f := startFakeIstiod(t)
	const uidW, uidX = "cluster1//v1/Pod/ns1/w", "cluster1//v1/Pod/ns1/x"
	f.Batch(func(b *xdstestBatch) {
		b.SetWorkload(pbWorkload(uidW, "ns1", "10.0.0.5"))
		b.SetWorkload(pbWorkload(uidX, "ns1", "10.0.0.6"))
		b.SetAuthorization(pbPolicy("ns1", "p"))
	})
	cfg := testXDSConfig(t, f.addr)
	cfg.OnDemand = true
	c := runXDSClient(t, cfg, nil)
	waitSynced(t, c) // Authorization only
	first := waitRequest(t, f, "initial Address request", func(r *discovery.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeAddress
	})
	if !slices.Equal(first.GetResourceNamesSubscribe(), []string{"*"}) || !slices.Equal(first.GetResourceNamesUnsubscribe(), []string{"*"}) {
		t.Errorf("on-demand initial Address request subscribe %q unsubscribe %q, want [*] and [*]",
			first.GetResourceNamesSubscribe(), first.GetResourceNamesUnsubscribe())
	}
	waitRequest(t, f, "initial Authorization request", func(r *discovery.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeAuthorization && r.GetNode() != nil && len(r.GetResourceNamesSubscribe()) == 0
	})
	if n := len(cfg.Store.Load().Workloads()); n != 0 {
		t.Fatalf("store has %d workloads before any demand, want 0", n)
	}

	if err := c.Demand(testCtx(t), "/10.0.0.5"); err != nil {
		t.Fatalf("Demand(/10.0.0.5): %v", err)
	}
	snap := cfg.Store.Load()
	if w := snap.WorkloadByAddr("", netip.MustParseAddr("10.0.0.5")); w == nil || w.UID != uidW {
		t.Fatalf("after Demand, WorkloadByAddr(10.0.0.5) = %v, want %s", w, uidW)
	}
	if snap.WorkloadByUID(uidX) != nil {
		t.Error("workload x arrived without being demanded")
	}
	waitRequest(t, f, "demand subscription", func(r *discovery.DeltaDiscoveryRequest) bool {
		return slices.Equal(r.GetResourceNamesSubscribe(), []string{"/10.0.0.5"})
	})
	// Unknown names come back as removals and also release the caller.
	if err := c.Demand(testCtx(t), "/10.9.9.9"); err != nil {
		t.Fatalf("Demand(/10.9.9.9): %v", err)
	}
	// The demanded workload now receives updates.
	upd := pbWorkload(uidW, "ns1", "10.0.0.5")
	upd.Node = "node2"
	f.SetWorkload(upd)
	waitStore(t, cfg.Store, "demanded workload updated", func(s *Snapshot) bool {
		w := s.WorkloadByUID(uidW)
		return w != nil && w.Node == "node2"
	})
	// On reconnect the held name is subscribed again.
	f.Disconnect()
	re := waitRequest(t, f, "reconnect Address request", func(r *discovery.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeAddress && len(r.GetInitialResourceVersions()) > 0
	})
	if !slices.Equal(re.GetResourceNamesSubscribe(), []string{"*", uidW}) || !slices.Equal(re.GetResourceNamesUnsubscribe(), []string{"*"}) {
		t.Errorf("reconnect subscribe %q unsubscribe %q, want [* %s] and [*]", re.GetResourceNamesSubscribe(), re.GetResourceNamesUnsubscribe(), uidW)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Demand(ctx, "/10.0.0.99"); !errors.Is(err, context.Canceled) {
		t.Errorf("Demand with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestXDSDemandNeedsOnDemand(t *testing.T) {
	c, err := NewXDSClient(testXDSConfig(t, "127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Demand(context.Background(), "/10.0.0.1"); !errors.Is(err, ErrOnDemandDisabled) {
		t.Errorf("Demand without OnDemand = %v, want ErrOnDemandDisabled", err)
	}
}

func TestXDSBackoffGrowsThenRecovers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there for now

	delays := make(chan time.Duration, 100)
	cfg := testXDSConfig(t, addr)
	c := runXDSClient(t, cfg, func(c *XDSClient) {
		c.onBackoff = func(d time.Duration) {
			select {
			case delays <- d:
			default:
			}
		}
	})
	var got []time.Duration
	for len(got) < 4 {
		select {
		case d := <-delays:
			got = append(got, d)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d reconnect delays within 10s: %v", len(got), got)
		}
	}
	want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reconnect delays against a dead address (-want +got):\n%s", diff)
	}
	select {
	case <-c.Synced():
		t.Fatal("synced without a server")
	default:
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	f := &fakeIstiod{Server: xdstestNewServer(t), addr: addr}
	f.SetWorkload(pbWorkload(uidA, "ns1", "10.0.0.1"))
	go func() { _ = f.Serve(ln) }()
	t.Cleanup(f.Stop)
	waitSynced(t, c)
	if cfg.Store.Load().WorkloadByUID(uidA) == nil {
		t.Error("workload missing after recovery")
	}
	if n := c.Stats().Terminations[TerminationConnectionError]; n < 4 {
		t.Errorf("ConnectionError terminations = %d, want at least 4", n)
	}
}

func TestNextBackoff(t *testing.T) {
	conn := &connectError{errors.New("connection refused")}
	for _, tc := range []struct {
		name       string
		err        error
		prev       time.Duration
		wantReason string
		wantNext   time.Duration
	}{
		{"graceful close", nil, time.Second, TerminationComplete, xdsInitialBackoff},
		{"connect error doubles", conn, 10 * time.Millisecond, TerminationConnectionError, 20 * time.Millisecond},
		{"connect error capped", conn, 10 * time.Second, TerminationConnectionError, 15 * time.Second},
		{"max connection age", status.Error(codes.Unavailable, "transport is closing"), 8 * time.Second, TerminationReconnect, xdsInitialBackoff},
		{"goaway", status.Error(codes.Unavailable, "received prior goaway: code: NO_ERROR"), time.Second, TerminationReconnect, xdsInitialBackoff},
		{"cancelled", status.Error(codes.Canceled, "x"), time.Second, TerminationReconnect, xdsInitialBackoff},
		{"unknown", status.Error(codes.Unknown, "x"), time.Second, TerminationReconnect, xdsInitialBackoff},
		{"deadline", status.Error(codes.DeadlineExceeded, "x"), time.Second, TerminationReconnect, xdsInitialBackoff},
		{"unavailable other", status.Error(codes.Unavailable, "connection reset"), time.Second, TerminationError, 2 * time.Second},
		{"permission denied", status.Error(codes.PermissionDenied, "no"), time.Second, TerminationError, 2 * time.Second},
		{"local failure", errors.New("boom"), time.Second, TerminationError, xdsInitialBackoff},
	} {
		reason, next := nextBackoff(tc.err, tc.prev)
		if reason != tc.wantReason || next != tc.wantNext {
			t.Errorf("%s: nextBackoff = %s, %s; want %s, %s", tc.name, reason, next, tc.wantReason, tc.wantNext)
		}
	}
}

func TestNewXDSClientErrors(t *testing.T) {
	good := testXDSConfig(t, "127.0.0.1:1")
	for _, tc := range []struct {
		name   string
		mutate func(*XDSConfig)
		want   string
	}{
		{"no store", func(c *XDSConfig) { c.Store = nil }, "no Store"},
		{"no node id", func(c *XDSConfig) { c.NodeID = "" }, "no node id"},
		{"no address", func(c *XDSConfig) { c.Dial.Address = "" }, "XDS_ADDRESS"},
		{"bad header", func(c *XDSConfig) { c.Dial.Headers = map[string]string{"grpc-x": "1"} }, "grpc-x"},
		{"missing root", func(c *XDSConfig) {
			c.Dial = controlplane.DialConfig{Address: "istiod:15012", RootCAFile: "/nonexistent/root.pem"}
		}, "/nonexistent/root.pem"},
	} {
		cfg := good
		tc.mutate(&cfg)
		_, err := NewXDSClient(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewXDSClient error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestXDSRunTwice(t *testing.T) {
	f := startFakeIstiod(t)
	c := runXDSClient(t, testXDSConfig(t, f.addr), nil)
	waitSynced(t, c)
	if err := c.Run(context.Background()); err == nil {
		t.Error("second Run returned nil, want an error")
	}
}
