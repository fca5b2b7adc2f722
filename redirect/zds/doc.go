// Package zds implements the ztunnel discovery service (ZDS) protocol, on
// which the node agent (istio-cni) hands each ambient pod's network namespace
// to the node proxy.
//
// Transport: an AF_UNIX SOCK_SEQPACKET socket (default path
// /var/run/ztunnel/ztunnel.sock); the node agent listens ([Server]) and the
// proxy connects ([Client]). Every message is one protobuf datagram of at
// most 1024 bytes from istio.io/istio/pkg/zdsapi. The proxy first sends
// ZdsHello{V1}. The agent then sends WorkloadRequests one at a time, each
// answered by a WorkloadResponse{Ack{error}} (empty error = ACK):
// AddWorkload (with the pod's netns fd as the only SCM_RIGHTS payload) for
// every known pod, KeepWorkload for pods whose netns it cannot open,
// SnapshotSent once, and afterwards AddWorkload/DelWorkload as pods come and
// go. Keep after the snapshot, a second snapshot, Add without workload info,
// an unexpected fd, an empty datagram carrying fds and undecodable or
// truncated datagrams are protocol errors: the proxy NACKs (the text cut to
// fit one datagram) and reconnects. Descriptors that came with a rejected
// message are closed.
//
// The agent drops a proxy that sends a bad hello (or none within 5 s), does
// not answer a request within 5 s (as istio-cni), sends an ACK no request is
// waiting for, or sends descriptors; the proxy reconnects and gets a
// snapshot. A pod whose AddWorkload would not fit one datagram is refused.
//
// # Concurrency
//
// Client.Run calls its Handler from a single goroutine, never concurrently.
// Server methods are safe for concurrent use; each proxy connection carries
// one request at a time.
package zds
