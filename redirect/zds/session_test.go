package zds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// fakeHandler records calls as strings and fails Adds of uids in fail.
type fakeHandler struct {
	mu     sync.Mutex // guards events, inodes
	events []string
	inodes map[string]uint64
	fail   map[string]string
	notify chan string // optional; receives every event
}

func (h *fakeHandler) record(ev string) {
	h.mu.Lock()
	h.events = append(h.events, ev)
	h.mu.Unlock()
	if h.notify != nil {
		h.notify <- ev
	}
}

func (h *fakeHandler) AddWorkload(_ context.Context, uid string, info WorkloadInfo, ns *redirect.NetNS) error {
	h.mu.Lock()
	if h.inodes == nil {
		h.inodes = map[string]uint64{}
	}
	h.inodes[uid] = ns.Inode()
	h.mu.Unlock()
	ns.Close()
	h.record(fmt.Sprintf("add %s %s/%s/%s", uid, info.Namespace, info.Name, info.ServiceAccount))
	if msg, ok := h.fail[uid]; ok {
		return errors.New(msg)
	}
	return nil
}

func (h *fakeHandler) DelWorkload(_ context.Context, uid string) error {
	h.record("del " + uid)
	return nil
}

func (h *fakeHandler) Reconcile(_ context.Context, uids map[string]bool) error {
	keys := make([]string, 0, len(uids))
	for k := range uids {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h.record("reconcile " + strings.Join(keys, ","))
	return nil
}

func (h *fakeHandler) Inode(uid string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inodes[uid]
}

func (h *fakeHandler) Events() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addReq(uid string, info *zdsapi.WorkloadInfo) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: uid, WorkloadInfo: info}}}
}

func keepReq(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: uid}}}
}

func delReq(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}}
}

func snapReq() *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}
}

var testInfo = &zdsapi.WorkloadInfo{Name: "p", Namespace: "ns", ServiceAccount: "sa"}

func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// step is one datagram in a session: the request, which file to attach
// ("netns", "other", or ""), and what must come back.
type step struct {
	data      []byte
	attach    string
	wantNack  string // substring; "" means ACK
	wantFatal bool
}

func TestSessionHandle(t *testing.T) {
	m := func(r *zdsapi.WorkloadRequest) []byte { return mustMarshal(t, r) }
	for _, tc := range []struct {
		name       string
		fail       map[string]string
		steps      []step
		wantEvents []string
	}{
		{
			name: "snapshot then updates",
			steps: []step{
				{data: m(addReq("a", testInfo)), attach: "netns"},
				{data: m(keepReq("k"))},
				{data: m(snapReq())},
				{data: m(addReq("b", testInfo)), attach: "netns"},
				{data: m(delReq("a"))},
			},
			wantEvents: []string{"add a ns/p/sa", "reconcile a,k", "add b ns/p/sa", "del a"},
		},
		{
			name:       "del before snapshot removes from the set",
			steps:      []step{{data: m(addReq("a", testInfo)), attach: "netns"}, {data: m(delReq("a"))}, {data: m(snapReq())}},
			wantEvents: []string{"add a ns/p/sa", "del a", "reconcile "},
		},
		{
			name:       "handler error is a nack, not fatal",
			fail:       map[string]string{"a": "proxy start failed"},
			steps:      []step{{data: m(addReq("a", testInfo)), attach: "netns", wantNack: "proxy start failed"}, {data: m(snapReq())}},
			wantEvents: []string{"add a ns/p/sa", "reconcile a"},
		},
		{name: "keep after snapshot", steps: []step{{data: m(snapReq())}, {data: m(keepReq("k")), wantNack: "after SnapshotSent", wantFatal: true}}, wantEvents: []string{"reconcile "}},
		{name: "duplicate snapshot", steps: []step{{data: m(snapReq())}, {data: m(snapReq()), wantNack: "duplicate", wantFatal: true}}, wantEvents: []string{"reconcile "}},
		{name: "add without info", steps: []step{{data: m(addReq("a", nil)), attach: "netns", wantNack: "without workload_info", wantFatal: true}}},
		{name: "add without uid", steps: []step{{data: m(addReq("", testInfo)), attach: "netns", wantNack: "without uid", wantFatal: true}}},
		{name: "add without fd", steps: []step{{data: m(addReq("a", testInfo)), wantNack: "0 fds", wantFatal: true}}},
		{name: "add with non-netns fd", steps: []step{{data: m(addReq("a", testInfo)), attach: "other", wantNack: "not a namespace", wantFatal: true}}},
		{name: "del with fd", steps: []step{{data: m(delReq("a")), attach: "netns", wantNack: "takes none", wantFatal: true}}},
		{name: "empty payload", steps: []step{{data: nil, wantNack: "unknown or empty payload", wantFatal: true}}},
		{name: "unknown field", steps: []step{{data: []byte{0x4a, 0x00}, wantNack: "unknown or empty payload", wantFatal: true}}},
		{name: "garbage", steps: []step{{data: []byte{0xff, 0xff, 0xff}, wantNack: "decode", wantFatal: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &fakeHandler{fail: tc.fail}
			s := newSession(h)
			var attached []*os.File
			for i, st := range tc.steps {
				var files []*os.File
				switch st.attach {
				case "netns":
					files = []*os.File{openFile(t, "/proc/self/ns/net")}
				case "other":
					files = []*os.File{openFile(t, "/proc/self/status")}
				}
				attached = append(attached, files...)
				nack, err := s.handle(context.Background(), st.data, files)
				if st.wantNack == "" && nack != "" || !strings.Contains(nack, st.wantNack) {
					t.Errorf("step %d: nack = %q, want %q", i, nack, st.wantNack)
				}
				if got := err != nil && isProtocolError(err); got != st.wantFatal {
					t.Errorf("step %d: protocol error = %v (%v), want %v", i, got, err, st.wantFatal)
				}
			}
			if diff := cmp.Diff(tc.wantEvents, h.Events()); diff != "" {
				t.Errorf("handler events (-want +got):\n%s", diff)
			}
			// Every file passed in was consumed (closed by us or by the handler).
			for _, f := range attached {
				if _, err := f.Stat(); err == nil {
					t.Errorf("file %s was not closed", f.Name())
				}
			}
		})
	}
}

// FuzzZDSMessage feeds arbitrary bytes to the client's message handling.
func FuzzZDSMessage(f *testing.F) {
	for _, r := range []*zdsapi.WorkloadRequest{addReq("a", testInfo), addReq("b", nil), keepReq("k"), delReq("a"), snapReq()} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte{0xff}, false)
	f.Fuzz(func(t *testing.T, data []byte, snapshotDone bool) {
		s := newSession(&fakeHandler{})
		s.snapshotDone = snapshotDone
		nack, err := s.handle(context.Background(), data, nil)
		if err != nil && nack == "" {
			t.Errorf("protocol error %v without nack text", err)
		}
		if err != nil && !isProtocolError(err) {
			t.Errorf("handle returned a non-protocol error: %v", err)
		}
	})
}
