// Package redirect is the only part of the proxy that talks to the kernel
// about network namespaces and socket options.
//
// It provides:
//
//   - [NetNS], an open handle to a network namespace, and [NetNS.Do] to run
//     code on an OS thread switched into it;
//   - [NetNS.Listen], [NetNS.Dial] and [NetNS.DialAddrPort], which create
//     sockets inside a namespace (the sockets stay there and may be used from
//     any goroutine);
//   - [Control] and [SocketOptions] for SO_MARK, IP_TRANSPARENT,
//     SO_REUSEPORT, TCP_NODELAY and keepalive, in the signature of
//     net.Dialer.Control and net.ListenConfig.Control;
//   - [OriginalDst], the pre-REDIRECT destination of an accepted connection.
//
// Sub-packages: inpod (the pod's iptables/ip-rule redirection), zds (the
// ztunnel discovery service protocol between the node agent and the proxy),
// nodeagent (the node agent's per-pod sequence) and redirecttest (helpers for
// privileged tests).
//
// # Concurrency
//
// A *NetNS may be used from several goroutines at once, except that Close
// must not race with other methods. Do runs fn on a separate OS thread
// locked into the namespace (discarded if it cannot be switched back): the
// caller's thread never changes namespace. The first TCP/UDP Dial on a NetNS starts its
// socket thread (one OS thread kept inside the namespace, which only runs
// socket(2), and keeps a few spare sockets so that most dials need not wake
// it); it exits, closing its spares, after a minute without dials, or on
// Close.
package redirect
