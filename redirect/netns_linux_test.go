package redirect

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain keeps the main goroutine on the main thread, so no test
// goroutine ever runs there. Tests here end threads that are left in a test
// namespace; the runtime cannot end the main thread and would park it
// instead, and /proc/self/ns/net (the main thread's) would then name the
// test namespace for the rest of the run.
func TestMain(m *testing.M) {
	runtime.LockOSThread()
	os.Exit(m.Run())
}

// newTestNetNS creates an anonymous network namespace (unshare on a thread
// that is then discarded) and returns a handle to it.
func newTestNetNS(t *testing.T) *NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creating network namespaces")
	}
	type res struct {
		f   *os.File
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves the process's namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- res{err: err}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		ch <- res{f, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("new netns: %v", r.err)
	}
	ns, err := NetNSFromFile(r.f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// threadNetNSInode returns the inode of the calling thread's network namespace.
func threadNetNSInode(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestNetNSDoRestoreFailureKeepsCaller forces the switch back to fail and
// checks that the caller's thread never left its namespace, and that the
// failure is reported.
func TestNetNSDoRestoreFailureKeepsCaller(t *testing.T) {
	ns := newTestNetNS(t)
	restoreErr := errors.New("forced restore failure")
	old := restoreNetNS
	restoreNetNS = func(int) error { return restoreErr }
	defer func() { restoreNetNS = old }()

	runtime.LockOSThread()
	// If the caller's thread did move, it must not be reused: stay locked.
	before := threadNetNSInode(t)
	var inside uint64
	fnErr := errors.New("fn error")
	err := ns.Do(func() error {
		inside = threadNetNSInode(t)
		return fnErr
	})
	after := threadNetNSInode(t)
	if after != before {
		t.Fatalf("caller's thread is in netns inode %d after Do, was %d (pod netns %d)", after, before, ns.Inode())
	}
	runtime.UnlockOSThread()

	if inside != ns.Inode() {
		t.Errorf("fn ran in netns inode %d, want %d", inside, ns.Inode())
	}
	if !errors.Is(err, restoreErr) || !errors.Is(err, fnErr) {
		t.Errorf("Do = %v, want both the restore error and fn's error", err)
	}
	if err == nil || !strings.Contains(err.Error(), "restore") {
		t.Errorf("Do error %v does not say restoring failed", err)
	}

	// The discarded thread is not handed to anyone: later calls on fresh
	// goroutines run in the process's namespace.
	restoreNetNS = old
	for range 20 {
		got := make(chan uint64)
		go func() { got <- threadNetNSInode(t) }()
		if ino := <-got; ino != before {
			t.Fatalf("a goroutine after Do runs in netns inode %d, want %d", ino, before)
		}
	}
}

// TestNetNSDoPanic checks that a panic in fn reaches the caller and leaves
// the caller's thread where it was.
func TestNetNSDoPanic(t *testing.T) {
	ns := newTestNetNS(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetNSInode(t)
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want boom", v)
			}
		}()
		ns.Do(func() error { panic("boom") })
	}()
	if after := threadNetNSInode(t); after != before {
		t.Fatalf("caller's thread is in netns inode %d after a panic in Do, was %d", after, before)
	}
}

// TestNetNSDoGoexit checks that fn ending its goroutine is an error, not a hang.
func TestNetNSDoGoexit(t *testing.T) {
	ns := newTestNetNS(t)
	err := ns.Do(func() error { runtime.Goexit(); return nil })
	if err == nil || !strings.Contains(err.Error(), "exited its goroutine") {
		t.Errorf("Do with Goexit = %v, want an error saying fn exited", err)
	}
}
