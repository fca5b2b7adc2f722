package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"testing"
	"time"
)

// BenchmarkThroughput measures one tunnel's upload throughput over loopback TLS with default settings.
func BenchmarkThroughput(b *testing.B) {
	s := benchStream(b, HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		io.Copy(io.Discard, s)
		s.CloseWrite()
	}))
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := s.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	s.CloseWrite()
	io.Copy(io.Discard, s)
}

// benchStream serves h over loopback TLS and returns a tunnel to it from a new pool; the server, the
// pool and the tunnel are closed at cleanup.
func benchStream(b *testing.B, h Handler) *Stream {
	pki := newTestPKI(b)
	addr := startServerB(b, &Server{TLSConfig: pki.server, Config: Config{Logger: discardLogger}, Handler: h})
	p := NewPool(PoolConfig{Config: Config{Logger: discardLogger}, Dial: dialTCP,
		TLSConfig: func(context.Context, Key) (*tls.Config, error) { return pki.client, nil }})
	b.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := p.Connect(ctx, testKey(addr), "10.0.0.1:80", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}
