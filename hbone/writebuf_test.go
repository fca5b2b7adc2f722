package hbone

import (
	"bytes"
	"errors"
	"testing"
)

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

func TestPooledWriter(t *testing.T) {
	var out bytes.Buffer
	p := &pooledWriter{w: &out}
	if err := p.Flush(); err != nil || p.bw != nil {
		t.Fatalf("Flush of an idle writer = %v (buffer held: %v), want nil and no buffer", err, p.bw != nil)
	}
	p.WriteString("ab")
	p.Write([]byte("cd"))
	if p.bw == nil || out.Len() != 0 {
		t.Fatalf("after small writes: buffer held %v, %d bytes out; want buffered, 0 out", p.bw != nil, out.Len())
	}
	big := bytes.Repeat([]byte{'x'}, 2*writeBufferSize)
	p.Write(big)
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if p.bw != nil {
		t.Error("buffer still held after a successful Flush")
	}
	if want := "abcd" + string(big); out.String() != want {
		t.Errorf("wrote %d bytes, want %d in order", out.Len(), len(want))
	}

	wantErr := errors.New("broken pipe")
	f := &pooledWriter{w: failWriter{wantErr}}
	f.Write([]byte("x"))
	if err := f.Flush(); !errors.Is(err, wantErr) {
		t.Fatalf("Flush = %v, want %v", err, wantErr)
	}
	if _, err := f.Write([]byte("y")); !errors.Is(err, wantErr) {
		t.Errorf("Write after a failed Flush = %v, want the sticky %v", err, wantErr)
	}
}
