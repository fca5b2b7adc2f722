package workload

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Hostile local config files on reload: each is refused, the last good snapshot stays, and
// memory stays bounded.

// hostileSource returns a FileSource with a size limit of maxBytes that has loaded a good
// config from path, and the buffer its logs go to.
func hostileSource(t *testing.T, path string, maxBytes int64) (*FileSource, *syncBuffer) {
	t.Helper()
	writeFile(t, path, configWith("good"))
	logs := &syncBuffer{}
	f := &FileSource{Path: path, Store: NewStore(), MaxBytes: maxBytes, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if err := f.Load(); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return f, logs
}

// reloadOnce polls f as Run does, with the file taken as changed, and fails the test if that
// takes longer than limit (a poll that blocks or reads without end).
func reloadOnce(t *testing.T, f *FileSource, limit time.Duration) {
	t.Helper()
	f.seen = fileStamp{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.poll()
	}()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("reload did not finish within %v", limit)
	}
}

// checkRefused checks that the reload failed once with an error containing want, and kept
// the snapshot good.
func checkRefused(t *testing.T, f *FileSource, logs *syncBuffer, good *Snapshot, want string) {
	t.Helper()
	if n := f.ReloadFailures(); n != 1 {
		t.Errorf("ReloadFailures = %d, want 1", n)
	}
	if f.Store.Load() != good || f.Last() == nil || len(f.Last().Workloads) != 1 || f.Last().Workloads[0].Name != "good" {
		t.Errorf("the reload replaced the last good config; store has %v", uids(f.Store.Load().Workloads()))
	}
	if got := logs.String(); !strings.Contains(got, "reload failed") || !strings.Contains(got, want) {
		t.Errorf("logs do not hold the reload failure %q:\n%.2000s", want, got)
	}
}

// aliasBomb is a policy whose rules expand, through aliases, to 100^4 nodes from 2 KB.
func aliasBomb() string {
	repeat := func(first, alias string) string { return "[" + first + strings.Repeat(", "+alias, 99) + "]" }
	ports := "&d " + repeat("80", "80")
	clause := "&c " + repeat("&m {destinationPorts: "+ports+"}", "*m")
	rule := "&r " + repeat(clause, "*c")
	return pol("  rules: " + repeat(rule, "*r") + "\n")
}

func TestFileSourceRefusesHostileReload(t *testing.T) {
	const limit = 1 << 20
	deep := "workloads:\n- {uid: u, name: n, namespace: ns, workloadIps: " + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + "}\n"
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty", "", "no YAML document"},
		{"only blank lines", "\n  \n\n", "no YAML document"},
		{"only comments", "# workloads:\n#- {uid: u}\n" + strings.Repeat("#", 100000) + "\n", "no YAML document"},
		{"over the size limit", strings.Repeat("# padding\n", limit/10+1), "larger than the limit of 1048576 bytes; raise LOCAL_XDS_MAX_BYTES"},
		{"alias bomb", aliasBomb(), "document too large: aliases expand to more than"},
		{"alias cycle", pol("  rules: &r [[*r]]\n"), "document too large: aliases expand to more than"},
		{"deeply nested", deep, `workloadIps[0]: want a string`},
		{"nested past the parser's limit", "workloads: " + strings.Repeat("[", 10001) + "\n", "exceeded max depth of 10000"},
		{"flow list of ints", "workloads: [" + strings.Repeat("1,", limit/2-20) + "1]\n", "too many YAML nodes to parse at once"},
		{"empty list items", "workloads:\n" + strings.Repeat("- {}\n", limit/5-5), "workloads[0]: uid: missing required field (line 2)"},
		{"empty items, flow", "{" + strings.Repeat("a,", limit/2-5) + "a}\n", "too many YAML nodes to parse at once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.data) > limit+100 {
				t.Fatalf("test data is %d bytes", len(tc.data))
			}
			path := filepath.Join(t.TempDir(), "config.yaml")
			f, logs := hostileSource(t, path, limit)
			good := f.Store.Load()
			writeFile(t, path, tc.data)
			reloadOnce(t, f, 20*time.Second)
			checkRefused(t, f, logs, good, tc.want)
			reloadOnce(t, f, 20*time.Second) // the same bad content: reported once
			if n := f.ReloadFailures(); n != 1 {
				t.Errorf("ReloadFailures = %d after polling the same bad file again, want 1", n)
			}
		})
	}
}

// A symlink to /dev/zero (size 0 in its stat, endless content) is refused at once instead of
// read until memory runs out.
func TestFileSourceRefusesDevZero(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	f, logs := hostileSource(t, path, DefaultLocalConfigMaxBytes)
	good := f.Store.Load()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", path); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	reloadOnce(t, f, 10*time.Second)
	t.Logf("refused in %v", time.Since(start))
	checkRefused(t, f, logs, good, path+": not a regular file")
}

// A FIFO at the path is refused without blocking the poll loop (opening one for reading
// waits for a writer).
func TestFileSourceRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	f, logs := hostileSource(t, path, 0)
	good := f.Store.Load()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	reloadOnce(t, f, 5*time.Second)
	checkRefused(t, f, logs, good, "not a regular file")
}

// The limit holds for the bytes read, not the size a stat reported: a file that grows between
// the two (here a /proc file, whose stat size is 0) is cut off and refused.
func TestReadConfigFileLimitsBytesRead(t *testing.T) {
	const path = "/proc/self/status"
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != 0 || !fi.Mode().IsRegular() {
		t.Skipf("%s: not a regular file of stat size 0 here", path)
	}
	data, _, err := readConfigFile(path, 1<<20)
	if err != nil || len(data) < 200 {
		t.Fatalf("readConfigFile(%s) = %d bytes, %v; want its content", path, len(data), err)
	}
	_, _, err = readConfigFile(path, 100)
	if err == nil || !strings.Contains(err.Error(), path+": file is larger than the limit of 100 bytes") {
		t.Errorf("readConfigFile(%s, 100) = %v, want the size-limit error", path, err)
	}
	if _, err := hashFile(path, 100); err == nil || !strings.Contains(err.Error(), "larger than the limit") {
		t.Errorf("hashFile(%s, 100) = %v, want the size-limit error", path, err)
	}
}

// A file with no YAML document would drop every workload; a config that lists none explicitly
// is applied, but loudly.
func TestFileSourceExplicitlyEmptyReloadWarns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configWith("one")+"services:\n- {name: s, namespace: ns, hostname: s.example.com}\n")
	logs := &syncBuffer{}
	f := &FileSource{Path: path, Store: NewStore(), Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if err := f.Load(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "workloads: []\nservices: []\n")
	reloadOnce(t, f, 5*time.Second)
	if f.ReloadFailures() != 0 || len(f.Store.Load().Workloads()) != 0 {
		t.Fatalf("explicitly empty config: %d failures, %d workloads; want it applied", f.ReloadFailures(), len(f.Store.Load().Workloads()))
	}
	if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "workloads_dropped=1 services_dropped=1") {
		t.Errorf("logs do not warn of the dropped entries:\n%s", got)
	}
}

// The initial Load of a file with no document keeps its behaviour (an empty config: the file
// may be filled in later), with a warning.
func TestFileSourceLoadOfEmptyFileWarns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, "# to be filled in\n")
	logs := &syncBuffer{}
	f := &FileSource{Path: path, Store: NewStore(), Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if err := f.Load(); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if f.Last() == nil || len(f.Last().Workloads) != 0 {
		t.Errorf("Last() = %+v, want an empty config", f.Last())
	}
	if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "no YAML document") {
		t.Errorf("logs do not warn of the empty file:\n%s", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Interval = 10 * time.Millisecond
	go f.Run(ctx) //nolint:errcheck // returns nil on cancel
	writeFile(t, path, configWith("later"))
	waitForName(t, f, "later")
}

// heapPeak runs fn and returns the peak growth of the heap in use (objects and free space in
// in-use spans, sampled every millisecond) over its level before.
func heapPeak(fn func()) uint64 {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	inUse := func() uint64 {
		metrics.Read(samples)
		return samples[0].Value.Uint64() + samples[1].Value.Uint64()
	}
	runtime.GC()
	base := inUse()
	stop := make(chan struct{})
	peaks := make(chan uint64)
	go func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		peak := base
		for {
			select {
			case <-stop:
				peaks <- max(peak, inUse())
				return
			case <-t.C:
				peak = max(peak, inUse())
			}
		}
	}()
	fn()
	close(stop)
	return <-peaks - base
}

// hostileFiles are files of about size bytes that are each as costly as a file of that size
// can be in one way: many nodes, one long token, many entries. They are made one at a time,
// as the test's own live heap raises the garbage collector's target and so the peaks.
var hostileFiles = []struct {
	name string
	make func(size int) string
}{
	{"flow list of ints", func(size int) string { return "workloads: [" + strings.Repeat("1,", size/2-20) + "1]\n" }},
	{"empty list items", func(size int) string { return "workloads:\n" + strings.Repeat("- {}\n", size/5-5) }},
	{"empty flow keys", func(size int) string { return "{" + strings.Repeat("a,", size/2-5) + "a}\n" }},
	{"only a comment", func(size int) string { return "#" + strings.Repeat("x", size-10) + "\n" }},
	{"one long scalar", func(size int) string { return "workloads:\n- uid: " + strings.Repeat("x", size-30) + "\n" }},
	{"longest scalar parsed", func(size int) string { // in a piece as long as a text parsed at once may be
		s := "workloads:\n- uid: " + strings.Repeat("x", size/4-30) + "\n"
		return s + strings.Repeat("- {}\n", (size-len(s))/5-2)
	}},
	{"minimal workloads", func(size int) string {
		var b strings.Builder
		b.WriteString("workloads:\n")
		for i := 0; b.Len() < size-100; i++ {
			fmt.Fprintf(&b, "- {uid: u%d, name: n, namespace: ns, hostname: h}\n", i)
		}
		return b.String()
	}},
}

// Reloading a hostile file at the size limit takes a bounded amount of heap: at most 8 times
// the limit and 64 MiB for the garbage collector's pacing at small heaps, which for the default
// limit of 64 MiB is well under 1 GB (the most, about 400 MiB, is for decoding as many minimal
// workloads as the budget allows). Without the bounds, the 8 MiB files of many nodes took 1.5
// to 4.5 GB.
func TestFileSourceHostileReloadMemory(t *testing.T) {
	limits := []int64{8 << 20}
	switch {
	case testing.Short():
	case raceEnabled:
		t.Log("the files at the default limit are left out: they take minutes under the race detector")
	default:
		limits = append(limits, DefaultLocalConfigMaxBytes)
	}
	for _, limit := range limits {
		for _, tc := range hostileFiles {
			t.Run(fmt.Sprintf("%dMiB/%s", limit>>20, tc.name), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "config.yaml")
				f, logs := hostileSource(t, path, limit)
				good := f.Store.Load()
				data := tc.make(int(limit))
				size := len(data)
				writeFile(t, path, data)
				data = ""
				var took time.Duration
				peak := heapPeak(func() {
					start := time.Now()
					f.seen = fileStamp{}
					f.poll()
					took = time.Since(start)
				})
				t.Logf("%.1f MiB file: heap peak +%.0f MiB (%.1f times the file), %v", float64(size)/(1<<20),
					float64(peak)/(1<<20), float64(peak)/float64(size), took.Round(time.Millisecond))
				if bound := 8*uint64(limit) + 64<<20; peak > bound {
					t.Errorf("heap grew by %d MiB, want at most %d MiB", peak>>20, bound>>20)
				}
				checkRefused(t, f, logs, good, "")
			})
		}
	}
}
