// Package inpod computes and applies the redirection rules istio-cni installs
// inside each ambient pod's network namespace ("in-pod" mode).
//
// [Rules] is a pure function from [Config] to a [Ruleset]: iptables-restore
// text for IPv4 and IPv6 plus the policy routing entries. [Apply] and
// [Remove] are the thin privileged layer that installs it in a namespace.
//
// The rules (matching istio-cni cni/pkg/iptables): in mangle, packets
// carrying the proxy mark 0x539/0xfff set connmark 0x111/0xfff, restored on
// output so that replies of the proxy's spoofed-source connections are
// routed by `ip rule fwmark 0x111/0xfff lookup 100` to `local default dev
// lo`. In nat, PREROUTING sends TCP (except to localhost, to the HBONE port
// 15008, or from the proxy) to 15006; OUTPUT sends TCP (except to
// localhost, over lo, to kubelet probe addresses, or from the proxy) to
// 15001. DNS capture to 15053 is optional.
//
// IPv6 is never left open, since every pod with IPv6 has at least a
// link-local (fe80::) address that nothing else guards. By default
// ([IPv6Capture]) it is captured like IPv4, except that the application's
// connections to link-local addresses, which cannot be redirected (their
// socket is bound to the interface), are reset in the filter table. For a
// proxy that does not listen on IPv6, [IPv6Refuse] resets every IPv6 TCP
// connection but the proxy's own and loopback.
package inpod
