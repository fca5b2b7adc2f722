package workload

import (
	"fmt"
	"slices"
	"time"
)

// Traffic policy: what Istio's DestinationRule and VirtualService say about the connections to a
// service, compiled for the node proxy (issue 12; the reference ztunnel reads neither). A
// TrafficIndex is immutable; a Snapshot carries one (WithTraffic), so that a push of workloads and a
// change of traffic policy each make a new consistent snapshot.

// TrafficIndex holds the compiled DestinationRules and VirtualServices by host.
type TrafficIndex struct {
	dests  map[string]*DestinationPolicy // host → the rule that applies to it
	routes map[string]*RoutePolicy       // host → the VirtualService routing it
	// The policies in key order, for dumps.
	destList  []*DestinationPolicy
	routeList []*RoutePolicy
}

// DestinationPolicy is one DestinationRule, compiled.
type DestinationPolicy struct {
	Name, Namespace string // of the DestinationRule
	Host            string // the fully qualified service hostname it applies to
	Policy          TrafficSettings
	Subsets         []*Subset
	// Source is the rule as written (istio.io/api JSON), for the config dump; may be nil.
	Source any
}

// Key is "namespace/name" of the rule.
func (d *DestinationPolicy) Key() string { return d.Namespace + "/" + d.Name }

// Subset returns the named subset, or nil.
func (d *DestinationPolicy) Subset(name string) *Subset {
	for _, s := range d.Subsets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Subset is a named group of a service's endpoints, by labels, with its own settings.
type Subset struct {
	Name   string
	Labels map[string]string // every one must match (Workload.Label)
	// Policy is the subset's trafficPolicy with the rule's filled in where the subset sets nothing
	// (each of Outlier and Locality is taken whole from the subset if it sets it).
	Policy TrafficSettings
}

// Matches reports whether w carries every label of the subset.
func (s *Subset) Matches(w *Workload) bool {
	for k, v := range s.Labels {
		if got, ok := w.Label(k); !ok || got != v {
			return false
		}
	}
	return true
}

// TrafficSettings are the parts of a trafficPolicy the node proxy applies.
type TrafficSettings struct {
	Outlier  *OutlierPolicy  // nil: no outlier detection
	Locality *LocalityPolicy // nil: the rule says nothing (locality failover is on, as the mesh default)
}

// OutlierPolicy is outlierDetection, with Istio's and Envoy's defaults applied
// (multinetwork-and-policy.md §3.1–3.2).
type OutlierPolicy struct {
	// Consecutive5xx ejects a host after that many failures in a row (connect refused or timed out,
	// CONNECT answered 5xx or reset); 0 is off. Absent in the rule: 5.
	Consecutive5xx uint32
	// ConsecutiveGateway counts only gateway errors (502, 503, 504 and connect failures); 0 is off.
	ConsecutiveGateway uint32
	// SplitLocalOrigin counts connect failures (local origin) apart, against ConsecutiveLocalOrigin
	// (0 is off), and not against the two above.
	SplitLocalOrigin       bool
	ConsecutiveLocalOrigin uint32
	// Interval is how often ejections are re-evaluated (10 s); BaseEjectionTime how long the first
	// ejection lasts (30 s), multiplied by the times ejected, at most MaxEjectionTime (the larger of
	// 300 s and BaseEjectionTime unless set).
	Interval, BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent caps the share of hosts ejected at once (10 if not set). Unlike Envoy,
	// at least one host may always be ejected (Envoy's "always_eject_one_host"): with the default
	// and fewer than 10 hosts Envoy would never eject.
	MaxEjectionPercent uint32
	// MinHealthPercent is the panic threshold (Istio's default 0: off): below it a priority's
	// ejected hosts are used again.
	MinHealthPercent uint32
}

// LocalityPolicy is loadBalancer.localityLbSetting.
type LocalityPolicy struct {
	Enabled          bool // false: no locality-aware balancing at all ("enabled: false")
	Distribute       []LocalityDistribution
	Failover         []LocalityFailover
	FailoverPriority []string // labels, or "label=value", in order of preference
}

// LocalityDistribution is one distribute entry: from the source locality From (region/zone/subzone,
// "*" segments and missing trailing segments match anything), To's localities get the weights.
type LocalityDistribution struct {
	From string
	To   []LocalityWeight // sorted by locality
}

// LocalityWeight is a weight for the localities Locality matches (same matching as From).
type LocalityWeight struct {
	Locality string
	Weight   uint32
}

// LocalityFailover is one failover entry: traffic of region From fails over to region To.
type LocalityFailover struct{ From, To string }

// RoutePolicy is one VirtualService's TCP routes, compiled.
type RoutePolicy struct {
	Name, Namespace string
	Hosts           []string // fully qualified
	TCP             []*TCPRoute
	Source          any // as written, for the config dump; may be nil
}

// Key is "namespace/name" of the VirtualService.
func (r *RoutePolicy) Key() string { return r.Namespace + "/" + r.Name }

// TCPRoute is one tcp route: when a connection matches, one destination is chosen by weight.
type TCPRoute struct {
	Ports        []uint16 // destination ports it matches; empty: any
	Destinations []RouteDestination
}

// Matches reports whether the route applies to a connection to port.
func (r *TCPRoute) Matches(port uint16) bool {
	return len(r.Ports) == 0 || slices.Contains(r.Ports, port)
}

// RouteDestination is a weighted destination of a route: a host (fully qualified), optionally a
// subset of its DestinationRule and a port (0: the connection's).
type RouteDestination struct {
	Host   string
	Subset string
	Port   uint16
	Weight uint32 // the weights of a route sum to 100 (a single destination has 100)
}

// NewTrafficIndex indexes compiled policies. At most one DestinationRule and one VirtualService may
// name a host (the reference's choice among several is by creation time, which a compiled policy
// does not have: two are an error naming both). A route to a subset must name a subset of the
// destination host's rule.
func NewTrafficIndex(dests []*DestinationPolicy, routes []*RoutePolicy) (*TrafficIndex, error) {
	ti := &TrafficIndex{dests: map[string]*DestinationPolicy{}, routes: map[string]*RoutePolicy{}}
	for _, d := range dests {
		if d == nil || d.Host == "" {
			return nil, fmt.Errorf("traffic policy: destination rule without host")
		}
		if prev := ti.dests[d.Host]; prev != nil {
			return nil, fmt.Errorf("traffic policy: destination rules %s and %s both name host %q", prev.Key(), d.Key(), d.Host)
		}
		ti.dests[d.Host] = d
		ti.destList = append(ti.destList, d)
	}
	for _, r := range routes {
		if r == nil {
			return nil, fmt.Errorf("traffic policy: nil virtual service")
		}
		for _, h := range r.Hosts {
			if prev := ti.routes[h]; prev != nil {
				return nil, fmt.Errorf("traffic policy: virtual services %s and %s both route host %q", prev.Key(), r.Key(), h)
			}
			ti.routes[h] = r
		}
		for i, tr := range r.TCP {
			for j, d := range tr.Destinations {
				if d.Subset == "" {
					continue
				}
				dp := ti.dests[d.Host]
				if dp == nil || dp.Subset(d.Subset) == nil {
					return nil, fmt.Errorf("traffic policy: virtual service %s: tcp[%d].route[%d]: subset %q of host %q is not defined by a destination rule",
						r.Key(), i, j, d.Subset, d.Host)
				}
			}
		}
		ti.routeList = append(ti.routeList, r)
	}
	slices.SortFunc(ti.destList, func(a, b *DestinationPolicy) int { return compareStrings(a.Key(), b.Key()) })
	slices.SortFunc(ti.routeList, func(a, b *RoutePolicy) int { return compareStrings(a.Key(), b.Key()) })
	return ti, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Destination returns the rule for host, or nil. A nil index has none.
func (ti *TrafficIndex) Destination(host string) *DestinationPolicy {
	if ti == nil {
		return nil
	}
	return ti.dests[host]
}

// Route returns the VirtualService routing host, or nil.
func (ti *TrafficIndex) Route(host string) *RoutePolicy {
	if ti == nil {
		return nil
	}
	return ti.routes[host]
}

// Destinations returns the rules in namespace/name order (shared: do not modify).
func (ti *TrafficIndex) Destinations() []*DestinationPolicy {
	if ti == nil {
		return nil
	}
	return ti.destList
}

// Routes returns the VirtualServices in namespace/name order (shared: do not modify).
func (ti *TrafficIndex) Routes() []*RoutePolicy {
	if ti == nil {
		return nil
	}
	return ti.routeList
}

// Traffic returns the snapshot's traffic policy index; nil if there is none.
func (s *Snapshot) Traffic() *TrafficIndex { return s.traffic }

// WithTraffic returns a snapshot with the same workloads, services and authorization policies as s
// and the traffic policies of ti (nil: none). s is unchanged.
func (s *Snapshot) WithTraffic(ti *TrafficIndex) *Snapshot {
	c := *s
	c.traffic = ti
	return &c
}

// Label returns the value w has for a Kubernetes label key, for subset selectors and
// failoverPriority. Workload discovery does not carry pod labels, so besides the labels a local
// config may list (Labels), a few well-known keys map to what it does carry: "version" and
// "app.kubernetes.io/version" to the canonical revision, "app" and "app.kubernetes.io/name" to the
// canonical name, the topology labels to the locality, cluster, network and node. Any other key
// matches only an explicit label.
func (w *Workload) Label(key string) (string, bool) {
	if v, ok := w.Labels[key]; ok {
		return v, true
	}
	var v string
	switch key {
	case "version", "app.kubernetes.io/version", "service.istio.io/canonical-revision":
		v = w.CanonicalRevision
	case "app", "app.kubernetes.io/name", "service.istio.io/canonical-name":
		v = w.CanonicalName
	case "topology.kubernetes.io/region":
		v = w.Locality.Region
	case "topology.kubernetes.io/zone":
		v = w.Locality.Zone
	case "topology.istio.io/subzone":
		v = w.Locality.Subzone
	case "topology.istio.io/cluster":
		v = w.ClusterID
	case "topology.istio.io/network":
		return w.Network, true // "" is the default network, a real value
	case "kubernetes.io/hostname":
		v = w.Node
	default:
		return "", false
	}
	return v, v != ""
}

// KnownLabel reports whether key is one Workload.Label can answer without explicit labels.
func KnownLabel(key string) bool {
	var w Workload
	w.Network = "x"
	w.CanonicalRevision, w.CanonicalName, w.ClusterID, w.Node = "x", "x", "x", "x"
	w.Locality = Locality{Region: "x", Zone: "x", Subzone: "x"}
	_, ok := w.Label(key)
	return ok
}
