// Package catest provides a fake Istio CA: a gRPC istio.v1.auth.IstioCertificateService that signs
// certificate signing requests with a [certs.LocalCA], for tests and for the testbed's fake istiod.
//
// Like istiod it answers CreateCertificate with [leaf PEM, root PEM], and when the request's metadata
// carries "ImpersonatedIdentity" (a node proxy asking on behalf of a workload) it refuses with
// PermissionDenied unless the CSR's SPIFFE SAN equals that identity. Unlike istiod it does not
// authenticate the caller: the bearer token is recorded, not checked. Every call is recorded (see
// [Server.Requests]) and failures can be injected ([Server.FailNext]).
//
// # Concurrency
//
// A [Server]'s methods are safe for concurrent use, including while it serves calls.
package catest
