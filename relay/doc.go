// Package relay moves the bytes of proxied connections: one connection pair (downstream, the side
// that opened it, and upstream) per [Relay.Run], both directions at once, until both have ended.
// It is the only place bytes are copied, and, with redirect/, the only place raw system calls are
// made.
//
// # How a connection ends
//
// A direction that reads end of stream (TCP FIN, HTTP/2 END_STREAM) passes it on as a half-close,
// and the other direction keeps flowing; a connection ends cleanly when both directions have. Any
// other end of a direction (a TCP reset, a reset stream, a dead HBONE connection, an I/O error) or
// the end of the context aborts the relay: both sides are reset at once, TCP sockets with RST
// (SO_LINGER 0), tunnels with RST_STREAM(CONNECT_ERROR) (RFC 9113 §8.5), so an application never
// mistakes a cut transfer for a complete one. [Result] says how each side ended and why the relay
// failed.
//
// # Fast paths
//
// The relay picks, per direction, the cheapest copy its two ends allow:
//   - TCP to TCP: splice(2) through a pipe taken from a small shared pool only while bytes are in
//     flight, so no bytes enter user space and an idle connection holds no pipe;
//   - TCP to a tunnel: each read lands behind room for a frame header, and the tunnel sends the
//     frames from that buffer ([tunnel].WriteHeadroom);
//   - tunnel to TCP: the tunnel delivers its received chunks to the socket without a goroutine
//     waiting ([tunnel].WriteToAsync), its read loop writing small pieces itself ([sink]);
//   - anything else: a plain copy through a pooled buffer.
//
// Copies read a TCP socket only once it is readable, taking a buffer (or pipe) at that moment, and
// a TCP source silent for Config.IdleAfter parks in one epoll instance shared by the whole proxy and
// gives up its goroutine: an idle relayed connection holds no goroutine and no buffer.
package relay
