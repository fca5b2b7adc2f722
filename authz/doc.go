// Package authz decides whether an inbound L4 connection is allowed, applying Istio
// AuthorizationPolicy semantics exactly as the reference ztunnel does (ztunnel-behavior.md §8,
// istio/ztunnel src/rbac.rs and DemandProxyState::assert_rbac).
//
// The caller passes the destination workload's policy set (workload.Snapshot.PoliciesFor)
// and what it knows about the connection (Conn). Evaluate applies the decision rules:
//
//  1. dry-run policies never decide; those that would have flipped the outcome are reported
//     in Decision.DryRun for the access log;
//  2. any matching DENY policy denies ("explicitly denied by: ns/name");
//  3. with no ALLOW policy the connection is allowed;
//  4. any matching ALLOW policy allows;
//  5. otherwise the connection is denied ("allow policies exist, but none allowed").
//
// Matches reports whether a single policy matches; its field semantics (CIDRs, ports,
// service accounts, principals, namespaces, and their behaviour for plaintext peers) are
// documented on it.
//
// The package is enforcement only: it does not log, keep metrics, or re-evaluate tracked
// connections when policies change. Callers do that with the Decision.
//
// # Concurrency
//
// Evaluate and Matches are pure functions of their arguments and safe for concurrent use,
// provided the policies are not mutated while being evaluated (policies in a
// workload.Snapshot are immutable). The only shared state is an internal cache of decision
// strings, guarded by its own mutex.
package authz
