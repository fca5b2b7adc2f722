package workload

import "context"

// TrafficSink receives the traffic policy a TrafficSource compiled. *Store implements it:
// SetTraffic republishes the current snapshot with the new index, and every later workload push
// (Store.Replace of a snapshot without traffic policy) keeps it, so each new snapshot carries the
// latest TrafficIndex.
type TrafficSink interface {
	// SetTraffic makes ti the traffic policy in force (nil: none). It must not block for long:
	// sources call it from their event loops.
	SetTraffic(ti *TrafficIndex)
}

// TrafficSource is a source of traffic policy: it follows DestinationRules and VirtualServices
// kept somewhere and hands each new compiled set to a TrafficSink, until ctx is done; Run then
// returns nil (an error means it could not run at all). There are two:
//
//   - The local config file (FileSource): its destinationRules and virtualServices keys are
//     compiled with its workloads, and both are published in one snapshot (Store.ReplaceAll),
//     so that a file's subsets and the labels of its workloads always agree. A bad edit keeps
//     the last good config, policies included.
//   - In Kubernetes, istio.io/client-go informers for networking.istio.io/v1 DestinationRule and
//     VirtualService (the next issue), described below.
//
// The informer source's event handlers (add, update and delete of either kind), once both
// informers have synced, take every object from the listers, ordered by creation time (Istio's
// choice among rules for one host is the oldest), wrap each object o as
// NamedDestinationRule{Name: o.Name, Namespace: o.Namespace, Spec: &o.Spec} (the client-go types
// embed the istio.io/api specs), and call
//
//	dests, routes, err := CompileTraffic(drs, vss, TrafficOptions{DomainSuffix: suffix})
//	ti, _ := NewTrafficIndex(dests, routes) // never fails on CompileTraffic's output
//	sink.SetTraffic(ti)
//
// err names each refused object; the rest still apply, so one bad object does not stop the
// others: log and count err (rate-limited), as FileSource does its bad reloads. A burst of
// events may be coalesced into one compile, since the index is rebuilt whole each time.
type TrafficSource interface {
	Run(ctx context.Context) error
}

var _ TrafficSource = (*FileSource)(nil)
