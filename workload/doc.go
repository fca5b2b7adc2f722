// Package workload is the node proxy's view of the mesh: an immutable model of workloads,
// services and L4 authorization policies, an index over that model (Snapshot), a Store that
// publishes whole snapshots atomically, and the local-config source (LOCAL_XDS_PATH /
// LOCAL_XDS) that builds snapshots from YAML.
//
// The model is proto-agnostic: XDSClient, a delta-ADS client for istiod's Address and
// Authorization resources (ztunnel-behavior.md §3.3), converts WDS resources into these types
// at the boundary and feeds the same Store through the same NewSnapshot constructor as the
// local config does. Package workload/xdstest is a fake ADS server for tests.
// Field meanings, defaults and enum spellings follow the reference ztunnel
// (ztunnel-behavior.md §3.1, §3.2, §5, §7.2).
//
// # Concurrency
//
// A Snapshot and everything reachable from it are immutable once NewSnapshot returns; any
// number of goroutines may read them without locking. A Store swaps snapshots with an atomic
// pointer, so Store.Load never blocks. Writers (Replace, ReplaceAll, SetTraffic) are
// serialized, so a workload source (FileSource.Run, XDSClient.Run) and a TrafficSource may
// share one Store: a workload push keeps the traffic policy the traffic source set. A
// FileSource publishes its workloads and its traffic policy (destinationRules,
// virtualServices) together; its Last and ReloadFailures methods are safe to call from any
// goroutine. XDSClient.Run owns the xDS stream; Synced, Demand and Stats may be called from
// any goroutine.
package workload
