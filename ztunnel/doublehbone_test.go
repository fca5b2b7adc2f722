package ztunnel

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/ztunnel-go/ztunnel/workload"
)

// doubleConfig: a client on network1; services whose only endpoints are behind gateways of other
// networks, each gateway wrong in its own way, and one good one.
const doubleConfig = `
workloads:
- uid: network1//Pod/default/client
  name: client
  namespace: default
  serviceAccount: client
  network: network1
  workloadIps: ["10.1.0.5"]
  protocol: HBONE
- uid: NetworkGateway/network2/172.30.9.9/15008
  name: eastwest
  namespace: istio-system
  serviceAccount: istio-eastwestgateway
  network: network2
  workloadIps: ["172.30.9.9"]
  protocol: HBONE
- uid: network2/SplitHorizonWorkload/good
  name: sh-good
  namespace: sample
  network: network2
  protocol: HBONE
  networkGateway: {destination: "network2/172.30.9.9", hboneMtlsPort: 15008}
  services: {"sample/good.sample.svc.cluster.local": {80: 8080}, "sample/nosans.sample.svc.cluster.local": {80: 8080}}
- uid: network3/SplitHorizonWorkload/unknown-address
  name: sh-unknown-address
  namespace: sample
  network: network3
  protocol: HBONE
  networkGateway: {destination: "network3/10.3.3.3", hboneMtlsPort: 15008}
  services: {"sample/unknown-address.sample.svc.cluster.local": {80: 8080}}
- uid: network4/SplitHorizonWorkload/unknown-service
  name: sh-unknown-service
  namespace: sample
  network: network4
  protocol: HBONE
  networkGateway: {destination: "istio-system/no-such-gateway.istio-system.svc.cluster.local", hboneMtlsPort: 15008}
  services: {"sample/unknown-service.sample.svc.cluster.local": {80: 8080}}
- uid: network5/SplitHorizonWorkload/loop
  name: sh-loop
  namespace: sample
  network: network5
  protocol: HBONE
  networkGateway: {destination: "istio-system/loop-gateway.istio-system.svc.cluster.local", hboneMtlsPort: 15008}
  services:
    "sample/loop.sample.svc.cluster.local": {80: 8080}
    "istio-system/loop-gateway.istio-system.svc.cluster.local": {15008: 15008}
services:
- {name: good, namespace: sample, hostname: good.sample.svc.cluster.local, vips: ["network1/10.96.0.1"], ports: {80: 8080},
   subjectAltNames: ["spiffe://cluster.local/ns/sample/sa/good"]}
- {name: nosans, namespace: sample, hostname: nosans.sample.svc.cluster.local, vips: ["network1/10.96.0.2"], ports: {80: 8080}}
- {name: unknown-address, namespace: sample, hostname: unknown-address.sample.svc.cluster.local, vips: ["network1/10.96.0.3"],
   ports: {80: 8080}, subjectAltNames: ["spiffe://cluster.local/ns/sample/sa/x"]}
- {name: unknown-service, namespace: sample, hostname: unknown-service.sample.svc.cluster.local, vips: ["network1/10.96.0.4"],
   ports: {80: 8080}, subjectAltNames: ["spiffe://cluster.local/ns/sample/sa/x"]}
- {name: loop, namespace: sample, hostname: loop.sample.svc.cluster.local, vips: ["network1/10.96.0.5"], ports: {80: 8080},
   subjectAltNames: ["spiffe://cluster.local/ns/sample/sa/x"]}
- {name: loop-gateway, namespace: istio-system, hostname: loop-gateway.istio-system.svc.cluster.local, ports: {15008: 15008}}
`

// Bad gateway input gets a clear error naming what is wrong, before anything is dialed: a gateway
// address that is not a known workload, a gateway hostname that is no service, a gateway whose
// endpoints are themselves behind a gateway (a loop), and a service without the SANs that verify
// the inner tunnel. The good one resolves to the gateway workload's address and identity.
func TestDoubleHBONEBadGateways(t *testing.T) {
	p := newTestProxy(t, Config{Network: "network1"})
	snap, err := parseSnapshot(doubleConfig)
	if err != nil {
		t.Fatal(err)
	}
	p.store.Replace(snap)
	pod := testPod(p)
	src := snap.WorkloadByUID("network1//Pod/default/client")
	for _, tc := range []struct {
		vip  string
		want string
	}{
		{"10.96.0.2", "has no subject_alt_names"},
		{"10.96.0.3", "network gateway network3/10.3.3.3 is not a known workload"},
		{"10.96.0.4", "no-such-gateway.istio-system.svc.cluster.local: no such service"},
		{"10.96.0.5", "a gateway behind another gateway would loop"},
	} {
		dst := netip.AddrPortFrom(netip.MustParseAddr(tc.vip), 80)
		sel, err := pod.resolve(snap, src, dst)
		if err != nil {
			t.Fatalf("%s: resolve: %v", tc.vip, err)
		}
		ci := &connInfo{Direction: "outbound", Src: netip.MustParseAddrPort("10.1.0.5:40000"), Dst: dst}
		_, err = pod.connectThroughGateway(context.Background(), ci, src, sel.svc, sel.up, sel.port)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error saying %q", tc.vip, err, tc.want)
		}
	}
	gw, err := p.resolveGateway(snap, src, snap.WorkloadByUID("network2/SplitHorizonWorkload/good").NetworkGateway)
	if err != nil || gw.addr != netip.MustParseAddrPort("172.30.9.9:15008") ||
		len(gw.identities) != 1 || gw.identities[0] != "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway" {
		t.Errorf("good gateway = %+v, %v", gw, err)
	}
}

// A gateway that failed lately is avoided while another endpoint can serve, and used again when
// it is the only one.
func TestSelectAvoidsDownGateway(t *testing.T) {
	remote := &workload.Workload{UID: "remote", Network: "network2", Capacity: 1,
		NetworkGateway: &workload.GatewayAddress{Address: &workload.NetworkAddress{Network: "network2", Addr: netip.MustParseAddr("172.30.9.9")}},
		Services:       map[string]map[uint16]uint16{"sample/svc.sample.svc.cluster.local": {80: 8080}}}
	local := &workload.Workload{UID: "local", Network: "network1", Capacity: 1, IPs: []netip.Addr{netip.MustParseAddr("10.1.0.9")},
		Services: map[string]map[uint16]uint16{"sample/svc.sample.svc.cluster.local": {80: 8080}}}
	svc := &workload.Service{Name: "svc", Namespace: "sample", Hostname: "svc.sample.svc.cluster.local", Ports: map[uint16]uint16{80: 8080}}
	snap, err := workload.NewSnapshot([]*workload.Workload{remote, local}, []*workload.Service{svc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := &workload.Workload{UID: "client", Network: "network1"}
	svc = snap.ServiceByHost("sample", "svc.sample.svc.cluster.local")
	var h gatewayHealth
	h.markDown(remote.NetworkGateway.Destination())
	for r := range uint64(2) {
		up, ok := selectEndpointAvoiding(snap, src, svc, 80, func(n uint64) uint64 { return r % n }, h.isDown)
		if !ok || up.Workload.UID != "local" {
			t.Errorf("with the remote gateway down, pick %d = %v; want the local endpoint", r, up.Workload)
		}
	}
	avoidAll := func(*workload.Workload) bool { return true }
	if _, ok := selectEndpointAvoiding(snap, src, svc, 80, func(uint64) uint64 { return 0 }, avoidAll); !ok {
		t.Error("with every endpoint avoided, nothing was picked; want the normal pick")
	}
}

func parseSnapshot(yaml string) (*workload.Snapshot, error) {
	lc, err := workload.ParseLocalConfig("test", []byte(yaml))
	if err != nil {
		return nil, err
	}
	return lc.Snapshot()
}
