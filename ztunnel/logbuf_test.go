package ztunnel

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingWriter records what was written and how many writes it took.
type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	err    error
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if w.err != nil {
		return 0, w.err
	}
	return w.buf.Write(p)
}

func (w *countingWriter) state() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.writes
}

func TestLogBufferBatchesUntilDelay(t *testing.T) {
	w := &countingWriter{}
	b := NewLogBuffer(w, 30*time.Millisecond, 1<<20)
	for i := range 100 {
		fmt.Fprintf(b, "line %d\n", i)
	}
	if got, n := w.state(); n != 0 || got != "" {
		t.Fatalf("written before the delay: %d writes", n)
	}
	waitFor(t, "the delayed flush", 5*time.Second, func() bool { _, n := w.state(); return n > 0 })
	got, n := w.state()
	if n != 1 {
		t.Errorf("%d writes for one batch, want 1", n)
	}
	var want strings.Builder
	for i := range 100 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if got != want.String() {
		t.Errorf("batch = %q, want the lines in order", got)
	}

	// The next line starts a new batch with its own delay.
	fmt.Fprintf(b, "later\n")
	waitFor(t, "the second flush", 5*time.Second, func() bool { _, n := w.state(); return n == 2 })
	if got, _ := w.state(); !strings.HasSuffix(got, "line 99\nlater\n") {
		t.Errorf("after the second batch: %q", got[max(0, len(got)-30):])
	}
}

func TestLogBufferFlushesAtLimit(t *testing.T) {
	w := &countingWriter{}
	b := NewLogBuffer(w, time.Hour, 64)
	b.Write(bytes.Repeat([]byte("a"), 40))
	if _, n := w.state(); n != 0 {
		t.Fatal("written below the limit")
	}
	b.Write(bytes.Repeat([]byte("b"), 40)) // 80 >= 64
	got, n := w.state()
	if n != 1 || got != strings.Repeat("a", 40)+strings.Repeat("b", 40) {
		t.Fatalf("after passing the limit: %d writes, %q", n, got)
	}
}

func TestLogBufferCloseWritesThrough(t *testing.T) {
	w := &countingWriter{}
	b := NewLogBuffer(w, time.Hour, 1<<20)
	b.Write([]byte("one\n"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got, n := w.state(); n != 1 || got != "one\n" {
		t.Fatalf("after Close: %d writes, %q", n, got)
	}
	b.Write([]byte("two\n"))
	if got, n := w.state(); n != 2 || got != "one\ntwo\n" {
		t.Fatalf("a write after Close is not written through: %d writes, %q", n, got)
	}
}

func TestLogBufferReportsWriteError(t *testing.T) {
	boom := errors.New("disk full")
	w := &countingWriter{err: boom}
	b := NewLogBuffer(w, time.Hour, 1<<20)
	if _, err := b.Write([]byte("x\n")); err != nil {
		t.Fatalf("Write = %v, want nil (errors come from Flush)", err)
	}
	if err := b.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush = %v, want %v", err, boom)
	}
	if err := b.Flush(); err != nil {
		t.Fatalf("second Flush = %v, want nil (the error was reported)", err)
	}
}

// TestLoggerFlushesWarnings: through a LogBuffer, info lines wait for the batch, a warning goes
// out at once (with the lines before it, in order); in both formats.
func TestLoggerFlushesWarnings(t *testing.T) {
	for _, format := range []string{"plain", "json"} {
		t.Run(format, func(t *testing.T) {
			w := &countingWriter{}
			b := NewLogBuffer(w, time.Hour, 1<<20)
			env := map[string]string{"LOG_FORMAT": format}
			logger, _, err := NewLoggerTo(b, func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			logger = logger.With("component", "test")
			logger.Info("first")
			if _, n := w.state(); n != 0 {
				t.Fatal("an info line was written at once")
			}
			logger.Warn("second")
			got, n := w.state()
			if n != 1 {
				t.Fatalf("%d writes after the warning, want 1", n)
			}
			if i, j := strings.Index(got, "first"), strings.Index(got, "second"); i < 0 || j < i {
				t.Fatalf("output %q: want the info line, then the warning", got)
			}
		})
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
