// Package load holds the benchmark's traffic: one server that plays sink, echo or one-shot echo
// depending on the first byte a connection sends, and the load generators that drive it through a
// dial function (throughput, round-trip latency, new connections per second, held idle
// connections). It knows nothing about namespaces or proxies: the caller hands it a listener and a
// dial function, so it runs the same over loopback in tests and through a pod's namespace in the
// harness.
//
// # Wire protocol
//
// A client's first byte selects the mode:
//   - ModeSink: the server reads and discards until EOF, then sends the byte count (8 bytes, big
//     endian) and closes.
//   - ModeEcho: the server echoes every following byte until EOF, then half-closes and closes.
//   - ModeOnce: the server writes ModeOnce back and closes at once (the server closes first, so
//     TIME_WAIT lands on the accepting side and a client making many connections does not run out
//     of ports).
//
// # Bounds
//
// Every generator stops after its duration or its count limit, whichever comes first, and every
// network wait has a deadline.
//
// # Concurrency
//
// A Server is safe for concurrent use; the generators run their own goroutines and return once
// all of them ended.
package load
