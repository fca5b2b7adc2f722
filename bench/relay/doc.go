// Package relay is a minimal mTLS TCP relay written for the benchmark: one TLS 1.3 connection per
// client connection, large copy buffers, no HTTP/2 and no multiplexing. A pair of relays (one
// accepting plain TCP and dialing TLS, one accepting TLS and dialing plain TCP) carries traffic over
// the same two hops as the mesh, which makes it the practical limit for any Go TLS tunnel there.
//
// Certificates come from PEM files (see Files), so the relays can run as their own processes and
// their CPU time can be read from /proc.
//
// # Concurrency
//
// Run serves each connection on its own pair of goroutines; everything they share is read-only.
package relay
