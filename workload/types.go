package workload

import (
	"fmt"
	"net/netip"
	"strings"
)

// Defaults applied to workloads whose fields are empty (ztunnel-behavior.md §3.1).
const (
	DefaultTrustDomain    = "cluster.local"
	DefaultServiceAccount = "default"
	DefaultClusterID      = "Kubernetes"
)

// Locality is where a workload runs; any part may be empty.
type Locality struct{ Region, Zone, Subzone string }

// NetworkAddress is an IP on a named network ("" is the default network).
type NetworkAddress struct {
	Network string
	Addr    netip.Addr
}

// String returns "network/ip", e.g. "/10.0.0.1" on the default network.
func (a NetworkAddress) String() string { return a.Network + "/" + a.Addr.String() }

// ParseNetworkAddress parses "network/ip". The network is everything before the first '/'.
func ParseNetworkAddress(s string) (NetworkAddress, error) {
	network, ip, ok := strings.Cut(s, "/")
	if !ok {
		return NetworkAddress{}, fmt.Errorf("invalid network address %q (want network/IP, e.g. \"/10.0.0.1\")", s)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.Zone() != "" {
		return NetworkAddress{}, fmt.Errorf("invalid network address %q: invalid IP %q", s, ip)
	}
	return NetworkAddress{Network: network, Addr: addr.Unmap()}, nil
}

// NetworkPrefix is a CIDR on a named network (a service's CIDR VIP).
type NetworkPrefix struct {
	Network string
	Prefix  netip.Prefix
}

// String returns "network/cidr", e.g. "/10.0.0.0/24".
func (p NetworkPrefix) String() string { return p.Network + "/" + p.Prefix.String() }

// NamespacedHostname names a service by namespace and hostname.
type NamespacedHostname struct{ Namespace, Hostname string }

// String returns "namespace/hostname".
func (n NamespacedHostname) String() string { return n.Namespace + "/" + n.Hostname }

// ParseNamespacedHostname parses "namespace/hostname"; both parts must be non-empty.
func ParseNamespacedHostname(s string) (NamespacedHostname, error) {
	ns, host, ok := strings.Cut(s, "/")
	if !ok || ns == "" || host == "" {
		return NamespacedHostname{}, fmt.Errorf("invalid namespaced hostname %q (want namespace/hostname)", s)
	}
	return NamespacedHostname{Namespace: ns, Hostname: host}, nil
}

// GatewayAddress is a waypoint or network gateway. Exactly one of Address and Hostname is set.
type GatewayAddress struct {
	Address       *NetworkAddress
	Hostname      *NamespacedHostname
	HBONEMTLSPort uint16
}

// Destination returns the gateway's address ("network/ip") or hostname ("ns/host").
func (g *GatewayAddress) Destination() string {
	switch {
	case g.Address != nil:
		return g.Address.String()
	case g.Hostname != nil:
		return g.Hostname.String()
	}
	return ""
}

// ParseGatewayDestination parses a gateway destination the way the reference's local config
// does: "network/ip" if the part after the first '/' is an IP, else "namespace/hostname".
func ParseGatewayDestination(s string) (GatewayAddress, error) {
	if a, err := ParseNetworkAddress(s); err == nil {
		return GatewayAddress{Address: &a}, nil
	}
	h, err := ParseNamespacedHostname(s)
	if err != nil {
		return GatewayAddress{}, fmt.Errorf("invalid gateway destination %q (want network/IP or namespace/hostname)", s)
	}
	return GatewayAddress{Hostname: &h}, nil
}

// ApplicationTunnel says the workload accepts a tunnel protocol on a port.
type ApplicationTunnel struct {
	Protocol string // "NONE" or "PROXY"
	Port     uint16 // 0 = unset
}

// Workload is one addressable mesh member (pod, VM, ...). Immutable once in a Snapshot.
// (The small fields are at the end, packed together: a snapshot holds one per workload.)
type Workload struct {
	UID            string // unique key, e.g. "cluster1//v1/Pod/ns/name"
	Name           string
	Namespace      string
	TrustDomain    string // "" means DefaultTrustDomain
	ServiceAccount string // "" means DefaultServiceAccount
	Network        string // "" is the default network
	Node           string
	ClusterID      string // "" means DefaultClusterID
	Hostname       string // set for workloads reached by DNS name instead of IPs

	WorkloadName, WorkloadType, CanonicalName, CanonicalRevision string

	IPs      []netip.Addr
	Locality Locality

	Waypoint, NetworkGateway *GatewayAddress
	// Labels are the workload's Kubernetes labels where the source has them (a local config may
	// list them; workload discovery does not carry them): see Label.
	Labels            map[string]string
	ApplicationTunnel *ApplicationTunnel
	// AuthorizationPolicies are the "ns/name" keys of the WorkloadSelector policies that apply.
	AuthorizationPolicies []string
	// Services maps "ns/hostname" to this endpoint's service port -> target port mapping.
	Services map[string]map[uint16]uint16

	// Capacity weighs the workload in endpoint selection. The converters set it to 1 when the
	// source does not give one; 0 is kept only when given explicitly.
	Capacity     uint32
	Protocol     Protocol
	Status       Status
	NetworkMode  NetworkMode
	NativeTunnel bool
}

// Identity returns the workload's SPIFFE identity, "spiffe://<td>/ns/<ns>/sa/<sa>", with the
// trust domain and service account defaults applied.
func (w *Workload) Identity() string {
	td, sa := w.TrustDomain, w.ServiceAccount
	if td == "" {
		td = DefaultTrustDomain
	}
	if sa == "" {
		sa = DefaultServiceAccount
	}
	return "spiffe://" + td + "/ns/" + w.Namespace + "/sa/" + sa
}

// LoadBalancing is a service's endpoint selection policy.
type LoadBalancing struct {
	RoutingPreference []Scope
	Mode              LBMode
	HealthPolicy      HealthPolicy
}

// Endpoint is one workload behind a service.
type Endpoint struct {
	WorkloadUID string
	Port        map[uint16]uint16 // service port -> target port for this endpoint
	Status      Status
}

// WeightedWaypoint is one candidate of a weighted waypoint set.
type WeightedWaypoint struct {
	Destination GatewayAddress
	Weight      uint32
}

// Service is a named set of endpoints reachable at VIPs. Immutable once in a Snapshot.
type Service struct {
	Name, Namespace, Hostname string

	VIPs     []NetworkAddress
	CIDRVIPs []NetworkPrefix // VIP ranges; exact VIPs win over them
	// Ports maps service port -> target port (0 = named port: use the endpoint's mapping).
	Ports           map[uint16]uint16
	SubjectAltNames []string
	// Endpoints by workload uid. In a Snapshot it holds only the endpoints passing the
	// health policy: the service's own endpoints plus those of workloads naming the service.
	Endpoints         map[string]*Endpoint
	LoadBalancing     *LoadBalancing // nil = none
	Waypoint          *GatewayAddress
	WeightedWaypoints []WeightedWaypoint
	Canonical         bool
	IPFamilies        string // "" (automatic), IPFamiliesDual, IPFamiliesIPv4 or IPFamiliesIPv6
	Visibility        string // "" (public), VisibilityPublic or VisibilityNamespace
}

// Key returns "namespace/hostname".
func (s *Service) Key() string { return s.Namespace + "/" + s.Hostname }

// allowsStatus reports whether an endpoint with status st passes the service's health policy.
func (s *Service) allowsStatus(st Status) bool {
	return st == StatusHealthy || (s.LoadBalancing != nil && s.LoadBalancing.HealthPolicy == HealthAllowAll)
}
