package relay

import (
	"net"
	"testing"
	"time"
)

func newTestPoller(t *testing.T) *idlePoller {
	t.Helper()
	p, err := newIdlePoller(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

// parkCh parks c and returns a channel that gets a value when the wake function runs.
func parkCh(t *testing.T, p *idlePoller, c *net.TCPConn) (<-chan struct{}, func() bool) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan struct{}, 1)
	cancel, err := p.park(rc, func() { woke <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	return woke, cancel
}

func expectWake(t *testing.T, woke <-chan struct{}, want bool) {
	t.Helper()
	select {
	case <-woke:
		if !want {
			t.Fatal("woken, want still parked")
		}
	case <-time.After(200 * time.Millisecond):
		if want {
			t.Fatal("not woken")
		}
	}
}

func TestIdlePollerWakesOnData(t *testing.T) {
	p := newTestPoller(t)
	c, s := tcpPair(t)
	for round := range 3 { // parked again after each wake: the one-shot registration is re-armed
		woke, cancel := parkCh(t, p, s)
		expectWake(t, woke, false)
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		expectWake(t, woke, true)
		if cancel() {
			t.Fatalf("round %d: cancel after wake reported true", round)
		}
		var b [1]byte
		if _, err := s.Read(b[:]); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.numParked(); n != 0 {
		t.Fatalf("%d parked, want 0", n)
	}
}

func TestIdlePollerWakesOnHangup(t *testing.T) {
	p := newTestPoller(t)
	c, s := tcpPair(t)
	woke, _ := parkCh(t, p, s)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectWake(t, woke, true)
}

func TestIdlePollerCancel(t *testing.T) {
	p := newTestPoller(t)
	c, s := tcpPair(t)
	woke, cancel := parkCh(t, p, s)
	if !cancel() {
		t.Fatal("cancel of a parked socket reported false")
	}
	if cancel() {
		t.Fatal("second cancel reported true")
	}
	c.Write([]byte{'x'})
	expectWake(t, woke, false)
	if n := p.numParked(); n != 0 {
		t.Fatalf("%d parked after cancel, want 0", n)
	}
}

// A socket closed while parked: cancel still removes the entry; nothing is woken later.
func TestIdlePollerClosedWhileParked(t *testing.T) {
	p := newTestPoller(t)
	c, s := tcpPair(t)
	woke, cancel := parkCh(t, p, s)
	s.Close()
	if !cancel() {
		t.Fatal("cancel after close reported false")
	}
	c.Write([]byte{'x'})
	c.Close()
	expectWake(t, woke, false)
	// A new socket, possibly with the same descriptor number, parks normally.
	c2, s2 := tcpPair(t)
	woke2, _ := parkCh(t, p, s2)
	c2.Write([]byte{'y'})
	expectWake(t, woke2, true)
}

func TestIdlePollerCloseWakesAll(t *testing.T) {
	p, err := newIdlePoller(0)
	if err != nil {
		t.Fatal(err)
	}
	_, s1 := tcpPair(t)
	_, s2 := tcpPair(t)
	w1, _ := parkCh(t, p, s1)
	w2, _ := parkCh(t, p, s2)
	p.close()
	expectWake(t, w1, true)
	expectWake(t, w2, true)
	rc, _ := s1.SyscallConn()
	if _, err := p.park(rc, func() {}); err == nil {
		t.Fatal("park after close succeeded")
	}
}
