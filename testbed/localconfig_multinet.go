package testbed

import (
	"maps"
	"slices"
	"strings"
)

// renderNetworkConfig builds the local config YAML that the proxies and the gateway of network
// load in a multi-network cluster: what istiod sends a cluster on that network
// (shared/reference/multinetwork-and-policy.md §1.1).
//
//   - Every pod of network (OmitFromConfig ones left out), as renderConfig lists it.
//   - For every other network M with a gateway: the gateway's workload (UID
//     "NetworkGateway/M/<gateway IP>/15008", GatewayNamespace, GatewayServiceAccount, HBONE).
//   - For every service with endpoints on such an M: one split-horizon workload with no address
//     and no service account, network M, networkGateway "M/<gateway IP>" port 15008, capacity =
//     the service's endpoint count on M, and the service's ports. M's pods themselves are not
//     listed, nor anything of a network without a gateway.
//   - Every service with its VIP on network only, and subjectAltNames listing the identity of
//     every endpoint on every network (the inner TLS of double HBONE is verified against them).
//   - Every policy.
//
// The output is deterministic.
func renderNetworkConfig(network string, pods []podRecord, services []serviceRecord, policies []policyRecord, gateways []gatewayRecord) ([]byte, error) {
	cfg := LocalConfig{Workloads: []LocalWorkload{}, Services: []LocalService{}}
	for _, p := range pods {
		if !p.OmitFromConfig && p.Network == network {
			cfg.Workloads = append(cfg.Workloads, podWorkload(p))
		}
	}
	gws := slices.Clone(gateways)
	slices.SortFunc(gws, func(a, b gatewayRecord) int { return strings.Compare(a.Network, b.Network) })
	for _, g := range gws {
		if g.Network == network {
			continue
		}
		cfg.Workloads = append(cfg.Workloads, gatewayWorkload(g))
		for _, s := range services {
			if w, ok := splitHorizonWorkload(g, s, pods); ok {
				cfg.Workloads = append(cfg.Workloads, w)
			}
		}
	}
	for _, s := range services {
		ls := localService(s, []string{network})
		ls.SubjectAltNames = serviceSANs(s, pods)
		cfg.Services = append(cfg.Services, ls)
	}
	cfg.Policies = renderPolicies(policies)
	return encodeLocalConfig(cfg)
}

// gatewayWorkload is the workload of an east-west gateway as istiod sends it to other networks.
func gatewayWorkload(g gatewayRecord) LocalWorkload {
	uid := g.workloadUID()
	return LocalWorkload{
		UID:            uid,
		Name:           uid,
		Namespace:      GatewayNamespace,
		ServiceAccount: GatewayServiceAccount,
		TrustDomain:    TrustDomain,
		WorkloadIPs:    []string{g.IP.String()},
		Protocol:       "HBONE",
		Network:        g.Network,
		ClusterID:      g.Cluster,
		Status:         "Healthy",
	}
}

// splitHorizonWorkload is the workload that stands for the endpoints of s on g's network, reached
// through g; false if s has no endpoint there.
func splitHorizonWorkload(g gatewayRecord, s serviceRecord, pods []podRecord) (LocalWorkload, bool) {
	key := s.Namespace + "/" + s.Hostname()
	var n uint32
	for _, p := range pods {
		if p.OmitFromConfig || p.Network != g.Network {
			continue
		}
		if _, ok := p.Services[key]; ok {
			n++
		}
	}
	if n == 0 {
		return LocalWorkload{}, false
	}
	uid := g.Network + "/SplitHorizonWorkload/" + GatewayNamespace + "/eastwestgateway/" + g.IP.String() + "/" + key
	return LocalWorkload{
		UID:         uid,
		Name:        uid,
		Namespace:   s.Namespace,
		TrustDomain: TrustDomain,
		Protocol:    "HBONE",
		Network:     g.Network,
		ClusterID:   g.Cluster,
		Status:      "Healthy",
		Services:    map[string]map[uint16]uint16{key: maps.Clone(s.Ports)},
		Capacity:    &n,
		NetworkGateway: &LocalGatewayAddress{
			Destination:   g.Network + "/" + g.IP.String(),
			HBONEMTLSPort: GatewayHBONEPort,
		},
	}, true
}

// serviceSANs lists the SPIFFE identities of every endpoint of s (on every network), sorted; nil
// if it has none.
func serviceSANs(s serviceRecord, pods []podRecord) []string {
	key := s.Namespace + "/" + s.Hostname()
	var sans []string
	for _, p := range pods {
		if p.OmitFromConfig {
			continue
		}
		if _, ok := p.Services[key]; ok {
			sans = append(sans, spiffeID(p.Namespace, p.ServiceAccount))
		}
	}
	slices.Sort(sans)
	return slices.Compact(sans)
}

// spiffeID is the SPIFFE identity of a service account in the trust domain.
func spiffeID(namespace, serviceAccount string) string {
	return "spiffe://" + TrustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}
