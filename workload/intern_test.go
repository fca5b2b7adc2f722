package workload

import (
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

func samePtr(a, b any) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func TestInternerSharesEqualMaps(t *testing.T) {
	in := newInterner()
	p1 := in.portMap(map[uint16]uint16{80: 8080, 443: 8443})
	p2 := in.portMap(map[uint16]uint16{443: 8443, 80: 8080})
	p3 := in.portMap(map[uint16]uint16{80: 8081, 443: 8443})
	if !samePtr(p1, p2) {
		t.Errorf("equal port maps not shared")
	}
	if samePtr(p1, p3) || p3[80] != 8081 {
		t.Errorf("different port maps shared: %v", p3)
	}
	if e1, e2 := in.portMap(map[uint16]uint16{}), in.portMap(map[uint16]uint16{}); e1 == nil || !samePtr(e1, e2) {
		t.Errorf("empty port maps: got %v, %v, want one shared non-nil map", e1, e2)
	}
	if in.portMap(nil) != nil {
		t.Errorf("nil port map became non-nil")
	}

	s1 := in.serviceMap(map[string]map[uint16]uint16{"ns/a": {80: 8080}, "ns/b": {}})
	s2 := in.serviceMap(map[string]map[uint16]uint16{"ns/b": {}, "ns/a": {80: 8080}})
	s3 := in.serviceMap(map[string]map[uint16]uint16{"ns/a": {80: 8080}})
	// Keys whose concatenation is ambiguous without the length prefix.
	s4 := in.serviceMap(map[string]map[uint16]uint16{"ns/ab": {}})
	s5 := in.serviceMap(map[string]map[uint16]uint16{"ns/a": {}, "b": {}})
	if !samePtr(s1, s2) {
		t.Errorf("equal service maps not shared")
	}
	if samePtr(s1, s3) || samePtr(s4, s5) {
		t.Errorf("different service maps shared")
	}
	if !samePtr(s1["ns/a"], s3["ns/a"]) {
		t.Errorf("port maps inside service maps not shared")
	}
	want := map[string]map[uint16]uint16{"ns/a": {80: 8080}, "ns/b": {}}
	if diff := cmp.Diff(want, s2); diff != "" {
		t.Errorf("shared service map (-want +got):\n%s", diff)
	}
}

func TestInternerNilSharesNothing(t *testing.T) {
	var in *interner
	m := map[uint16]uint16{1: 2}
	if got := in.portMap(m); !samePtr(got, m) {
		t.Errorf("nil interner replaced the port map")
	}
	if got := in.str("x"); got != "x" {
		t.Errorf("nil interner str = %q", got)
	}
}

func TestInternerNameOf(t *testing.T) {
	var in *interner
	for _, tc := range []struct{ uid, name, want string }{
		{"c1//v1/Pod/ns/pod-a", "pod-a", "pod-a"},
		{"c1//v1/Pod/ns/xpod-a", "pod-a", "pod-a"}, // not after a '/': a copy is kept
		{"pod-a", "pod-a", "pod-a"},
		{"c1//v1/Pod/ns/", "", ""},
		{"u", "longer-than-uid", "longer-than-uid"},
	} {
		if got := in.nameOf(tc.uid, tc.name); got != tc.want {
			t.Errorf("nameOf(%q, %q) = %q, want %q", tc.uid, tc.name, got, tc.want)
		}
	}
}

// TestLocalConfigSharesReplicaMaps checks that workloads of one service parsed from a local
// config share their services map and namespace string.
func TestLocalConfigSharesReplicaMaps(t *testing.T) {
	cfg, err := ParseLocalConfig("test", bigLocalConfig(4, 2))
	if err != nil {
		t.Fatal(err)
	}
	w0, w2 := cfg.Workloads[0], cfg.Workloads[2] // both endpoints of service 0
	if !samePtr(w0.Services, w2.Services) {
		t.Errorf("workloads of one service do not share their services map")
	}
	if samePtr(w0.Services, cfg.Workloads[1].Services) {
		t.Errorf("workloads of different services share a services map")
	}
	if diff := cmp.Diff(map[string]map[uint16]uint16{"synth-0/svc-0.synth-0.svc.cluster.local": {80: 8080}}, w0.Services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	if w0.Name != "wl-0" || w2.Name != "wl-2" {
		t.Errorf("names = %q, %q", w0.Name, w2.Name)
	}
}

// The interner never keeps the maps it is given: callers reuse them as scratch.
func TestInternerCopiesMaps(t *testing.T) {
	in := newInterner()
	scratch := map[uint16]uint16{80: 8080}
	shared := in.portMap(scratch)
	clear(scratch)
	scratch[443] = 8443
	if diff := cmp.Diff(map[uint16]uint16{80: 8080}, shared); diff != "" {
		t.Errorf("shared port map changed with its argument (-want +got):\n%s", diff)
	}
	if got := in.portMap(map[uint16]uint16{80: 8080}); !samePtr(got, shared) {
		t.Errorf("equal port map not shared after the argument was reused")
	}
}

func TestCopyingInterner(t *testing.T) {
	in := newCopyingInterner()
	src := strings.Clone("ns-a")
	a := in.str(src)
	b := in.str(strings.Clone("ns-a"))
	if a != "ns-a" || b != "ns-a" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Errorf("str: got %q and %q, want one shared %q", a, b, "ns-a")
	}
	if unsafe.StringData(a) == unsafe.StringData(src) {
		t.Errorf("str kept its argument's bytes, want a copy in the arena")
	}
	long := strings.Repeat("x", stringBlock+1) // longer than a block
	if got := in.str(long); got != long {
		t.Errorf("long string: got %d bytes, want %d", len(got), len(long))
	}
	if got := in.str("after"); got != "after" || a != "ns-a" {
		t.Errorf("after a long string: got %q (and earlier %q)", got, a)
	}
}

func TestStringArenaKeepsEarlierStrings(t *testing.T) {
	var a stringArena
	var got []string
	var want []string
	for i := range 5000 { // several blocks
		s := strings.Repeat(string(rune('a'+i%26)), 1+i%13)
		want = append(want, s)
		got = append(got, a.clone(s))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("arena strings (-want +got):\n%s", diff)
	}
}

func TestSlabClone(t *testing.T) {
	var s slab[int]
	if got := s.clone(nil); got != nil {
		t.Errorf("clone(nil) = %v, want nil", got)
	}
	if got := s.clone([]int{}); got == nil || len(got) != 0 {
		t.Errorf("clone(empty) = %#v, want empty non-nil", got)
	}
	a := s.clone([]int{1, 2})
	b := s.clone([]int{3})
	a = append(a, 99) // must not write into b
	big := s.clone(make([]int, slabBlock+5))
	if diff := cmp.Diff([]int{3}, b); diff != "" || len(big) != slabBlock+5 || cap(b) != 1 {
		t.Errorf("b = %v (cap %d), big len %d; appending to a wrote into b? (-want +got):\n%s", b, cap(b), len(big), diff)
	}
	_ = a
}
