package workload

import (
	"fmt"
	"runtime"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pkg/workloadapi"
)

// bigPush returns one Address response with nWorkloads workloads spread over nServices
// services.
func bigPush(tb testing.TB, nWorkloads, nServices int) *discovery.DeltaDiscoveryResponse {
	tb.Helper()
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeAddress, Nonce: "n1"}
	add := func(name string, a *workloadapi.Address) {
		body, err := anypb.New(a)
		if err != nil {
			tb.Fatal(err)
		}
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: name, Version: "v1", Resource: body})
	}
	for i := range nServices {
		ns, host := fmt.Sprintf("ns%d", i%50), fmt.Sprintf("svc%d.example.svc.cluster.local", i)
		s := pbService(ns, host, fmt.Sprintf("10.96.%d.%d", i/256, i%256))
		add(ns+"/"+host, &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}})
	}
	for i := range nWorkloads {
		svc := i % nServices
		uid := fmt.Sprintf("cluster1//v1/Pod/ns%d/pod-%d", svc%50, i)
		w := pbWorkload(uid, fmt.Sprintf("ns%d", svc%50), fmt.Sprintf("10.%d.%d.%d", 1+i/65536, (i/256)%256, i%256),
			fmt.Sprintf("ns%d/svc%d.example.svc.cluster.local", svc%50, svc))
		w.ServiceAccount = fmt.Sprintf("sa%d", svc)
		w.Node = fmt.Sprintf("node%d", i%100)
		add(uid, &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}})
	}
	return resp
}

// BenchmarkApplyPush applies one push of 10 000 workloads and 1 000 services to an empty
// client state: decode, convert, index, publish. It also reports the heap retained by the
// resulting state (retained-B).
func BenchmarkApplyPush(b *testing.B) {
	resp := bigPush(b, 10000, 1000)
	retained := retainedBytes(b, resp)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s := newXDSState(NewStore())
		if res := s.apply(resp); res.nack != "" {
			b.Fatal(res.nack)
		}
	}
	b.ReportMetric(float64(retained), "retained-B") // after the loop: ResetTimer drops metrics
}

// retainedBytes measures the live heap growth caused by applying resp to a fresh state.
func retainedBytes(tb testing.TB, resp *discovery.DeltaDiscoveryResponse) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := newXDSState(NewStore())
	if res := s.apply(resp); res.nack != "" {
		tb.Fatal(res.nack)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := len(s.store.Load().Workloads()); n != len(resp.Resources)*10/11 {
		tb.Fatalf("store has %d workloads", n)
	}
	runtime.KeepAlive(s)
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}

// TestApplyPushRetainedHeap logs the heap a 10k-workload/1k-service state retains and fails
// if it exceeds 64 MiB (about 6 KiB per workload), which would mean the proto push itself is
// being retained.
func TestApplyPushRetainedHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10k-workload push")
	}
	resp := bigPush(t, 10000, 1000)
	got := retainedBytes(t, resp)
	t.Logf("retained heap after applying 10000 workloads + 1000 services: %.1f MiB (%d B/workload)",
		float64(got)/(1<<20), got/10000)
	if got > 64<<20 {
		t.Errorf("retained heap %d B, want at most 64 MiB", got)
	}
	svc := newXDSState(NewStore())
	svc.apply(resp)
	if s := svc.store.Load().ServiceByHost("ns0", "svc0.example.svc.cluster.local"); s == nil || len(s.Endpoints) != 10 {
		t.Errorf("svc0 endpoints = %v, want 10", s)
	}
}
