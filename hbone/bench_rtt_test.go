package hbone

import (
	"context"
	"io"
	"net"
	"testing"
)

// BenchmarkRTT measures 1-byte ping-pong round trips through a loopback TLS HBONE tunnel whose server
// side relays to a TCP echo server the way the proxy does (WriteTo towards TCP, Write from TCP).
func BenchmarkRTT(b *testing.B) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	s := benchStream(b, HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		up, err := net.Dial("tcp", echo.Addr().String())
		if err != nil {
			return
		}
		defer up.Close()
		go func() {
			s.WriteTo(newSocketSink(up.(*net.TCPConn)))
			up.(*net.TCPConn).CloseWrite()
		}()
		buf := make([]byte, 32<<10)
		io.CopyBuffer(struct{ io.Writer }{s}, up, buf)
		s.CloseWrite()
	}))
	var msg [1]byte
	b.ResetTimer()
	for range b.N {
		if _, err := s.Write(msg[:]); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, msg[:]); err != nil {
			b.Fatal(err)
		}
	}
}
