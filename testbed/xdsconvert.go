package testbed

import (
	"cmp"
	"maps"
	"slices"

	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ztunnel-go/ztunnel/workload"
)

// Type URLs of the resources the fake istiod serves (ztunnel-behavior.md §3.3).
const (
	typeAddress       = workload.TypeAddress
	typeAuthorization = workload.TypeAuthorization
)

// xdsResources is the control plane's form of the topology: resource name -> resource, per type
// URL. Address resources are named by workload UID or "<namespace>/<hostname>", Authorization
// resources by "<namespace>/<name>". Treat it as immutable once built.
type xdsResources map[string]resourceSet

// buildResources converts the topology to the resources istiod would serve, the counterpart of
// renderConfig: the same pods (OmitFromConfig ones left out), services and policies. networks are
// the node networks: each service VIP is published on every distinct one.
func buildResources(pods []podRecord, services []serviceRecord, policies []policyRecord, networks []string) xdsResources {
	res := xdsResources{typeAddress: {}, typeAuthorization: {}}
	for _, p := range pods {
		if p.OmitFromConfig {
			continue
		}
		res[typeAddress][p.UID()] = &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: workloadProto(p)}}
	}
	nets := distinctNetworks(networks)
	for _, s := range services {
		res[typeAddress][s.Namespace+"/"+s.Hostname()] = &workloadapi.Address{Type: &workloadapi.Address_Service{Service: serviceProto(s, nets)}}
	}
	for _, p := range policies {
		res[typeAuthorization][p.Key()] = authorizationProto(p)
	}
	return res
}

// workloadProto converts a pod to an istio.workload.Workload.
func workloadProto(p podRecord) *workloadapi.Workload {
	w := &workloadapi.Workload{
		Uid:                   p.UID(),
		Name:                  p.Name,
		Namespace:             p.Namespace,
		Network:               p.Network,
		TrustDomain:           TrustDomain,
		ServiceAccount:        p.ServiceAccount,
		Node:                  p.Node,
		ClusterId:             p.Cluster,
		Status:                workloadapi.WorkloadStatus_HEALTHY,
		CanonicalName:         p.canonicalName(),
		CanonicalRevision:     p.canonicalRevision(),
		AuthorizationPolicies: slices.Clone(p.Policies),
	}
	if p.IP.IsValid() {
		w.Addresses = [][]byte{p.IP.AsSlice()}
	}
	if p.protocol() == "HBONE" {
		w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
	}
	if p.Locality != (localLocality{}) {
		w.Locality = &workloadapi.Locality{Region: p.Locality.Region, Zone: p.Locality.Zone, Subzone: p.Locality.Subzone}
	}
	if len(p.Services) > 0 {
		w.Services = map[string]*workloadapi.PortList{}
		for key, ports := range p.Services {
			w.Services[key] = &workloadapi.PortList{Ports: portsProto(ports)}
		}
	}
	return w
}

// serviceProto converts a service, publishing its VIP on each of nets.
func serviceProto(s serviceRecord, nets []string) *workloadapi.Service {
	svc := &workloadapi.Service{
		Name:      s.Name,
		Namespace: s.Namespace,
		Hostname:  s.Hostname(),
		Ports:     portsProto(s.Ports),
	}
	for _, n := range nets {
		svc.Addresses = append(svc.Addresses, &workloadapi.NetworkAddress{Network: n, Address: s.VIP.AsSlice()})
	}
	if len(s.RoutingPreferences) > 0 || s.Mode != "" {
		lb := &workloadapi.LoadBalancing{Mode: lbModes[s.Mode]}
		for _, pref := range s.RoutingPreferences {
			lb.RoutingPreference = append(lb.RoutingPreference, lbScopes[pref])
		}
		svc.LoadBalancing = lb
	}
	return svc
}

// lbScopes and lbModes map the ServiceSpec names (validated by newServiceRecord) to the enums.
var (
	lbScopes = map[string]workloadapi.LoadBalancing_Scope{
		"Network": workloadapi.LoadBalancing_NETWORK,
		"Region":  workloadapi.LoadBalancing_REGION,
		"Zone":    workloadapi.LoadBalancing_ZONE,
		"Subzone": workloadapi.LoadBalancing_SUBZONE,
		"Node":    workloadapi.LoadBalancing_NODE,
		"Cluster": workloadapi.LoadBalancing_CLUSTER,
	}
	lbModes = map[string]workloadapi.LoadBalancing_Mode{
		"Standard":    workloadapi.LoadBalancing_UNSPECIFIED_MODE,
		"Strict":      workloadapi.LoadBalancing_STRICT,
		"Failover":    workloadapi.LoadBalancing_FAILOVER,
		"Passthrough": workloadapi.LoadBalancing_PASSTHROUGH,
	}
)

// portsProto converts service port -> target port, sorted by service port.
func portsProto(ports map[uint16]uint16) []*workloadapi.Port {
	var out []*workloadapi.Port
	for _, sp := range slices.Sorted(maps.Keys(ports)) {
		out = append(out, &workloadapi.Port{ServicePort: uint32(sp), TargetPort: uint32(ports[sp])})
	}
	return out
}

// authorizationProto converts a policy. Each Match of a rule becomes a clause holding that match.
func authorizationProto(p policyRecord) *security.Authorization {
	a := &security.Authorization{
		Name:      p.Name,
		Namespace: p.Namespace,
		Scope:     policyScopes[p.Scope],
		Action:    policyActions[p.Action],
	}
	for _, rule := range p.Rules {
		g := &security.Group{}
		for _, m := range rule {
			g.Rules = append(g.Rules, &security.Rules{Matches: []*security.Match{matchProto(m)}})
		}
		a.Groups = append(a.Groups, g)
	}
	return a
}

var (
	policyScopes = map[string]security.Scope{
		"Global":           security.Scope_GLOBAL,
		"Namespace":        security.Scope_NAMESPACE,
		"WorkloadSelector": security.Scope_WORKLOAD_SELECTOR,
	}
	policyActions = map[string]security.Action{
		"Allow": security.Action_ALLOW,
		"Deny":  security.Action_DENY,
	}
)

func matchProto(m matchRecord) *security.Match {
	exact := func(ss []string) []*security.StringMatch {
		var out []*security.StringMatch
		for _, s := range ss {
			out = append(out, &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}})
		}
		return out
	}
	pm := &security.Match{
		Principals:    exact(m.Principals),
		NotPrincipals: exact(m.NotPrincipals),
		Namespaces:    exact(m.Namespaces),
	}
	for _, port := range m.DestinationPorts {
		pm.DestinationPorts = append(pm.DestinationPorts, uint32(port))
	}
	for _, pfx := range m.SourceIPs {
		pm.SourceIps = append(pm.SourceIps, &security.Address{Address: pfx.Addr().AsSlice(), Length: uint32(pfx.Bits())})
	}
	return pm
}

// sortedNames returns the names of one type's resources, sorted.
func (r xdsResources) sortedNames(typeURL string) []string {
	return slices.SortedFunc(maps.Keys(r[typeURL]), cmp.Compare[string])
}
