package workload

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// configWith returns a valid config with one workload named name.
func configWith(name string) string {
	return fmt.Sprintf("workloads:\n- {uid: u-%s, name: %s, namespace: ns, workloadIps: [\"10.0.0.1\"]}\n", name, name)
}

// quietSource returns a FileSource on path that discards its logs.
func quietSource(path string) *FileSource {
	return &FileSource{Path: path, Store: NewStore(), Logger: slog.New(slog.DiscardHandler)}
}

// syncBuffer is a bytes.Buffer safe for the Run goroutine to write and the test to read.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSource loads path and runs a FileSource on it until the test ends.
func startSource(t *testing.T, path string) (*FileSource, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	f := &FileSource{Path: path, Store: NewStore(), Interval: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if err := f.Load(); err != nil {
		t.Fatalf("Load: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	})
	return f, logs
}

// waitForName waits up to 3 s for the store to hold a workload named name.
func waitForName(t *testing.T, f *FileSource, name string) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		ch := f.Store.Changed()
		if ws := f.Store.Load().Workloads(); len(ws) == 1 && ws[0].Name == name {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("store did not pick up workload %q within 3s; has %v", name, uids(f.Store.Load().Workloads()))
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceReloadAndBadEdit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configWith("one"))
	f, logs := startSource(t, path)
	waitForName(t, f, "one")
	if f.Last() == nil || f.Last().Workloads[0].Name != "one" {
		t.Fatalf("Last() = %+v, want the loaded config", f.Last())
	}

	writeFile(t, path, configWith("two")) // in-place write
	waitForName(t, f, "two")

	good := f.Store.Load()
	writeFile(t, path, "workloads:\n- {uid: u, name: x, namespace: ns, workloadIps: [\"10.0.0.300\"]}\n")
	deadline := time.Now().Add(3 * time.Second)
	for f.ReloadFailures() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if f.ReloadFailures() == 0 {
		t.Fatal("bad edit was not counted as a reload failure within 3s")
	}
	if f.Store.Load() != good || f.Last().Workloads[0].Name != "two" {
		t.Error("bad edit replaced the last good snapshot")
	}
	time.Sleep(50 * time.Millisecond) // several more polls of the same bad file
	if n := f.ReloadFailures(); n != 1 {
		t.Errorf("ReloadFailures = %d after one bad edit, want 1", n)
	}
	wantLog := `workloads[0] (uid \"u\"): workloadIps[0]: invalid IP \"10.0.0.300\"`
	if got := logs.String(); !strings.Contains(got, wantLog) || strings.Count(got, "reload failed") != 1 {
		t.Errorf("logs should hold the full error once; got:\n%s", got)
	}

	writeFile(t, path, configWith("three")) // fixed again
	waitForName(t, f, "three")
}

func TestFileSourceRenameSwap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, configWith("one"))
	f, _ := startSource(t, path)

	tmp := filepath.Join(dir, ".config.yaml.tmp")
	writeFile(t, tmp, configWith("two"))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitForName(t, f, "two")
}

// Kubernetes ConfigMap volumes: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>;
// an update creates a new timestamp dir and atomically renames a new ..data symlink over the old.
func TestFileSourceSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, data string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "config.yaml"), data)
	}
	version("..v1", configWith("one"))
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink("..data/config.yaml", path); err != nil {
		t.Fatal(err)
	}
	f, _ := startSource(t, path)
	waitForName(t, f, "one")

	version("..v2", configWith("two"))
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
	waitForName(t, f, "two")
	if f.ReloadFailures() != 0 {
		t.Errorf("ReloadFailures = %d after a clean swap, want 0", f.ReloadFailures())
	}
}

func TestFileSourceSameContentNoReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configWith("one"))
	f, _ := startSource(t, path)
	ch := f.Store.Changed()
	writeFile(t, path, configWith("one")) // new mtime, same bytes
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Error("rewriting identical content replaced the snapshot")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestFileSourceMissingFileKeepsLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configWith("one"))
	f, _ := startSource(t, path)
	good := f.Store.Load()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for f.ReloadFailures() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if f.ReloadFailures() != 1 || f.Store.Load() != good {
		t.Errorf("after removal: failures %d, snapshot kept %v; want 1, true", f.ReloadFailures(), f.Store.Load() == good)
	}
	writeFile(t, path, configWith("two"))
	waitForName(t, f, "two")
}

func TestFileSourceLoadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "workloads: [{uid: u}]\n")
	for _, tc := range []struct {
		f    *FileSource
		want string
	}{
		{&FileSource{Path: filepath.Join(dir, "missing.yaml"), Store: NewStore()}, "no such file"},
		{&FileSource{Path: bad, Store: NewStore()}, bad + `: workloads[0] (uid "u"): name: missing required field`},
		{&FileSource{Path: bad}, "Store is nil"},
	} {
		err := tc.f.Load()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v, want an error containing %q", tc.f.Path, err, tc.want)
		}
		if tc.f.Last() != nil {
			t.Errorf("Load(%s) failed but Last() = %+v", tc.f.Path, tc.f.Last())
		}
	}
}

func TestFileSourceRunStopsOnCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configWith("one"))
	f := quietSource(path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }() // without Load: the first poll (1 s default) loads
	waitForName(t, f, "one")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// A re-check of an unchanged file (touched, or inside the racy window) reads it in small pieces:
// five of them must allocate less than the file's size (reading it whole did five times that).
func TestFileSourceRecheckDoesNotHoldTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	data := bigLocalConfig(2000, 100) // ~750 KB
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f := quietSource(path)
	if err := f.Load(); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 5 {
		f.seen = fileStamp{} // as in the racy window: the stamp is not trusted
		f.poll()
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > uint64(len(data)) {
		t.Errorf("5 re-checks of an unchanged %d-byte file allocated %d bytes", len(data), got)
	}
	if f.ReloadFailures() != 0 {
		t.Errorf("%d reload failures", f.ReloadFailures())
	}
}
