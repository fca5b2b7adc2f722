package zds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"

	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// Handler is implemented by the proxy (the in-pod workload manager). The
// client calls it sequentially, never concurrently. A returned error is sent
// to the node agent as a NACK with the error's text; the connection stays up.
type Handler interface {
	// AddWorkload starts (or keeps) the proxy for pod uid, whose network
	// namespace is ns. The handler owns ns whatever it returns. Adding a uid
	// that is already running with the same namespace (ns.Same) must be a
	// no-op; a different namespace replaces the old one. The client does not
	// track namespaces, so this comparison is the handler's job.
	AddWorkload(ctx context.Context, uid string, info WorkloadInfo, ns *redirect.NetNS) error
	// DelWorkload stops the proxy for uid (the pod is gone). Unknown uids
	// should not be an error.
	DelWorkload(ctx context.Context, uid string) error
	// Reconcile is called once per connection, when the node agent's
	// snapshot is complete, with every uid added or kept on this connection
	// so far; the handler removes pods not in uids. uids is the handler's to keep.
	Reconcile(ctx context.Context, uids map[string]bool) error
}

// protocolError marks a violation after which the client NACKs and reconnects.
type protocolError struct{ err error }

func (e *protocolError) Error() string { return "zds protocol error: " + e.err.Error() }
func (e *protocolError) Unwrap() error { return e.err }

func protoErrorf(format string, args ...any) error {
	return &protocolError{fmt.Errorf(format, args...)}
}

// session is the client's state for one connection.
type session struct {
	h            Handler
	snapshotDone bool
	uids         map[string]bool // added or kept since the connection started
}

func newSession(h Handler) *session {
	return &session{h: h, uids: map[string]bool{}}
}

// handle processes one request datagram and the files that came with it
// (always consumed: passed to the handler or closed). It returns the ack
// text ("" = ACK) and, for protocol violations, a *protocolError after
// which the connection must be dropped (the ack text then describes it).
func (s *session) handle(ctx context.Context, data []byte, files []*os.File) (nack string, err error) {
	defer func() { closeFiles(files) }() // whatever was not handed over
	var req zdsapi.WorkloadRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		return s.violation(protoErrorf("decode WorkloadRequest: %w", err))
	}
	if _, isAdd := req.Payload.(*zdsapi.WorkloadRequest_Add); !isAdd && len(files) != 0 {
		return s.violation(protoErrorf("%d fds with a message that takes none", len(files)))
	}
	switch p := req.Payload.(type) {
	case *zdsapi.WorkloadRequest_Add:
		uid := p.Add.GetUid()
		switch {
		case uid == "":
			return s.violation(protoErrorf("AddWorkload without uid"))
		case p.Add.GetWorkloadInfo() == nil:
			return s.violation(protoErrorf("AddWorkload %s without workload_info", uid))
		case len(files) != 1:
			return s.violation(protoErrorf("AddWorkload %s with %d fds, want 1", uid, len(files)))
		}
		f := files[0]
		files = nil // NetNSFromFile owns f now, also on error
		ns, err := redirect.NetNSFromFile(f)
		if err != nil {
			return s.violation(protoErrorf("AddWorkload %s: %w", uid, err))
		}
		s.uids[uid] = true // known even if the handler fails: it retries, the pod is not stale
		return errText(s.h.AddWorkload(ctx, uid, infoFromProto(p.Add.GetWorkloadInfo()), ns)), nil
	case *zdsapi.WorkloadRequest_Keep:
		uid := p.Keep.GetUid()
		switch {
		case s.snapshotDone:
			return s.violation(protoErrorf("KeepWorkload %s after SnapshotSent", uid))
		case uid == "":
			return s.violation(protoErrorf("KeepWorkload without uid"))
		}
		s.uids[uid] = true
		return "", nil
	case *zdsapi.WorkloadRequest_Del:
		uid := p.Del.GetUid()
		if uid == "" {
			return s.violation(protoErrorf("DelWorkload without uid"))
		}
		delete(s.uids, uid)
		return errText(s.h.DelWorkload(ctx, uid)), nil
	case *zdsapi.WorkloadRequest_SnapshotSent:
		if s.snapshotDone {
			return s.violation(protoErrorf("duplicate SnapshotSent"))
		}
		s.snapshotDone = true
		return errText(s.h.Reconcile(ctx, maps.Clone(s.uids))), nil
	default:
		return s.violation(protoErrorf("WorkloadRequest with unknown or empty payload"))
	}
}

func (s *session) violation(err error) (string, error) {
	return err.Error(), err
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	if msg := err.Error(); msg != "" {
		return msg
	}
	return "error"
}

func isProtocolError(err error) bool {
	var pe *protocolError
	return errors.As(err, &pe)
}
