// Package bench is the benchmark harness behind `make bench`. It builds a two-node netns testbed
// (package testbed) and measures, in one run and alternating between them, four ways of carrying
// a client pod's TCP traffic to a server pod on the other node:
//
//   - direct: no proxy, the network baseline;
//   - mesh: the node proxies, with in-pod redirection and HBONE mTLS between the nodes;
//   - tls: a minimal Go crypto/tls relay pair (package bench/relay), one relay process per node;
//   - stunnel: an stunnel mTLS relay pair, one stunnel process per node (skipped if stunnel is not
//     installed).
//
// The figures (throughput with 1 and 8 streams, round-trip latency percentiles, new connections
// per second, CPU seconds per GB per proxy, proxy RSS with a large config and per idle connection)
// are gathered over several rounds; results.json holds each figure's median per path, detail.json
// every sample with its spread. Claims are made only as ratios against a baseline measured in the
// same run (direct for traffic, tls for CPU).
//
// The load generators and servers run inside this process with sockets created in the pods'
// namespaces (package bench/load); the tls relays run as subprocesses of this binary (its "relay"
// command, see RelayMain) so that their CPU time can be read from /proc.
//
// # Concurrency
//
// Run measures one thing at a time; Results is not safe for concurrent use.
package bench
