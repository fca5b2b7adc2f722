package ztunnel

import (
	"testing"
)

func TestConnLimitsFor(t *testing.T) {
	for _, tc := range []struct {
		fd                  uint64
		maxIn, podIn        int
		wantMax, wantPerPod int
	}{
		{fd: 20000, wantMax: 8750, wantPerPod: 6561}, // headroom 2500
		{fd: 1024, wantMax: 256, wantPerPod: 192},    // headroom 512 at least
		{fd: 400, wantMax: 0, wantPerPod: 0},         // below the headroom: no derived cap
		{fd: 0, wantMax: 0, wantPerPod: 0},           // limit unknown
		{fd: 20000, maxIn: 100, wantMax: 100, wantPerPod: 75},
		{fd: 20000, maxIn: 100, podIn: 80, wantMax: 100, wantPerPod: 80},
		{fd: 20000, maxIn: -1, podIn: 10, wantMax: 0, wantPerPod: 10},
		{fd: 20000, podIn: -1, wantMax: 8750, wantPerPod: 0},
	} {
		gotMax, gotPod := connLimitsFor(tc.fd, tc.maxIn, tc.podIn)
		if gotMax != tc.wantMax || gotPod != tc.wantPerPod {
			t.Errorf("connLimitsFor(%d, %d, %d) = %d, %d; want %d, %d", tc.fd, tc.maxIn, tc.podIn, gotMax, gotPod, tc.wantMax, tc.wantPerPod)
		}
	}
}

// The caps count per pod and in total, refuse over either, and release makes room again.
func TestConnLimitsAcquire(t *testing.T) {
	p := newTestProxy(t, Config{})
	l := &connLimits{max: 3, perPod: 2}
	a, b := testPod(p), testPod(p)
	want := func(pod *podProxy, listener int, reason string) {
		t.Helper()
		if got := l.acquire(pod, listener); got != reason {
			t.Fatalf("acquire = %q, want %q", got, reason)
		}
	}
	want(a, listenerOutbound, "")
	want(a, listenerInbound, "")
	want(a, listenerHBONE, refusedPodLimit)
	want(b, listenerInbound, "")
	want(b, listenerInbound, refusedProxyLimit)
	l.release(a)
	want(b, listenerInbound, "")
	if got := l.refused[listenerHBONE][1].Load() + l.refused[listenerInbound][0].Load(); got != 2 || l.open.Load() != 3 {
		t.Errorf("refused %d, open %d; want 2 refusals and 3 open", got, l.open.Load())
	}
}
