// Package xdstest is an in-process fake of istiod's delta ADS endpoint for ztunnel's workload
// discovery types (istio.workload.Address, istio.security.Authorization). Tests set and delete
// resources, and every stream subscribed to them receives a push; the server records each
// request and the stream metadata so that tests can assert on ACKs, NACKs, subscriptions,
// initial_resource_versions and headers. It speaks plaintext gRPC.
//
// Subscriptions follow the delta xDS rules istiod applies: a first request with no names, or a
// "*" subscription, is a wildcard; otherwise (on-demand) a stream receives only the names it
// subscribed, where a name may also be an alias of an Address resource ("network/ip" of a
// workload or a service VIP) and is answered with a removal when nothing matches. On a new
// stream, resources whose version equals the client's initial_resource_versions entry are not
// sent again, and held names the server no longer has are sent as removals.
//
// # Concurrency
//
// All methods are safe for concurrent use. One mutex guards the resources, the streams'
// subscriptions and queues, and the recorded requests; each stream sends from its own handler
// goroutine, so a slow client never blocks Set.
package xdstest
