package redirect

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// sockThreadIdle is how long a socket thread may go without a request
// before it exits (a new one starts on the next request).
const sockThreadIdle = time.Minute

// errNetNSClosed is returned for requests on a closed NetNS.
var errNetNSClosed = errors.New("netns handle is closed")

// A sockThread is a goroutine locked to an OS thread that stays inside one
// network namespace while it runs. It creates sockets there: a socket's
// namespace is fixed when socket(2) runs, so everything else (options,
// bind, connect) can run on any thread. When it stops, it switches the
// thread back and unlocks it; only if that fails does the goroutine exit
// locked, so that the runtime ends the thread (the main thread cannot be
// ended, only parked forever, which is why this is not the normal exit).
//
// Waking the thread costs more than the socket(2) it runs (it is locked to
// its OS thread, so each request is a thread wake-up and a sleep), so after
// answering a request it keeps a few spare sockets of that kind, which
// later requests take without waking it. Spares are closed when the thread
// stops; they never outlive it.
type sockThread struct {
	reqs chan sockReq
	stop chan struct{} // closed by NetNS.Close
	done chan struct{} // closed when the goroutine has returned

	// spares holds ready sockets by sockKind. Callers take from it; only
	// the thread puts into it, and it empties it when it stops.
	spares [numSockKinds]chan int
	used   atomic.Bool // a spare was taken since the last idle check
}

type sockReq struct {
	family, sotype int
	reply          chan<- sockResult // buffered (1): the thread never blocks on it
}

type sockResult struct {
	fd  int
	err error
}

// sparesPerKind is how many ready sockets a socket thread keeps per kind.
const sparesPerKind = 8

// sockKind indexes sockThread.spares: IPv4/IPv6 × stream/datagram.
type sockKind int

const numSockKinds = 4

func kindOf(family, sotype int) (sockKind, bool) {
	k := sockKind(0)
	switch family {
	case unix.AF_INET:
	case unix.AF_INET6:
		k = 2
	default:
		return 0, false
	}
	switch sotype {
	case unix.SOCK_STREAM:
	case unix.SOCK_DGRAM:
		k++
	default:
		return 0, false
	}
	return k, true
}

// socket creates a non-blocking, close-on-exec socket inside n, starting
// n's socket thread if it is not running. The caller owns the fd.
func (n *NetNS) socket(family, sotype int) (int, error) {
	kind, spare := kindOf(family, sotype)
	var reply chan sockResult // made only when the thread is asked: most calls take a spare
	for {
		t, err := n.sockThread()
		if err != nil {
			return -1, err
		}
		if spare {
			select {
			case fd := <-t.spares[kind]:
				t.used.Store(true)
				return fd, nil
			default:
			}
		}
		if reply == nil {
			reply = make(chan sockResult, 1)
		}
		select {
		case t.reqs <- sockReq{family: family, sotype: sotype, reply: reply}:
			r := <-reply
			return r.fd, r.err
		case <-t.done:
			// It retired while idle (or Close stopped it): look again.
		}
	}
}

// sockThread returns n's running socket thread, starting one if needed.
func (n *NetNS) sockThread() (*sockThread, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errNetNSClosed
	}
	if n.st != nil {
		return n.st, nil
	}
	// Starting under mu makes concurrent first dials share one thread; it
	// costs one setns(2) and happens once per idle period.
	t := &sockThread{
		reqs: make(chan sockReq),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for i := range t.spares {
		t.spares[i] = make(chan int, sparesPerKind)
	}
	started := make(chan error, 1)
	go t.run(n, started)
	if err := <-started; err != nil {
		return nil, fmt.Errorf("socket thread: enter %s: %w", n, err)
	}
	n.st = t
	return t, nil
}

// run is the socket thread's goroutine. It reports on started whether it
// entered n, then serves requests until stopped or idle.
func (t *sockThread) run(n *NetNS, started chan<- error) {
	defer close(t.done)
	runtime.LockOSThread()
	orig, err := os.Open(threadNetNSPath())
	if err != nil {
		runtime.UnlockOSThread()
		started <- fmt.Errorf("open current netns: %w", err)
		return
	}
	defer orig.Close()
	if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread() // still in the original namespace
		started <- err
		return
	}
	started <- nil
	t.serve(n)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return // exit locked: the runtime ends the thread
	}
	runtime.UnlockOSThread()
}

// serve creates sockets for requests until t is stopped or, having had no
// request for sockThreadIdle, retires. After each answer it tops up the
// spares of the kind asked for. It closes the spares left when it returns.
func (t *sockThread) serve(n *NetNS) {
	defer t.closeSpares()
	idle := time.NewTicker(sockThreadIdle)
	defer idle.Stop()
	busy := false
	for {
		select {
		case r := <-t.reqs:
			busy = true
			fd, err := newSocket(r.family, r.sotype)
			if err != nil {
				r.reply <- sockResult{fd: -1, err: err}
				continue
			}
			r.reply <- sockResult{fd: fd}
			if kind, ok := kindOf(r.family, r.sotype); ok {
				t.refill(t.spares[kind], r.family, r.sotype)
			}
		case <-idle.C:
			if !busy && !t.used.Swap(false) && n.retire(t) {
				return
			}
			busy = false
		case <-t.stop:
			return
		}
	}
}

// newSocket creates a non-blocking, close-on-exec socket in the calling
// thread's namespace.
func newSocket(family, sotype int) (int, error) {
	fd, err := unix.Socket(family, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	return fd, nil
}

// refill tops up spares. A failure only means fewer spares: the next
// request asks the thread again and gets the error then.
func (t *sockThread) refill(spares chan int, family, sotype int) {
	for len(spares) < cap(spares) {
		fd, err := newSocket(family, sotype)
		if err != nil {
			return
		}
		select {
		case spares <- fd:
		default: // only the thread puts, so this cannot happen; stay safe
			unix.Close(fd)
			return
		}
	}
}

// closeSpares closes the sockets no caller took. After it, t is no longer
// registered, so no caller finds new spares.
func (t *sockThread) closeSpares() {
	for _, spares := range t.spares {
	drain:
		for {
			select {
			case fd := <-spares:
				unix.Close(fd)
			default:
				break drain
			}
		}
	}
}

// retire unregisters t as n's socket thread, so that the next request
// starts a new one. It reports false if t is no longer registered (Close
// is stopping it).
func (n *NetNS) retire(t *sockThread) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.st != t {
		return false
	}
	n.st = nil
	return true
}

// stopSockThread stops n's socket thread, if any, and waits for it to end.
// Later requests fail with errNetNSClosed.
func (n *NetNS) stopSockThread() {
	n.mu.Lock()
	t := n.st
	n.st, n.closed = nil, true
	n.mu.Unlock()
	if t != nil {
		close(t.stop)
		<-t.done
	}
}
