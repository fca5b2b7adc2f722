package relay

import (
	"context"
	"io"
	"net"
	"testing"
)

// BenchmarkRelayPipe relays a 1-byte echo between two in-memory connection pairs and closes: the
// relay's state, its cancellation hook and the two plain copies.
func BenchmarkRelayPipe(b *testing.B) {
	r := newRelay(b, -1)
	ctx := context.Background()
	b.ReportAllocs()
	one := []byte{'x'}
	buf := make([]byte, 1)
	for b.Loop() {
		client, down := net.Pipe()
		up, server := net.Pipe()
		done := runAsync(r, ctx, down, up)
		go func() {
			var b [1]byte
			if _, err := io.ReadFull(server, b[:]); err == nil {
				server.Write(b[:])
			}
			server.Close()
		}()
		client.Write(one)
		io.ReadFull(client, buf)
		client.Close()
		if res := <-done; res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}
