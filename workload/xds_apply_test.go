package workload

import (
	"net/netip"
	"strings"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pkg/workloadapi"
)

func addressResource(t testing.TB, name, version string, a *workloadapi.Address) *discovery.Resource {
	t.Helper()
	body, err := anypb.New(a)
	if err != nil {
		t.Fatal(err)
	}
	return &discovery.Resource{Name: name, Version: version, Resource: body}
}

func workloadAddress(w *workloadapi.Workload) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
}

// TestApplyRollsBackWhenSnapshotFails forces NewSnapshot to fail (a bad entry planted behind
// the converter's back) and checks that the whole push is undone and NACKed, and that its
// versions are not recorded.
func TestApplyRollsBackWhenSnapshotFails(t *testing.T) {
	st := NewStore()
	s := newXDSState(st)
	res := s.apply(&discovery.DeltaDiscoveryResponse{TypeUrl: TypeAddress, Resources: []*discovery.Resource{
		addressResource(t, "a", "v1", workloadAddress(pbWorkload("a", "ns", "10.0.0.1"))),
	}})
	if res.nack != "" {
		t.Fatal(res.nack)
	}
	good := st.Load()
	s.workloads["planted"] = &Workload{UID: "planted", IPs: []netip.Addr{{}}} // invalid IP

	res = s.apply(&discovery.DeltaDiscoveryResponse{
		TypeUrl: TypeAddress,
		Resources: []*discovery.Resource{
			addressResource(t, "a", "v2", workloadAddress(pbWorkload("a", "ns", "10.0.0.2"))),
			addressResource(t, "b", "v3", workloadAddress(pbWorkload("b", "ns", "10.0.0.3"))),
		},
		RemovedResources: []string{"a"},
	})
	if !strings.Contains(res.nack, "push rejected, state unchanged") || !strings.Contains(res.nack, "planted") {
		t.Errorf("NACK = %q, want the snapshot error", res.nack)
	}
	if st.Load() != good {
		t.Error("store replaced by a rejected push")
	}
	if w := s.workloads["a"]; w == nil || w.IPs[0] != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("workload a = %v, want the v1 entry restored", w)
	}
	if s.workloads["b"] != nil {
		t.Error("workload b of the rejected push is held")
	}
	if diff := cmp.Diff(map[string]string{"a": "v1"}, s.known[TypeAddress]); diff != "" {
		t.Errorf("known versions (-want +got):\n%s", diff)
	}
	wantServed := []string{"a", "b", "a"}
	if diff := cmp.Diff(wantServed, res.served); diff != "" {
		t.Errorf("served names (-want +got):\n%s", diff)
	}
}

func TestApplyTypeChecks(t *testing.T) {
	s := newXDSState(NewStore())
	if res := s.apply(&discovery.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}); !strings.Contains(res.nack, "not subscribed") {
		t.Errorf("unknown type: NACK = %q", res.nack)
	}
	wrong := addressResource(t, "ns/p", "v1", workloadAddress(pbWorkload("ns/p", "ns", "10.0.0.1")))
	res := s.apply(&discovery.DeltaDiscoveryResponse{TypeUrl: TypeAuthorization, Resources: []*discovery.Resource{wrong, {Name: "ns/q"}}})
	for _, want := range []string{`ns/p: resource type "type.googleapis.com/istio.workload.Address"`, "ns/q: no resource body"} {
		if !strings.Contains(res.nack, want) {
			t.Errorf("NACK %q lacks %q", res.nack, want)
		}
	}
}

// BenchmarkApplyIncremental applies a one-workload update to a state holding 10 000
// workloads and 1 000 services: every push rebuilds the whole Snapshot.
func BenchmarkApplyIncremental(b *testing.B) {
	s := newXDSState(NewStore())
	if res := s.apply(bigPush(b, 10000, 1000)); res.nack != "" {
		b.Fatal(res.nack)
	}
	upd := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeAddress, Resources: []*discovery.Resource{
		addressResource(b, "cluster1//v1/Pod/ns0/pod-0", "v9", workloadAddress(pbWorkload("cluster1//v1/Pod/ns0/pod-0", "ns0", "10.250.0.1"))),
	}}
	b.ReportAllocs()
	for b.Loop() {
		if res := s.apply(upd); res.nack != "" {
			b.Fatal(res.nack)
		}
	}
}
