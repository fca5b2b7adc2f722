package workload

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"istio.io/istio/pkg/workloadapi"
)

// This file converts WDS resources (istio.workload.Address) into the model, field by field as
// ztunnel-behavior.md §3.1 describes: defaults (trust domain, service account, cluster id,
// capacity) are applied here, and anything the reference rejects is an error naming the field.
// Deviations from the reference, all stricter: ports above 65535 are rejected instead of being
// truncated, and a service key in a workload's services map needs both parts non-empty.

// convertAddress converts one Address resource. Exactly one of the results is non-nil when the
// error is nil. Equal strings and port maps are shared through in (nil: no sharing).
func convertAddress(a *workloadapi.Address, in *interner) (*Workload, *Service, error) {
	switch t := a.GetType().(type) {
	case *workloadapi.Address_Workload:
		w, err := convertWorkload(t.Workload, in)
		return w, nil, err
	case *workloadapi.Address_Service:
		s, err := convertService(t.Service, in)
		return nil, s, err
	}
	return nil, nil, errors.New("address has neither a workload nor a service")
}

// convertWorkload converts a WDS Workload (reference: TryFrom<XdsWorkload> in state/workload.rs).
func convertWorkload(x *workloadapi.Workload, in *interner) (*Workload, error) {
	if x == nil {
		return nil, errors.New("workload is empty")
	}
	if x.GetUid() == "" {
		return nil, errors.New("workload has no uid")
	}
	w := &Workload{
		UID:                   x.GetUid(),
		Name:                  x.GetName(),
		Namespace:             in.str(x.GetNamespace()),
		TrustDomain:           in.str(cmp.Or(x.GetTrustDomain(), DefaultTrustDomain)),
		ServiceAccount:        in.str(cmp.Or(x.GetServiceAccount(), DefaultServiceAccount)),
		Network:               in.str(x.GetNetwork()),
		Node:                  in.str(x.GetNode()),
		ClusterID:             in.str(cmp.Or(x.GetClusterId(), DefaultClusterID)),
		Hostname:              x.GetHostname(),
		WorkloadName:          in.str(x.GetWorkloadName()),
		WorkloadType:          in.str(workloadType(x.GetWorkloadType())),
		CanonicalName:         in.str(x.GetCanonicalName()),
		CanonicalRevision:     in.str(x.GetCanonicalRevision()),
		NativeTunnel:          x.GetNativeTunnel(),
		AuthorizationPolicies: x.GetAuthorizationPolicies(),
		Capacity:              1,
	}
	if c := x.GetCapacity(); c != nil {
		w.Capacity = c.GetValue()
	}
	if l := x.GetLocality(); l != nil {
		w.Locality = Locality{Region: in.str(l.GetRegion()), Zone: in.str(l.GetZone()), Subzone: in.str(l.GetSubzone())}
	}
	var err error
	if len(x.GetAddresses()) > 0 {
		w.IPs = make([]netip.Addr, len(x.GetAddresses()))
		for i, b := range x.GetAddresses() {
			if w.IPs[i], err = ipFromBytes(b); err != nil {
				return nil, fmt.Errorf("addresses[%d]: %w", i, err)
			}
		}
	}
	switch p := x.GetTunnelProtocol(); p {
	case workloadapi.TunnelProtocol_NONE:
		w.Protocol = ProtocolTCP
	case workloadapi.TunnelProtocol_HBONE:
		w.Protocol = ProtocolHBONE
	case workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS:
		return nil, errors.New("tunnel protocol LEGACY_ISTIO_MTLS is not supported")
	default:
		return nil, fmt.Errorf("unknown tunnel protocol %d", p)
	}
	switch st := x.GetStatus(); st {
	case workloadapi.WorkloadStatus_HEALTHY:
		w.Status = StatusHealthy
	case workloadapi.WorkloadStatus_UNHEALTHY:
		w.Status = StatusUnhealthy
	default:
		return nil, fmt.Errorf("unknown workload status %d", st)
	}
	switch m := x.GetNetworkMode(); m {
	case workloadapi.NetworkMode_STANDARD:
		w.NetworkMode = NetworkModeStandard
	case workloadapi.NetworkMode_HOST_NETWORK:
		w.NetworkMode = NetworkModeHostNetwork
	default:
		return nil, fmt.Errorf("unknown network mode %d", m)
	}
	if g := x.GetWaypoint(); g != nil {
		if w.Waypoint, err = convertGateway(g); err != nil {
			return nil, fmt.Errorf("waypoint: %w", err)
		}
	}
	if g := x.GetNetworkGateway(); g != nil {
		if w.NetworkGateway, err = convertGateway(g); err != nil {
			return nil, fmt.Errorf("network gateway: %w", err)
		}
	}
	if at := x.GetApplicationTunnel(); at != nil {
		if w.ApplicationTunnel, err = convertApplicationTunnel(at); err != nil {
			return nil, fmt.Errorf("application tunnel: %w", err)
		}
	}
	if svcs := x.GetServices(); len(svcs) > 0 {
		w.Services = make(map[string]map[uint16]uint16, len(svcs))
		for key, pl := range svcs {
			if _, err := ParseNamespacedHostname(key); err != nil {
				return nil, fmt.Errorf("services: %w", err)
			}
			ports, err := convertPorts(pl.GetPorts())
			if err != nil {
				return nil, fmt.Errorf("services[%q]: %w", key, err)
			}
			w.Services[key] = ports
		}
		w.Services = in.serviceMap(w.Services)
	}
	w.Name = in.nameOf(w.UID, w.Name)
	return w, nil
}

// workloadType spells a WorkloadType like the reference: the enum name in lower case. Unknown
// values read as the proto default, "deployment" (the reference's generated accessor does so).
func workloadType(t workloadapi.WorkloadType) string {
	name, ok := workloadapi.WorkloadType_name[int32(t)]
	if !ok {
		name = workloadapi.WorkloadType_DEPLOYMENT.String()
	}
	return strings.ToLower(name)
}

// convertService converts a WDS Service (reference: TryFrom<&XdsService> in state/service.rs).
// Its endpoints are left empty: NewSnapshot joins them from the workloads.
func convertService(x *workloadapi.Service, in *interner) (*Service, error) {
	if x == nil {
		return nil, errors.New("service is empty")
	}
	if x.GetNamespace() == "" || x.GetHostname() == "" {
		return nil, errors.New("service namespace and hostname must be set")
	}
	s := &Service{
		Name:            x.GetName(),
		Namespace:       in.str(x.GetNamespace()),
		Hostname:        x.GetHostname(),
		SubjectAltNames: x.GetSubjectAltNames(),
		Canonical:       x.GetCanonical(),
	}
	for i, a := range x.GetAddresses() {
		ip, err := ipFromBytes(a.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("addresses[%d]: %w", i, err)
		}
		if a.Length == nil || int(a.GetLength()) == ip.BitLen() {
			s.VIPs = append(s.VIPs, NetworkAddress{Network: in.str(a.GetNetwork()), Addr: ip})
			continue
		}
		if a.GetLength() > uint32(ip.BitLen()) {
			return nil, fmt.Errorf("addresses[%d]: invalid CIDR %s/%d", i, ip, a.GetLength())
		}
		s.CIDRVIPs = append(s.CIDRVIPs, NetworkPrefix{Network: a.GetNetwork(), Prefix: netip.PrefixFrom(ip, int(a.GetLength()))})
	}
	var err error
	if s.Ports, err = convertPorts(x.GetPorts()); err != nil {
		return nil, fmt.Errorf("ports: %w", err)
	}
	s.Ports = in.portMap(s.Ports)
	if g := x.GetWaypoint(); g != nil {
		if s.Waypoint, err = convertGateway(g); err != nil {
			return nil, fmt.Errorf("waypoint: %w", err)
		}
	}
	for i, ww := range x.GetWeightedWaypoints() {
		if ww.GetDestination() == nil {
			return nil, fmt.Errorf("weighted waypoints[%d]: no destination", i)
		}
		g, err := convertGateway(ww.GetDestination())
		if err != nil {
			return nil, fmt.Errorf("weighted waypoints[%d]: %w", i, err)
		}
		s.WeightedWaypoints = append(s.WeightedWaypoints, WeightedWaypoint{Destination: *g, Weight: ww.GetWeight()})
	}
	if lb := x.GetLoadBalancing(); lb != nil {
		if s.LoadBalancing, err = convertLoadBalancing(lb); err != nil {
			return nil, fmt.Errorf("load balancing: %w", err)
		}
	}
	switch f := x.GetIpFamilies(); f {
	case workloadapi.IPFamilies_AUTOMATIC:
	case workloadapi.IPFamilies_IPV4_ONLY:
		s.IPFamilies = IPFamiliesIPv4
	case workloadapi.IPFamilies_IPV6_ONLY:
		s.IPFamilies = IPFamiliesIPv6
	case workloadapi.IPFamilies_DUAL:
		s.IPFamilies = IPFamiliesDual
	default:
		return nil, fmt.Errorf("unknown IP families %d", f)
	}
	// Unknown visibilities read as PUBLIC: the reference fails open here rather than dropping
	// the service.
	if x.GetVisibility() == workloadapi.Service_NAMESPACE {
		s.Visibility = VisibilityNamespace
	}
	return s, nil
}

func convertLoadBalancing(x *workloadapi.LoadBalancing) (*LoadBalancing, error) {
	lb := &LoadBalancing{}
	for i, sc := range x.GetRoutingPreference() {
		if sc <= workloadapi.LoadBalancing_UNSPECIFIED_SCOPE || sc > workloadapi.LoadBalancing_NETWORK {
			return nil, fmt.Errorf("routing preference[%d]: invalid scope %d", i, sc)
		}
		lb.RoutingPreference = append(lb.RoutingPreference, Scope(sc)) // same numbering
	}
	switch m := x.GetMode(); m {
	case workloadapi.LoadBalancing_UNSPECIFIED_MODE:
		lb.Mode = LBModeStandard
	case workloadapi.LoadBalancing_STRICT:
		lb.Mode = LBModeStrict
	case workloadapi.LoadBalancing_FAILOVER:
		lb.Mode = LBModeFailover
	case workloadapi.LoadBalancing_PASSTHROUGH:
		lb.Mode = LBModePassthrough
	default:
		return nil, fmt.Errorf("unknown mode %d", m)
	}
	switch h := x.GetHealthPolicy(); h {
	case workloadapi.LoadBalancing_ONLY_HEALTHY:
		lb.HealthPolicy = HealthOnlyHealthy
	case workloadapi.LoadBalancing_ALLOW_ALL:
		lb.HealthPolicy = HealthAllowAll
	default:
		return nil, fmt.Errorf("unknown health policy %d", h)
	}
	return lb, nil
}

// convertGateway converts a waypoint or network gateway; its destination oneof must be set.
func convertGateway(x *workloadapi.GatewayAddress) (*GatewayAddress, error) {
	port, err := port16(x.GetHboneMtlsPort())
	if err != nil {
		return nil, fmt.Errorf("hbone mtls port: %w", err)
	}
	g := &GatewayAddress{HBONEMTLSPort: port}
	switch d := x.GetDestination().(type) {
	case *workloadapi.GatewayAddress_Address:
		ip, err := ipFromBytes(d.Address.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		g.Address = &NetworkAddress{Network: d.Address.GetNetwork(), Addr: ip}
	case *workloadapi.GatewayAddress_Hostname:
		g.Hostname = &NamespacedHostname{Namespace: d.Hostname.GetNamespace(), Hostname: d.Hostname.GetHostname()}
	default:
		return nil, errors.New("no destination (address or hostname)")
	}
	return g, nil
}

func convertApplicationTunnel(x *workloadapi.ApplicationTunnel) (*ApplicationTunnel, error) {
	at := &ApplicationTunnel{}
	switch p := x.GetProtocol(); p {
	case workloadapi.ApplicationTunnel_NONE, workloadapi.ApplicationTunnel_PROXY:
		at.Protocol = p.String()
	default:
		return nil, fmt.Errorf("unknown protocol %d", p)
	}
	var err error
	if at.Port, err = port16(x.GetPort()); err != nil {
		return nil, fmt.Errorf("port: %w", err)
	}
	return at, nil
}

// convertPorts turns a port list into service port -> target port (0 = named target port).
// The result is never nil. A repeated service port keeps its last target.
func convertPorts(ports []*workloadapi.Port) (map[uint16]uint16, error) {
	out := make(map[uint16]uint16, len(ports))
	for i, p := range ports {
		sp, err := port16(p.GetServicePort())
		if err != nil {
			return nil, fmt.Errorf("[%d] service port: %w", i, err)
		}
		tp, err := port16(p.GetTargetPort())
		if err != nil {
			return nil, fmt.Errorf("[%d] target port: %w", i, err)
		}
		out[sp] = tp
	}
	return out, nil
}

// ipFromBytes parses a raw 4- or 16-byte address; IPv4-mapped IPv6 addresses are unmapped.
func ipFromBytes(b []byte) (netip.Addr, error) {
	ip, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}, fmt.Errorf("IP address is %d bytes, want 4 or 16", len(b))
	}
	return ip.Unmap(), nil
}

func port16(p uint32) (uint16, error) {
	if p > 65535 {
		return 0, fmt.Errorf("%d is out of range", p)
	}
	return uint16(p), nil
}
