package hbone

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// TestWriteToTCPSocket sends many messages, mostly small, to a WriteTo whose writer is a TCP socket, so the
// read loop writes them to the socket itself while WriteTo waits; the socket's receiver stalls at
// first, so the socket fills and the rest goes through WriteTo. Every byte must arrive, in order.
func TestWriteToTCPSocket(t *testing.T) { testWriteToTCPSocket(t, false) }

// TestWriteToAsyncTCPSocket is TestWriteToTCPSocket with WriteToAsync: its drain goroutines come
// and go as the stream parks, and every byte must still arrive, in order, before done is called.
func TestWriteToAsyncTCPSocket(t *testing.T) { testWriteToTCPSocket(t, true) }

func testWriteToTCPSocket(t *testing.T, async bool) {
	checkLeaks(t)
	pki := newTestPKI(t)
	var payload []byte
	var msgs [][]byte
	for i := range 3000 {
		size := 1 + i*37%5000
		if i%97 == 0 {
			size = 20000 + i*131%50000 // large pieces too: whole receive chunks go direct
		}
		m := pattern(byte(i), size)
		msgs = append(msgs, m)
		payload = append(payload, m...)
	}
	srv := &Server{TLSConfig: pki.server, Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		for i, m := range msgs {
			if _, err := s.Write(m); err != nil {
				return
			}
			if i%500 == 0 {
				time.Sleep(time.Millisecond) // let WriteTo park now and then
			}
		}
		s.CloseWrite()
		io.Copy(io.Discard, s)
	})}
	addr := startServer(t, srv)
	pool, _ := testPool(t, pki, PoolConfig{})
	s, err := pool.Connect(ctxTimeout(t, 10*time.Second), testKey(addr), "10.0.0.5:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	dst, rcv := tcpPair(t)
	dst.SetWriteBuffer(4096)
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // stall: the socket fills up
		b, _ := io.ReadAll(rcv)
		got <- b
	}()
	var n int64
	if async {
		type result struct {
			n   int64
			err error
		}
		res := make(chan result, 2)
		s.WriteToAsync(newSocketSink(dst), func(n int64, err error) { res <- result{n, err} })
		select {
		case r := <-res:
			n, err = r.n, r.err
		case <-time.After(10 * time.Second):
			t.Fatal("WriteToAsync did not finish")
		}
		if len(res) != 0 {
			t.Error("WriteToAsync called done twice")
		}
	} else {
		n, err = s.WriteTo(newSocketSink(dst))
	}
	if err != nil || n != int64(len(payload)) {
		t.Errorf("WriteTo = %d, %v; want %d, nil", n, err, len(payload))
	}
	dst.CloseWrite()
	select {
	case b := <-got:
		if !bytes.Equal(b, payload) {
			t.Errorf("receiver got %d bytes, want %d (equal prefix %d)", len(b), len(payload), commonPrefix(b, payload))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("receiver did not see EOF")
	}
}
