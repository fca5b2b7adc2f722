package bench

import (
	"bytes"
	"fmt"
	"net/netip"

	"go.yaml.in/yaml/v3"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// Bounds of the synthetic config: workload addresses come from 10.100.0.0/14 and service VIPs
// from 10.97.0.0/16, neither used by the testbed.
const (
	maxSynthWorkloads = 250_000
	maxSynthServices  = 65_000
	synthNamespaces   = 50  // workloads are spread over this many namespaces
	synthNodes        = 100 // ... and over this many (nonexistent) nodes
)

// synthIP returns the i-th address (from 0) of base, counting across octets.
func synthIP(base netip.Addr, i int) netip.Addr {
	b := base.As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n += uint32(i)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// syntheticConfig renders a local config document with workloads HBONE workloads on synthetic
// nodes (so no proxy treats them as local) and services services; workload i is an endpoint of
// service i mod services (port 80 -> 8080).
func syntheticConfig(workloads, services int) ([]byte, error) {
	if workloads < 0 || workloads > maxSynthWorkloads || services < 1 || services > maxSynthServices {
		return nil, fmt.Errorf("synthetic config: %d workloads, %d services: want 0..%d and 1..%d",
			workloads, services, maxSynthWorkloads, maxSynthServices)
	}
	wlBase := netip.MustParseAddr("10.100.0.1")
	vipBase := netip.MustParseAddr("10.97.0.1")
	cfg := testbed.LocalConfig{Workloads: make([]testbed.LocalWorkload, 0, workloads), Services: make([]testbed.LocalService, 0, services)}
	svcKey := func(j int) (ns, name, host string) {
		ns = fmt.Sprintf("synth-%d", j%synthNamespaces)
		name = fmt.Sprintf("svc-%d", j)
		return ns, name, name + "." + ns + ".svc." + testbed.TrustDomain
	}
	for j := range services {
		ns, name, host := svcKey(j)
		cfg.Services = append(cfg.Services, testbed.LocalService{Name: name, Namespace: ns, Hostname: host,
			VIPs: []string{"/" + synthIP(vipBase, j).String()}, Ports: map[uint16]uint16{80: 8080}})
	}
	for i := range workloads {
		ns := fmt.Sprintf("synth-%d", i%synthNamespaces)
		name := fmt.Sprintf("wl-%d", i)
		sns, _, host := svcKey(i % services)
		cfg.Workloads = append(cfg.Workloads, testbed.LocalWorkload{
			UID:  testbed.DefaultClusterID + "//v1/Pod/" + ns + "/" + name,
			Name: name, Namespace: ns, ServiceAccount: fmt.Sprintf("sa-%d", i%200), TrustDomain: testbed.TrustDomain,
			WorkloadIPs: []string{synthIP(wlBase, i).String()}, Protocol: "HBONE",
			Node: fmt.Sprintf("synth-node-%d", i%synthNodes), ClusterID: testbed.DefaultClusterID, Status: "Healthy",
			Services: map[string]map[uint16]uint16{sns + "/" + host: {80: 8080}},
		})
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("synthetic config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("synthetic config: %w", err)
	}
	return buf.Bytes(), nil
}
