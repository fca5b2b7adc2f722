// Package certs provides SPIFFE workload identities, certificate issuance, a per-identity certificate
// cache with rotation, and the mutual-TLS configurations used by HBONE.
//
// An [Identity] is a SPIFFE ID of the Istio form spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
// An [Issuer] turns an identity into a [WorkloadCert]: a fresh ECDSA P-256 key, its certificate chain and
// the trust anchors that came with it. [LocalCA] is an in-process issuer that still goes through a real
// certificate signing request; the Istio CA client implements the same interface.
//
// [Manager] caches one certificate per identity, merges concurrent requests for the same identity into a
// single Issue call, renews each certificate at half its lifetime, and retries failures with exponential
// backoff while an unexpired certificate keeps being served. It keeps only identities in use: those
// held ([Manager.Hold]) and those fetched by Get within the last UnusedTTL (default an hour); any
// other is dropped rather than renewed.
//
// [ClientTLSConfig] and [ServerTLSConfig] build TLS 1.3 configurations matching ztunnel: ALPN "h2", no SNI,
// no session resumption, peer chains verified against the roots that came with our own certificate, and
// identity checks on the peer's SPIFFE ID (the client checks the exact peer identity, the server only the
// trust domain; authorization of the identity is left to the caller). Stricter than the reference, which
// accepts a leaf if any of its URI SANs fits: a peer leaf must be an X.509-SVID, with exactly one URI SAN
// and that a SPIFFE ID, so the identity checked in the handshake is the one [PeerIdentity] reports to
// authorization.
//
// # Concurrency
//
// Identity and WorkloadCert are immutable values, safe to share. LocalCA and Manager are safe for
// concurrent use. The tls.Configs returned here may be used by any number of connections at once.
//
// Apart from internal/controlplane (the gRPC plumbing shared with the xDS client), this package does
// not import the project's other packages.
package certs
