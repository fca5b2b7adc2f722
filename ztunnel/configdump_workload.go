package ztunnel

import (
	"maps"
	"slices"
	"strconv"

	"github.com/ztunnel-go/ztunnel/workload"
)

// The JSON of workloads and services in /config_dump, spelled as the reference serializes its
// state (ztunnel-behavior.md §7.2): camelCase keys, enums by name, addresses as "network/ip",
// service keys as "namespace/hostname", port maps keyed by the port as a string. Fields the
// reference leaves out when they hold their default carry omitempty.

type workloadJSON struct {
	WorkloadIPs           []string       `json:"workloadIps"`
	Waypoint              *gatewayJSON   `json:"waypoint,omitempty"`
	NetworkGateway        *gatewayJSON   `json:"networkGateway,omitempty"`
	Protocol              string         `json:"protocol"`
	NetworkMode           string         `json:"networkMode"`
	UID                   string         `json:"uid,omitempty"`
	Name                  string         `json:"name"`
	Namespace             string         `json:"namespace"`
	TrustDomain           string         `json:"trustDomain,omitempty"`
	ServiceAccount        string         `json:"serviceAccount,omitempty"`
	Network               string         `json:"network,omitempty"`
	WorkloadName          string         `json:"workloadName,omitempty"`
	WorkloadType          string         `json:"workloadType,omitempty"`
	CanonicalName         string         `json:"canonicalName,omitempty"`
	CanonicalRevision     string         `json:"canonicalRevision,omitempty"`
	Hostname              string         `json:"hostname,omitempty"`
	Node                  string         `json:"node,omitempty"`
	NativeTunnel          bool           `json:"nativeTunnel,omitempty"`
	ApplicationTunnel     *appTunnelJSON `json:"applicationTunnel,omitempty"`
	AuthorizationPolicies []string       `json:"authorizationPolicies,omitempty"`
	Status                string         `json:"status"`
	ClusterID             string         `json:"clusterId"`
	Locality              *localityJSON  `json:"locality,omitempty"`
	// Services is a list of "ns/hostname" in the live state, and in staticConfig the local
	// config's map of "ns/hostname" to port mapping. Nil (left out) when empty in the state.
	Services any    `json:"services,omitempty"`
	Capacity uint32 `json:"capacity"`
}

type localityJSON struct {
	Region  string `json:"region"`
	Zone    string `json:"zone"`
	Subzone string `json:"subzone"`
}

type gatewayJSON struct {
	Destination   string `json:"destination"`
	HBONEMTLSPort uint16 `json:"hboneMtlsPort"`
}

type appTunnelJSON struct {
	Protocol string  `json:"protocol"`
	Port     *uint16 `json:"port"` // null when unset
}

type serviceJSON struct {
	Name              string                  `json:"name"`
	Namespace         string                  `json:"namespace"`
	Hostname          string                  `json:"hostname"`
	VIPs              []string                `json:"vips"`
	CIDRVIPs          []cidrJSON              `json:"cidrVips,omitempty"`
	Ports             map[string]uint16       `json:"ports"`
	Endpoints         map[string]endpointJSON `json:"endpoints"`
	SubjectAltNames   []string                `json:"subjectAltNames"`
	Waypoint          *gatewayJSON            `json:"waypoint,omitempty"`
	WeightedWaypoints []weightedWaypointJSON  `json:"weightedWaypoints,omitempty"`
	LoadBalancer      *loadBalancerJSON       `json:"loadBalancer,omitempty"`
	IPFamilies        string                  `json:"ipFamilies,omitempty"`
	Canonical         bool                    `json:"canonical"`
	Visibility        string                  `json:"visibility"`
}

type cidrJSON struct {
	Network string `json:"network"`
	CIDR    string `json:"cidr"`
}

type endpointJSON struct {
	WorkloadUID string            `json:"workloadUid"`
	Port        map[string]uint16 `json:"port"`
	Status      string            `json:"status"`
}

type weightedWaypointJSON struct {
	Destination gatewayJSON `json:"destination"`
	Weight      uint32      `json:"weight"`
}

type loadBalancerJSON struct {
	RoutingPreferences []string `json:"routingPreferences"`
	Mode               string   `json:"mode"`
	HealthPolicy       string   `json:"healthPolicy"`
}

// dumpWorkload converts a workload. The Services field is left for the caller.
func dumpWorkload(w *workload.Workload) workloadJSON {
	out := workloadJSON{
		WorkloadIPs:           make([]string, 0, len(w.IPs)),
		Waypoint:              dumpGateway(w.Waypoint),
		NetworkGateway:        dumpGateway(w.NetworkGateway),
		Protocol:              w.Protocol.String(),
		NetworkMode:           w.NetworkMode.String(),
		UID:                   w.UID,
		Name:                  w.Name,
		Namespace:             w.Namespace,
		TrustDomain:           w.TrustDomain,
		ServiceAccount:        w.ServiceAccount,
		Network:               w.Network,
		WorkloadName:          w.WorkloadName,
		WorkloadType:          w.WorkloadType,
		CanonicalName:         w.CanonicalName,
		CanonicalRevision:     w.CanonicalRevision,
		Hostname:              w.Hostname,
		Node:                  w.Node,
		NativeTunnel:          w.NativeTunnel,
		AuthorizationPolicies: w.AuthorizationPolicies,
		Status:                w.Status.String(),
		ClusterID:             w.ClusterID,
		Capacity:              w.Capacity,
	}
	for _, ip := range w.IPs {
		out.WorkloadIPs = append(out.WorkloadIPs, ip.String())
	}
	if w.ApplicationTunnel != nil {
		t := &appTunnelJSON{Protocol: w.ApplicationTunnel.Protocol}
		if t.Protocol == "" {
			t.Protocol = "NONE"
		}
		if port := w.ApplicationTunnel.Port; port != 0 {
			t.Port = &port
		}
		out.ApplicationTunnel = t
	}
	if w.Locality != (workload.Locality{}) {
		out.Locality = &localityJSON{Region: w.Locality.Region, Zone: w.Locality.Zone, Subzone: w.Locality.Subzone}
	}
	return out
}

// dumpLiveWorkload converts a workload of the live state: its services as a sorted list.
func dumpLiveWorkload(w *workload.Workload) workloadJSON {
	out := dumpWorkload(w)
	if len(w.Services) > 0 {
		out.Services = slices.Sorted(maps.Keys(w.Services))
	}
	return out
}

// dumpStaticWorkload converts a workload of the local config: its services as the map the
// config gave (always present, as in the reference's local config schema).
func dumpStaticWorkload(w *workload.Workload) workloadJSON {
	out := dumpWorkload(w)
	svcs := make(map[string]map[string]uint16, len(w.Services))
	for key, ports := range w.Services {
		svcs[key] = dumpPorts(ports)
	}
	out.Services = svcs
	return out
}

func dumpGateway(g *workload.GatewayAddress) *gatewayJSON {
	if g == nil {
		return nil
	}
	return &gatewayJSON{Destination: g.Destination(), HBONEMTLSPort: g.HBONEMTLSPort}
}

func dumpPorts(ports map[uint16]uint16) map[string]uint16 {
	out := make(map[string]uint16, len(ports))
	for from, to := range ports {
		out[strconv.Itoa(int(from))] = to
	}
	return out
}

func dumpService(s *workload.Service) serviceJSON {
	out := serviceJSON{
		Name:            s.Name,
		Namespace:       s.Namespace,
		Hostname:        s.Hostname,
		VIPs:            make([]string, 0, len(s.VIPs)),
		Ports:           dumpPorts(s.Ports),
		Endpoints:       make(map[string]endpointJSON, len(s.Endpoints)),
		SubjectAltNames: s.SubjectAltNames,
		Waypoint:        dumpGateway(s.Waypoint),
		IPFamilies:      s.IPFamilies,
		Canonical:       s.Canonical,
		Visibility:      s.Visibility,
	}
	if out.SubjectAltNames == nil {
		out.SubjectAltNames = []string{}
	}
	if out.Visibility == "" {
		out.Visibility = workload.VisibilityPublic
	}
	for _, v := range s.VIPs {
		out.VIPs = append(out.VIPs, v.String())
	}
	for _, c := range s.CIDRVIPs {
		out.CIDRVIPs = append(out.CIDRVIPs, cidrJSON{Network: c.Network, CIDR: c.Prefix.String()})
	}
	for uid, ep := range s.Endpoints {
		if ep.WorkloadUID != "" {
			uid = ep.WorkloadUID
		}
		out.Endpoints[uid] = endpointJSON{WorkloadUID: uid, Port: dumpPorts(ep.Port), Status: ep.Status.String()}
	}
	for _, ww := range s.WeightedWaypoints {
		out.WeightedWaypoints = append(out.WeightedWaypoints,
			weightedWaypointJSON{Destination: *dumpGateway(&ww.Destination), Weight: ww.Weight})
	}
	if lb := s.LoadBalancing; lb != nil {
		j := &loadBalancerJSON{RoutingPreferences: make([]string, 0, len(lb.RoutingPreference)),
			Mode: lb.Mode.String(), HealthPolicy: lb.HealthPolicy.String()}
		for _, sc := range lb.RoutingPreference {
			j.RoutingPreferences = append(j.RoutingPreferences, sc.String())
		}
		out.LoadBalancer = j
	}
	return out
}
