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
	pki := newTestPKI(b)
	srv := &Server{TLSConfig: pki.server, Config: Config{Logger: discardLogger},
		Handler: HandlerFunc(func(ctx context.Context, r *Request) {
			s, err := r.Accept(nil)
			if err != nil {
				return
			}
			defer s.Close()
			io.Copy(io.Discard, s)
			s.CloseWrite()
		})}
	addr := startServerB(b, srv)
	p := NewPool(PoolConfig{Config: Config{Logger: discardLogger}, Dial: dialTCP,
		TLSConfig: func(context.Context, Key) (*tls.Config, error) { return pki.client, nil }})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := p.Connect(ctx, testKey(addr), "10.0.0.1:80", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
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
