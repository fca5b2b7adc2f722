package hbone

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http2"
)

func TestRecvBufAdd(t *testing.T) {
	var b recvBuf
	var want []byte
	put := func(seed byte, n int) {
		p := chunkPool.Get().(*[recvChunkSize]byte)
		copy(p[:], pattern(seed, n))
		b.add(p, n)
		want = append(want, pattern(seed, n)...)
	}
	put(1, 10)                // first piece: its own chunk
	put(2, 20)                // small: copied into the first chunk
	put(3, smallPiece)        // large: a chunk of its own, no copy
	put(4, recvChunkSize)     // a full chunk
	put(5, 1)                 // no room in the last chunk: a new one
	put(6, recvChunkSize/2-1) // small and fits: copied
	if got := len(b.chunks); got != 4 {
		t.Errorf("chunks = %d, want 4", got)
	}
	if b.len() != len(want) {
		t.Fatalf("len = %d, want %d", b.len(), len(want))
	}
	got := make([]byte, len(want)+10)
	n := 0
	for b.len() > 0 {
		n += b.read(got[n:min(n+7777, len(got))])
	}
	if diff := cmp.Diff(want, got[:n]); diff != "" {
		t.Errorf("read back differs (-want +got):\n%s", diff)
	}
	if b.chunks != nil {
		t.Errorf("chunks left after reading everything: %d", len(b.chunks))
	}
}

// TestServerReadsDataFrames sends DATA frames of many sizes, padded (read through the framer) and not
// (read straight into the stream's chunks), and checks the handler reads exactly the bytes sent.
func TestServerReadsDataFrames(t *testing.T) {
	checkLeaks(t)
	got := make(chan []byte, 1)
	srv := &Server{Handler: HandlerFunc(func(ctx context.Context, r *Request) {
		s, err := r.Accept(nil)
		if err != nil {
			return
		}
		defer s.Close()
		b, _ := io.ReadAll(s)
		got <- b
	})}
	p, _ := serveLoopback(t, srv)
	p.clientHandshake()
	p.writeHeaders(1, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	p.next(true) // 200
	var want []byte
	sizes := []int{1, 0, 100, smallPiece - 1, smallPiece, recvChunkSize, recvChunkSize + 1, 70000, 3, 200000}
	for i, n := range sizes {
		data := pattern(byte(i), n)
		want = append(want, data...)
		var err error
		if i%3 == 2 {
			err = p.fr.WriteDataPadded(1, false, data, make([]byte, 7))
		} else {
			err = p.fr.WriteData(1, false, data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := p.fr.WriteData(1, true, []byte("end")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "end"...)
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Errorf("handler read %d bytes, want %d (equal prefix %d)", len(b), len(want), commonPrefix(b, want))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not read to EOF")
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestCloseDuringDataFrameReturnsWindow closes a stream while a large DATA frame for it is still
// arriving: the rest of the frame is dropped and none of the connection window is lost (checked by
// reading another stream until every byte sent has been returned).
func TestCloseDuringDataFrameReturnsWindow(t *testing.T) {
	checkLeaks(t)
	closeNow := make(chan struct{})
	closed := make(chan struct{})
	srv := &Server{Config: Config{StreamWindow: 65535, ConnWindow: 65535},
		Handler: HandlerFunc(func(ctx context.Context, r *Request) {
			s, err := r.Accept(nil)
			if err != nil {
				return
			}
			if r.Authority == "10.0.0.3:80" {
				io.Copy(io.Discard, s)
				s.Close()
				return
			}
			<-closeNow
			s.Close()
			close(closed)
		})}
	p, _ := serveLoopback(t, srv)
	p.clientHandshake()
	p.writeHeaders(1, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	p.next(true) // 200
	size := 40000
	data := pattern(9, size)
	hdr := []byte{byte(size >> 16), byte(size >> 8), byte(size), byte(http2.FrameData), 0, 0, 0, 0, 1}
	if _, err := p.c.Write(append(hdr, data[:100]...)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the read loop is now inside the frame's payload
	close(closeNow)
	<-closed
	if _, err := p.c.Write(data[100:]); err != nil {
		t.Fatal(err)
	}
	const more = 30000
	p.writeHeaders(3, false, ":method", "CONNECT", ":authority", "10.0.0.3:80")
	if err := p.fr.WriteData(3, true, make([]byte, more)); err != nil {
		t.Fatal(err)
	}
	var rst bool
	var returned uint32
	for !rst || returned < uint32(size+more) {
		p.c.SetReadDeadline(time.Now().Add(3 * time.Second))
		f, err := p.fr.ReadFrame()
		if err != nil {
			t.Fatalf("%v (reset %v, window returned %d of %d)", err, rst, returned, size+more)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				rst = f.ErrCode == http2.ErrCodeCancel
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				returned += f.Increment
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
}
