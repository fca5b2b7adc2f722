package redirect

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrNotSupported is returned when the kernel (or the object given) cannot
// do what was asked, for example OriginalDst on a connection that is not TCP.
var ErrNotSupported = errors.New("not supported")

// NetNS is an open handle (a file descriptor) to a network namespace.
// Its identity is the (device, inode) pair of the nsfs file, see [NetNS.Same].
type NetNS struct {
	f    *os.File
	path string // as opened, or "" when built from a received fd
	dev  uint64
	ino  uint64

	// mu guards st and closed. It is held while a socket thread starts,
	// never while one serves requests.
	mu     sync.Mutex
	st     *sockThread // running socket thread, nil until the first Dial
	closed bool        // set by Close: no new socket thread
}

// OpenNetNS opens the network namespace at path, for example
// /var/run/netns/x or /proc/<pid>/ns/net.
func OpenNetNS(path string) (*NetNS, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	n, err := newNetNS(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return n, nil
}

// NetNSFromFile takes ownership of f (for example an fd received over ZDS)
// and checks that it refers to a network namespace. On error f is closed.
func NetNSFromFile(f *os.File) (*NetNS, error) {
	if f == nil {
		return nil, errors.New("netns from file: nil file")
	}
	n, err := newNetNS(f, "")
	if err != nil {
		f.Close()
		return nil, err
	}
	return n, nil
}

// CurrentNetNS opens the network namespace of the calling OS thread, which
// is the process's namespace unless called from inside [NetNS.Do].
func CurrentNetNS() (*NetNS, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return OpenNetNS(threadNetNSPath())
}

func threadNetNSPath() string {
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
}

// newNetNS validates f as a network namespace and records its identity.
func newNetNS(f *os.File, path string) (*NetNS, error) {
	name := path
	if name == "" {
		name = "fd:" + strconv.Itoa(int(f.Fd()))
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat netns %s: %w", name, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return nil, fmt.Errorf("statfs netns %s: %w", name, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return nil, fmt.Errorf("netns %s: not a namespace file (fs magic %#x)", name, sfs.Type)
	}
	// NS_GET_NSTYPE exists since Linux 4.11; older kernels only get the nsfs check.
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	switch {
	case err == nil && typ != unix.CLONE_NEWNET:
		return nil, fmt.Errorf("netns %s: namespace type %#x is not a network namespace", name, typ)
	case err != nil && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL):
		return nil, fmt.Errorf("netns %s: get namespace type: %w", name, err)
	}
	return &NetNS{f: f, path: path, dev: uint64(st.Dev), ino: st.Ino}, nil
}

// Fd returns the namespace file descriptor. It stays valid until Close and
// must not be closed by the caller.
func (n *NetNS) Fd() int { return int(n.f.Fd()) }

// Close stops the namespace's socket thread (started by [NetNS.Dial]), which
// closes its spare sockets, and releases the handle.
func (n *NetNS) Close() error {
	n.stopSockThread()
	if err := n.f.Close(); err != nil {
		return fmt.Errorf("close netns %s: %w", n, err)
	}
	return nil
}

// Inode returns the namespace's inode number (as in `ls -Li /proc/self/ns/net`).
func (n *NetNS) Inode() uint64 { return n.ino }

// Same reports whether n and o refer to the same namespace.
func (n *NetNS) Same(o *NetNS) bool {
	if n == nil || o == nil {
		return n == o
	}
	return n.dev == o.dev && n.ino == o.ino
}

// String returns the path the namespace was opened from, or "fd:N".
func (n *NetNS) String() string {
	if n == nil {
		return "<current netns>"
	}
	if n.path != "" {
		return n.path
	}
	return "fd:" + strconv.Itoa(int(n.f.Fd()))
}

// Do runs fn on a fresh OS thread switched into n and returns fn's error;
// the calling goroutine's thread never changes namespace. fn runs on its own
// goroutine, locked to that thread, while the caller waits. Afterwards the
// thread is switched back and returned to the runtime; if switching back
// fails, or fn panics or exits its goroutine, the thread is never reused:
// its goroutine ends still locked, so the runtime terminates it. A panic in
// fn is re-raised in the caller. fn must not start goroutines that expect to
// run in n. (The runtime cannot end the main thread and parks it instead; a
// program that must rule that out keeps its main goroutine locked.)
func (n *NetNS) Do(fn func() error) error {
	done := make(chan doResult, 1)
	go n.doLocked(fn, done)
	r := <-done
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

type doResult struct {
	err      error
	panicked bool
	panicVal any
}

// doLocked is Do's throw-away goroutine. It sends exactly one result.
func (n *NetNS) doLocked(fn func() error, done chan<- doResult) {
	// Unlocked only once the thread is back in its original namespace.
	runtime.LockOSThread()
	r := doResult{err: fmt.Errorf("netns do: function in %s exited its goroutine", n)}
	defer func() { done <- r }()
	orig, err := os.Open(threadNetNSPath())
	if err != nil {
		runtime.UnlockOSThread()
		r.err = fmt.Errorf("netns do: open current netns: %w", err)
		return
	}
	defer orig.Close()
	if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread() // a failed setns changes nothing
		r.err = fmt.Errorf("netns do: enter %s: %w", n, err)
		return
	}
	r = callRecover(fn)
	if r.panicked {
		return
	}
	if err := restoreNetNS(int(orig.Fd())); err != nil {
		r.err = errors.Join(r.err, fmt.Errorf("netns do: restore netns after %s (thread discarded): %w", n, err))
		return
	}
	runtime.UnlockOSThread()
}

// callRecover calls fn and returns its error, or what it panicked with.
func callRecover(fn func() error) (r doResult) {
	defer func() {
		if v := recover(); v != nil {
			r = doResult{panicked: true, panicVal: v}
		}
	}()
	return doResult{err: fn()}
}

// restoreNetNS switches the calling thread into the namespace open as fd.
// Tests replace it to make restoring fail.
var restoreNetNS = func(fd int) error { return unix.Setns(fd, unix.CLONE_NEWNET) }
