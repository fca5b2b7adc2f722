package ztunnel

import (
	"math/rand/v2"
	"sort"

	"github.com/ztunnel-go/ztunnel/workload"
)

// upstream is the result of endpoint selection: the workload to connect to and the port on it.
type upstream struct {
	Workload *workload.Workload
	Port     uint16
}

// randSource returns a uniform value in [0, n). n is always > 0.
type randSource func(n uint64) uint64

func defaultRand(n uint64) uint64 { return rand.Uint64N(n) }

// selectEndpoint picks the endpoint of svc for a new connection from src to service port
// svcPort, as the reference ztunnel's load_balance does (ztunnel-behavior.md §4):
//
//  1. the port must exist on the service;
//  2. endpoints whose workload is unknown, or that have no address and cannot be reached
//     through a network gateway, or that lack a mapping for a named target port, are skipped;
//  3. with a FAILOVER or STRICT load balancer each endpoint gets a rank: the number of
//     routing-preference scopes, walked in order, that match the source before the first
//     mismatch. When NETWORK comes first a network mismatch does not end the walk and a
//     network match adds len(preferences)-1, so every same-network endpoint outranks every
//     other-network one. STRICT drops endpoints whose un-boosted rank is below
//     len(preferences). Only the endpoints of the highest rank stay;
//  4. one of them is picked at random, weighted by workload capacity.
//
// It returns false when nothing qualifies. The qualifying endpoints of a (service, port,
// source locality) depend only on the snapshot, which is immutable, so they are computed once
// per snapshot (candidateSet) and each pick is a binary search over cumulative capacities:
// no allocation and O(log n) per connection.
func selectEndpoint(snap *workload.Snapshot, src *workload.Workload, svc *workload.Service, svcPort uint16, rnd randSource) (upstream, bool) {
	cs := selections.get(snap, src, svc, svcPort)
	if cs.total == 0 {
		return upstream{}, false
	}
	r := rnd(cs.total)
	i := sort.Search(len(cs.cum), func(i int) bool { return cs.cum[i] > r })
	return cs.ups[i], true
}

// selectEndpointAvoiding is selectEndpoint among the endpoints that avoid does not reject (picked
// again, weighted by capacity, only among those); if avoid rejects them all it is selectEndpoint. It
// is for the rare case where the first pick was rejected: it walks the candidates once.
func selectEndpointAvoiding(snap *workload.Snapshot, src *workload.Workload, svc *workload.Service, svcPort uint16,
	rnd randSource, avoid func(*workload.Workload) bool) (upstream, bool) {
	cs := selections.get(snap, src, svc, svcPort)
	var total uint64
	for i, up := range cs.ups {
		if !avoid(up.Workload) {
			total += weightAt(cs, i)
		}
	}
	if total == 0 {
		return selectEndpoint(snap, src, svc, svcPort, rnd)
	}
	r := rnd(total)
	for i, up := range cs.ups {
		if avoid(up.Workload) {
			continue
		}
		w := weightAt(cs, i)
		if r < w {
			return up, true
		}
		r -= w
	}
	return upstream{}, false // not reached: r < total
}

// weightAt is the capacity of cs.ups[i].
func weightAt(cs *candidateSet, i int) uint64 {
	if i == 0 {
		return cs.cum[0]
	}
	return cs.cum[i] - cs.cum[i-1]
}

// candidate applies the filters of step 2 and computes the rank of step 3 for one endpoint.
func candidate(snap *workload.Snapshot, src *workload.Workload, svc *workload.Service, ep *workload.Endpoint,
	svcPort, svcTarget uint16, lb *workload.LoadBalancing, ranked bool) (*workload.Workload, int, bool) {
	wl := snap.WorkloadByUID(ep.WorkloadUID)
	if wl == nil {
		return nil, 0, false
	}
	if len(wl.IPs) == 0 && wl.Hostname == "" {
		// Only reachable through the gateway of another network. WDS sends a gateway even for
		// same-network workloads; it must never be used for those.
		if wl.Network == src.Network || wl.NetworkGateway == nil {
			return nil, 0, false
		}
	}
	if svcTarget == 0 {
		if _, ok := ep.Port[svcPort]; !ok {
			return nil, 0, false // named target port that this endpoint does not define
		}
	}
	if !ranked {
		return wl, 0, true
	}
	rank, ok := rankEndpoint(src, wl, lb)
	return wl, rank, ok
}

// rankEndpoint returns the rank of wl as seen from src, and false if STRICT excludes it.
func rankEndpoint(src, wl *workload.Workload, lb *workload.LoadBalancing) (int, bool) {
	prefs := lb.RoutingPreference
	networkFirst := len(prefs) > 0 && prefs[0] == workload.ScopeNetwork
	rank, bonus := 0, 0
	for _, scope := range prefs {
		var match bool
		switch scope {
		case workload.ScopeRegion:
			match = src.Locality.Region == wl.Locality.Region
		case workload.ScopeZone:
			match = src.Locality.Zone == wl.Locality.Zone
		case workload.ScopeSubzone:
			match = src.Locality.Subzone == wl.Locality.Subzone
		case workload.ScopeNode:
			match = src.Node == wl.Node
		case workload.ScopeCluster:
			match = src.ClusterID == wl.ClusterID
		case workload.ScopeNetwork:
			match = src.Network == wl.Network
			if networkFirst {
				if !match {
					continue // a network mismatch does not end the walk
				}
				bonus = len(prefs) - 1
			}
		}
		if !match {
			break
		}
		rank++
	}
	if lb.Mode == workload.LBModeStrict && rank != len(prefs) {
		return 0, false
	}
	return rank + bonus, true
}

// targetPort is the port on the chosen endpoint: its own mapping for the service port if it
// has one, else the service's target port.
func targetPort(ep *workload.Endpoint, svcPort, svcTarget uint16) uint16 {
	if p, ok := ep.Port[svcPort]; ok && p != 0 {
		return p
	}
	return svcTarget
}
