// Package hbone implements HBONE: TCP tunnels carried as HTTP/2 CONNECT streams over mutual TLS 1.3
// (ALPN "h2"), usually to port 15008.
//
// The package has its own small HTTP/2 connection engine built on x/net's [http2.Framer] and hpack,
// specialised for CONNECT tunnels. Unlike x/net's Transport and Server it keeps the two directions of a
// stream independent: after one side sends END_STREAM ([Stream.CloseWrite]) the other side keeps sending
// until it half-closes too, the way a TCP connection behaves (RFC 9113 §8.5, §5.1).
//
// A [Pool] is the client side: it keeps one or more connections per [Key] and opens one CONNECT stream per
// proxied TCP connection ([Pool.Connect]). A [Server] is the inbound side: it accepts TLS connections, reads
// CONNECT requests and passes each to a [Handler], which answers it with [Request.Accept] or
// [Request.Reject].
//
// The package takes TLS configurations and dial functions from its caller; it knows nothing about
// certificates, identities or workloads.
//
// # Concurrency
//
// A [Stream] is safe for one concurrent reader and one concurrent writer; Close, CloseWrite and the
// deadline setters may be called from any goroutine. [Pool] and [Server] are safe for concurrent use.
//
// Each connection runs a read loop (which owns the frame reader and all protocol decisions), a writer
// goroutine (which owns the frame writer, the HPACK encoder and the buffered socket writer) and a
// keepalive goroutine. They share state through one mutex per connection, conn.mu. The read loop reads
// DATA payloads straight into the receiving stream's buffer, and while a [Stream.WriteTo] into a
// [Sink] waits with nothing buffered, the read loop hands payloads to the sink itself (its TryWrite
// never blocks; the relay package provides sinks over TCP sockets, so this package makes no system
// calls of its own).
//
// # Resets
//
// A peer's RST_STREAM, whatever its code, is an error ([*StreamError], [StreamError.PeerReset]) for
// Read, WriteTo and Write, after the data that came before it: a reset tunnel is a reset TCP
// connection (RFC 9113 §8.5), never a clean end. [Stream.Abort] sends RST_STREAM(CONNECT_ERROR), the
// form of a TCP reset; [Stream.Close] before both directions ended sends CANCEL. On the sending side, [Stream.WriteHeadroom] sends DATA frames built in the caller's
// buffer without a copy, and the TLS records of one batch of frames leave with one socket write.
//
// [http2.Framer]: https://pkg.go.dev/golang.org/x/net/http2#Framer
package hbone
