package zds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// helloTimeout bounds how long a new proxy connection may take to say hello.
const helloTimeout = 5 * time.Second

// defaultAckTimeout bounds how long a proxy may take to answer a request, as
// istio-cni's read deadline: a proxy that does not answer in time is dropped
// (it reconnects and gets a snapshot), so a hung proxy cannot hold up the
// pods of the node.
const defaultAckTimeout = 5 * time.Second

// Server is the node agent's end of ZDS: it remembers the node's pods and
// tells every connected proxy about them.
//
// Lock order: a proxyConn's request slot (lockReq) before Server.mu. No I/O
// under Server.mu.
type Server struct {
	ln         *net.UnixListener
	path       string
	logger     *slog.Logger
	ackTimeout time.Duration // per request; defaultAckTimeout (tests shorten it before Run)

	mu      sync.Mutex         // guards pods, conns, changed
	pods    map[string]podInfo // by uid
	conns   []*proxyConn       // connected proxies that said hello, oldest first (last = active)
	changed chan struct{}      // closed and replaced whenever conns changes
}

type podInfo struct {
	info      WorkloadInfo
	netnsPath string
}

// Listen removes a stale socket file at path (creating its directory with
// mode 0700 if missing) and listens there for proxies. logger nil means
// slog.Default().
func Listen(path string, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("zds listen %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("zds listen %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("zds listen %s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("zds listen %s: %w", path, err)
	}
	return &Server{
		ln: ln, path: path, logger: logger, ackTimeout: defaultAckTimeout,
		pods: map[string]podInfo{}, changed: make(chan struct{}),
	}, nil
}

// Run accepts proxies until ctx is done, then closes the listener and all
// connections and returns nil. On each connection it reads the hello, sends
// AddWorkload for every known pod (KeepWorkload if its netns cannot be
// opened any more) and SnapshotSent.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.ln.Close()
			return fmt.Errorf("zds accept on %s: %w", s.path, err)
		}
		wg.Go(func() {
			err := s.serveConn(ctx, c)
			switch {
			case err == nil || ctx.Err() != nil:
			case errors.Is(err, io.EOF):
				// The proxy went away (restart, upgrade): it reconnects and gets a snapshot.
				s.logger.Info("zds proxy disconnected")
			default:
				s.logger.Warn("zds proxy connection ended", "error", err)
			}
		})
	}
}

// WaitSynced waits until at least n connected proxies have acknowledged their snapshot, i.e.
// have taken over every known pod (a new proxy during an upgrade), or ctx is done.
func (s *Server) WaitSynced(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		synced := 0
		for _, pc := range s.conns {
			if pc.synced {
				synced++
			}
		}
		changed := s.changed
		s.mu.Unlock()
		if synced >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("zds: %d of %d proxies synced: %w", synced, n, ctx.Err())
		}
	}
}

// Connected returns the number of connected proxies.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// AddPod records the pod and sends AddWorkload (with the netns at
// netnsPath) to every connected proxy, waiting for their ACKs. With no proxy
// connected it waits for one until ctx is done. A NACK makes it return an
// error containing the proxy's message; the pod stays recorded, so a
// reconnecting proxy gets it again in its snapshot. A proxy that does not
// answer within the ACK timeout (5 s) is dropped. A pod whose AddWorkload
// would not fit one datagram is refused, and not recorded.
func (s *Server) AddPod(ctx context.Context, uid string, info WorkloadInfo, netnsPath string) error {
	if uid == "" {
		return errors.New("zds add pod: empty uid")
	}
	req := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{
		Uid: uid, WorkloadInfo: info.proto(),
	}}}
	if err := checkSize(req); err != nil {
		return fmt.Errorf("zds add pod %.64s: %w", uid, err)
	}
	// Fail early (and record nothing) when the namespace does not exist.
	ns, err := redirect.OpenNetNS(netnsPath)
	if err != nil {
		return fmt.Errorf("zds add pod %s: %w", uid, err)
	}
	defer ns.Close()
	s.mu.Lock()
	s.pods[uid] = podInfo{info: info, netnsPath: netnsPath}
	s.mu.Unlock()
	return s.broadcast(ctx, "add pod "+uid, req, ns.Fd(), true)
}

// DelPod forgets the pod and sends DelWorkload to every connected proxy,
// waiting for their ACKs. With no proxy connected there is nothing to do.
func (s *Server) DelPod(ctx context.Context, uid string) error {
	req := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}}
	if err := checkSize(req); err != nil {
		// AddPod refused such a uid: there is nothing to delete.
		return fmt.Errorf("zds del pod %.64s: %w", uid, err)
	}
	s.mu.Lock()
	delete(s.pods, uid)
	s.mu.Unlock()
	return s.broadcast(ctx, "del pod "+uid, req, -1, false)
}

// broadcast sends req (with fd if >= 0) to all connected proxies. NACKs are returned as an
// error. If every proxy connection failed (or none exists) and wait is set,
// it waits for a new connection and tries again.
func (s *Server) broadcast(ctx context.Context, what string, req *zdsapi.WorkloadRequest, fd int, wait bool) error {
	for {
		s.mu.Lock()
		conns, changed := slices.Clone(s.conns), s.changed
		s.mu.Unlock()
		var nacks []error
		acked := 0
		for _, pc := range conns {
			ack, err := pc.send(ctx, req, fd)
			switch {
			case ctx.Err() != nil:
				return fmt.Errorf("zds %s: %w", what, ctx.Err())
			case err != nil:
				s.logger.Debug("zds send failed, proxy connection dropped", "op", what, "error", err)
			case ack != "":
				nacks = append(nacks, fmt.Errorf("proxy nacked: %s", ack))
			default:
				acked++
			}
		}
		if len(nacks) > 0 {
			return fmt.Errorf("zds %s: %w", what, errors.Join(nacks...))
		}
		if acked > 0 || !wait {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("zds %s: no proxy connected: %w", what, ctx.Err())
		}
	}
}

// serveConn handles one proxy connection until it ends or ctx is done.
func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) error {
	pc := newProxyConn(c, s.ackTimeout)
	defer pc.close(nil)
	stop := context.AfterFunc(ctx, func() { pc.close(ctx.Err()) })
	defer stop()
	if err := readHello(c); err != nil {
		return err
	}
	go pc.readLoop()

	// Register and take the snapshot atomically, holding the request slot so
	// that broadcasts to this connection come after the snapshot.
	if err := pc.lockReq(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	snap := make([]string, 0, len(s.pods))
	for uid := range s.pods {
		snap = append(snap, uid)
	}
	pods := make(map[string]podInfo, len(s.pods))
	for uid, p := range s.pods {
		pods[uid] = p
	}
	s.conns = append(s.conns, pc)
	s.notifyLocked()
	s.mu.Unlock()
	slices.Sort(snap)
	err := s.sendSnapshot(ctx, pc, snap, pods)
	pc.unlockReq()
	if err == nil {
		s.mu.Lock()
		pc.synced = true
		s.notifyLocked()
		s.mu.Unlock()
		s.logger.Info("zds proxy connected", "pods", len(snap))
		<-pc.done
		err = pc.err
	}
	pc.close(err)
	s.mu.Lock()
	s.conns = slices.DeleteFunc(s.conns, func(o *proxyConn) bool { return o == pc })
	s.notifyLocked()
	s.mu.Unlock()
	return err
}

// notifyLocked wakes waiters on changed. Requires s.mu held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// sendSnapshot sends the known pods and SnapshotSent. Requires pc's request slot.
func (s *Server) sendSnapshot(ctx context.Context, pc *proxyConn, uids []string, pods map[string]podInfo) error {
	for _, uid := range uids {
		ack, err := s.sendSnapshotPod(ctx, pc, uid, pods[uid])
		if err != nil {
			return fmt.Errorf("zds snapshot: %w", err)
		}
		if ack != "" {
			s.logger.Warn("zds proxy nacked pod in snapshot", "uid", uid, "error", ack)
		}
	}
	ack, err := pc.exchangeLocked(ctx, &zdsapi.WorkloadRequest{
		Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}},
	}, -1)
	if err != nil {
		return fmt.Errorf("zds snapshot: %w", err)
	}
	if ack != "" {
		s.logger.Warn("zds proxy nacked snapshot", "error", ack)
	}
	return nil
}

// sendSnapshotPod sends Add for one pod, or Keep when its netns cannot be
// opened (the proxy should keep what it has). Requires pc's request slot.
func (s *Server) sendSnapshotPod(ctx context.Context, pc *proxyConn, uid string, p podInfo) (string, error) {
	ns, err := redirect.OpenNetNS(p.netnsPath)
	if err != nil {
		s.logger.Warn("zds snapshot: netns unavailable, sending keep", "uid", uid, "error", err)
		return pc.exchangeLocked(ctx, &zdsapi.WorkloadRequest{
			Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: uid}},
		}, -1)
	}
	defer ns.Close()
	return pc.exchangeLocked(ctx, &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{
		Uid: uid, WorkloadInfo: p.info.proto(),
	}}}, ns.Fd())
}

func readHello(c *net.UnixConn) error {
	if err := c.SetReadDeadline(time.Now().Add(helloTimeout)); err != nil {
		return fmt.Errorf("zds hello: %w", err)
	}
	data, files, err := readPacket(c)
	if err != nil {
		return fmt.Errorf("zds hello: %w", err)
	}
	closeFiles(files)
	if len(files) != 0 {
		return errors.New("zds hello: unexpected fds")
	}
	var hello zdsapi.ZdsHello
	if err := proto.Unmarshal(data, &hello); err != nil {
		return fmt.Errorf("zds hello: decode: %w", err)
	}
	if hello.GetVersion() != zdsapi.Version_V1 {
		return fmt.Errorf("zds hello: unsupported version %v", hello.GetVersion())
	}
	return c.SetReadDeadline(time.Time{})
}
