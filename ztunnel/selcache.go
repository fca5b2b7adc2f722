package ztunnel

import (
	"sync"
	"sync/atomic"

	"github.com/ztunnel-go/ztunnel/workload"
)

// candidateSet is the outcome of endpoint selection before the random pick: the best-ranked
// endpoints with positive capacity and their cumulative capacities.
type candidateSet struct {
	ups   []upstream
	cum   []uint64 // cum[i] = capacity of ups[0..i]
	total uint64
}

// selKey identifies a candidate set within one snapshot: the source attributes that ranking
// reads, the service and the port.
type selKey struct {
	svc                                             *workload.Service
	port                                            uint16
	network, region, zone, subzone, node, clusterID string
}

// selectionCache memoizes candidate sets for one snapshot. A new snapshot gets a new cache.
type selectionCache struct {
	snap *workload.Snapshot

	mu   sync.RWMutex // guards sets
	sets map[selKey]*candidateSet
}

// maxCachedSets bounds the cache; past it the cache starts over (sources on one node share a
// handful of localities, so this is only reached by pathological inputs).
const maxCachedSets = 8192

// selectionCaches holds the cache of the most recent snapshot seen.
type selectionCaches struct {
	cur atomic.Pointer[selectionCache]
}

var selections selectionCaches

func (c *selectionCaches) get(snap *workload.Snapshot, src *workload.Workload, svc *workload.Service, port uint16) *candidateSet {
	sc := c.cur.Load()
	if sc == nil || sc.snap != snap {
		fresh := &selectionCache{snap: snap, sets: map[selKey]*candidateSet{}}
		if c.cur.CompareAndSwap(sc, fresh) {
			sc = fresh
		} else if sc = c.cur.Load(); sc.snap != snap {
			sc = fresh // another snapshot is current: compute without caching in it
		}
	}
	k := selKey{svc: svc, port: port, network: src.Network, region: src.Locality.Region, zone: src.Locality.Zone,
		subzone: src.Locality.Subzone, node: src.Node, clusterID: src.ClusterID}
	sc.mu.RLock()
	cs, ok := sc.sets[k]
	sc.mu.RUnlock()
	if ok {
		return cs
	}
	cs = buildCandidates(snap, src, svc, port)
	sc.mu.Lock()
	if len(sc.sets) >= maxCachedSets {
		sc.sets = map[selKey]*candidateSet{}
	}
	sc.sets[k] = cs
	sc.mu.Unlock()
	return cs
}

// buildCandidates applies the filters and ranking of selectEndpoint and keeps the best rank.
func buildCandidates(snap *workload.Snapshot, src *workload.Workload, svc *workload.Service, svcPort uint16) *candidateSet {
	cs := &candidateSet{}
	svcTarget, ok := svc.Ports[svcPort]
	if !ok {
		return cs
	}
	lb := svc.LoadBalancing
	ranked := lb != nil && (lb.Mode == workload.LBModeFailover || lb.Mode == workload.LBModeStrict)
	best := -1
	for _, ep := range svc.Endpoints {
		wl, rank, ok := candidate(snap, src, svc, ep, svcPort, svcTarget, lb, ranked)
		if !ok || rank < best {
			continue
		}
		if rank > best {
			best = rank
			cs.ups, cs.cum, cs.total = cs.ups[:0], cs.cum[:0], 0
		}
		// A zero-capacity endpoint still defines the best rank (the reference then finds no
		// weight and no endpoint), but can never be picked.
		if wl.Capacity == 0 {
			continue
		}
		cs.total += uint64(wl.Capacity)
		cs.ups = append(cs.ups, upstream{Workload: wl, Port: targetPort(ep, svcPort, svcTarget)})
		cs.cum = append(cs.cum, cs.total)
	}
	return cs
}
