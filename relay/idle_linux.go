package relay

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// idlePoller lets a copy whose source socket has gone quiet give up its goroutine: the socket is
// watched by one epoll instance shared by the whole proxy, and the copy's wake function is started
// on a new goroutine once the socket is readable or hung up. A goroutine blocked in Go's own
// poller costs its stack (8 KiB once it has proxied anything), which is most of what an idle
// proxied connection would otherwise hold; a parked copy costs an entry in a map.
//
// The Go poller keeps serving every socket (it has them registered edge-triggered); this is a
// second, one-shot registration on a separate epoll instance, only made while a copy is parked.
// Closing a socket removes it from both epoll sets (the kernel drops the registration with the
// file), so a connection closed while parked leaves no kernel state behind; its map entry is
// removed by the cancel function park returns, which whoever closes the connection must call.
type idlePoller struct {
	after time.Duration // how long a socket must be silent before its copy parks
	epfd  int
	wakeR int // eventfd that stops run
	done  chan struct{}

	// onParks, if set before the first park, is called (on a parking goroutine, without locks
	// held) after every parkNotifyEvery parks: their goroutines' stacks are free heap memory now,
	// which the proxy may want to give back to the OS (see memory.go).
	onParks func()

	mu     sync.Mutex
	parked map[uint64]func() // token → wake; guarded by mu
	next   uint64            // guarded by mu
	closed bool              // guarded by mu
	parks  int               // parks since onParks was last called; guarded by mu
}

// parkNotifyEvery is how many parks make an onParks call: about 2 MiB of goroutine stacks.
const parkNotifyEvery = 256

// stopToken is the epoll data of the eventfd that stops the poller; parked sockets get tokens
// from 1 up.
const stopToken = 0

// newIdlePoller starts a poller for copies silent for after (defaultIdleAfter if zero).
func newIdlePoller(after time.Duration) (*idlePoller, error) {
	if after <= 0 {
		after = defaultIdleAfter
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, stopToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	p := &idlePoller{after: after, epfd: epfd, wakeR: efd, done: make(chan struct{}), parked: map[uint64]func(){}, next: 1}
	go p.run()
	return p, nil
}

func setToken(ev *unix.EpollEvent, token uint64) {
	ev.Fd, ev.Pad = int32(uint32(token)), int32(uint32(token>>32))
}

func eventToken(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// errPollerClosed is returned by park once the poller is closed.
var errPollerClosed = errors.New("idle poller closed")

// park watches the socket behind rc until it is readable, hung up or failing, then starts wake on
// a new goroutine (once). cancel withdraws the watch: it reports true if wake had not been started
// and now never will be, false if it was (or is being) started. The caller must call cancel when
// it closes the connection, else the entry stays until the socket would have woken it.
func (p *idlePoller) park(rc syscall.RawConn, wake func()) (cancel func() bool, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPollerClosed
	}
	token := p.next
	p.next++
	p.parked[token] = wake
	p.parks++
	notify := p.parks >= parkNotifyEvery && p.onParks != nil
	if notify {
		p.parks = 0
	}
	p.mu.Unlock()
	if notify {
		p.onParks()
	}

	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, token)
	var ctlErr error
	err = rc.Control(func(fd uintptr) {
		// A socket parked before keeps its disarmed one-shot registration: re-arm it.
		ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if ctlErr == unix.ENOENT {
			ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil && ctlErr != nil {
		err = os.NewSyscallError("epoll_ctl", ctlErr)
	}
	if err != nil {
		p.mu.Lock()
		delete(p.parked, token)
		p.mu.Unlock()
		return nil, fmt.Errorf("park idle socket: %w", err)
	}
	return func() bool {
		p.mu.Lock()
		_, ok := p.parked[token]
		delete(p.parked, token)
		p.mu.Unlock()
		if ok {
			// Disarm, so a later event is not delivered for a stale token. The socket may be
			// closed already: then the kernel removed the registration itself.
			_ = rc.Control(func(fd uintptr) {
				_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
			})
		}
		return ok
	}, nil
}

// numParked is how many copies are parked.
func (p *idlePoller) numParked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// run delivers events until close. It sits in epoll_wait(2), a blocking system call, so it holds
// an OS thread but no P while there is nothing to do.
func (p *idlePoller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Only a bug (EBADF, EFAULT, EINVAL) gets here; nothing parked could be woken any
			// more, so wake everything: each copy then finds its socket's real state.
			p.wakeAll()
			return
		}
		for i := range events[:n] {
			token := eventToken(&events[i])
			if token == stopToken {
				p.wakeAll()
				return
			}
			p.mu.Lock()
			wake, ok := p.parked[token]
			delete(p.parked, token)
			p.mu.Unlock()
			if ok {
				go wake()
			}
		}
	}
}

// wakeAll starts every parked copy and refuses new ones.
func (p *idlePoller) wakeAll() {
	p.mu.Lock()
	p.closed = true
	parked := p.parked
	p.parked = map[uint64]func(){}
	p.mu.Unlock()
	for _, wake := range parked {
		go wake()
	}
}

// close stops the poller: parked copies are woken (they find their sockets as they are) and
// park fails from now on.
func (p *idlePoller) close() {
	var one = [8]byte{1}
	if _, err := unix.Write(p.wakeR, one[:]); err != nil {
		p.wakeAll() // cannot happen with a fresh eventfd; do not leave anyone parked
	}
	<-p.done
	unix.Close(p.wakeR)
	unix.Close(p.epfd)
}
