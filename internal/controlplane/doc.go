// Package controlplane holds the gRPC plumbing shared by the clients of Istio's control plane
// (the CA client in certs and the delta-xDS client in workload): address parsing, server
// verification against configured roots, per-request bearer-token and cluster-id metadata,
// and the dial options (keepalive, connect timeout, backoff) of ztunnel-behavior.md §3.3.
//
// # Concurrency
//
// Dial may be called from any goroutine. The per-RPC credentials it installs are immutable and
// re-read the token file on every request, so rotated tokens are picked up without redialing.
package controlplane
