// Package testbed builds a simulated Kubernetes-like cluster out of Linux network namespaces on the
// local machine, so the node proxy can be run end to end without a real cluster.
//
// # Topology
//
// A "fabric" network namespace holds a bridge. Each node is a network namespace with eth0 (a veth to
// the fabric bridge) addressed from [Config.NodeSubnet] (172.30.0.<i>/16 by default), IP forwarding
// on, and routes to the other nodes' pod subnets through their node IPs. Each node also has a bridge
// that is the gateway (10.40.<i>.1/24 by default) of its pods. A pod is a network namespace with eth0
// (a veth to its node's bridge), an address 10.40.<i>.<n>/24 and a default route through the gateway.
// Service VIPs (e.g. from 10.96.0.0/16) are routed nowhere: only the proxy's redirection makes them
// answer.
//
// # Networks and east-west gateways
//
// When the nodes name several networks ([NodeSpec.Network]), pods of one network cannot reach the
// pods or nodes of another: an iptables chain in every node drops what the node's pods send there
// (and counts it), except packets to the other network's east-west gateway and that gateway's
// replies (counted too; [Cluster.CrossNetworkCounters], [Cluster.ResetCrossNetworkCounters]). A
// gateway ([Config.Gateways], at most one per network) is a pod-like namespace on a node of its
// network with an address from the node's pod subnet, not enrolled; with proxies it runs the proxy
// binary with PROXY_MODE=east-west-gateway and the identity istio-system/istio-eastwestgateway
// ([Cluster.StopGateway], [Cluster.StartGateway]; log next to the node proxies', see
// [Cluster.GatewayLog]). Each network then has a local config file of its own
// ([Cluster.NetworkConfigPath]), loaded by its node proxies (NETWORK=<network>) and its gateway:
// what istiod sends a cluster on that network — its own pods, the other networks' gateway
// workloads, one split-horizon workload (no address, networkGateway, capacity) per service with
// endpoints behind another network's gateway, service VIPs on its network and subjectAltNames of
// every endpoint. Remote pods are not listed. A single-network cluster keeps one shared file.
// Several networks are not available with [Config.ControlPlane].
//
// Every namespace, bridge and file carries a run ID (e.g. "ztb1a2b"); a state directory
// (/run/ztunnel-testbed/<run ID>/ by default) records the owning process so that [Cleanup] can remove
// the leftovers of a crashed run. [Cluster.Close] removes everything a run created.
//
// # Proxies and the node agent
//
// When [Config.Ztunnel] names a proxy binary, [New] starts one proxy per node inside the node's
// namespace and plays istio-cni for it: a ZDS server per node (the proxy connects to it through
// INPOD_UDS) and, for each enrolled pod, the in-pod redirection rules plus the AddWorkload message
// (see package redirect/nodeagent). The proxies share one local config file (LOCAL_XDS_PATH; one per
// network with several networks) that the testbed regenerates from its model of pods and services after every change, and a CA generated once
// per run (CA_CERT, CA_KEY). After each change the testbed waits until every proxy logged
// `msg="local config loaded"` with `sha256=<hex of the file>` (or, with Config.ConfigSettle, for a
// fixed time), so a call that changes the config returns once the proxies use it.
//
// # Control plane mode
//
// With [Config.ControlPlane] the proxies are configured as by istiod instead: a fake istiod
// ([Istiod]: delta ADS from package workload/xdstest and the Istio CA from certs/catest on one
// plaintext gRPC server) listens in the fabric namespace on the last address of the node subnet
// (172.30.255.254:15012 by default), and every proxy gets XDS_ADDRESS, CA_ADDRESS, AUTH_TOKEN (a
// token file per node), POD_NAME, POD_NAMESPACE and INSTANCE_IP instead of the local config and CA
// files. Pods, services and policies are converted to istio.workload.Address and
// istio.security.Authorization resources and the changes pushed; a change returns once every
// proxy's xDS stream ACKed responses that leave it holding exactly the resources pushed last.
//
// # Authorization policies
//
// [Cluster.SetPolicy] and [Cluster.DeletePolicy] manage L4 authorization policies in both modes
// (the local config's policies list, or Authorization resources); [PodSpec.Policies] names the
// WorkloadSelector policies of a pod.
//
// # Traffic policy
//
// [Cluster.SetTrafficPolicy] sets Istio DestinationRules and VirtualServices (istio.io/api specs,
// [TrafficPolicy]) in local config mode: they are checked as the proxies compile them and written
// as the destinationRules and virtualServices keys of every network's config. Pods carry no
// explicit workload labels: subsets select by the labels workload discovery maps (version and app
// are the canonical revision and name; the topology labels are the locality, cluster and network).
//
// # Pods
//
// [Pod] offers helloworld and echo servers and HTTP/TCP clients whose sockets are created inside the
// pod's namespace, unmarked, so the pod's redirection applies to them as to a real application.
// [Pod.StopServers] kills a pod's servers while the config still lists it, as an application
// that died.
//
// # Scenarios
//
// The acceptance scenarios of shared/SCENARIOS.md, each printed step by step and returning an
// error that lists every expectation that did not hold: RunS1 (locality failover) on a three-node
// cluster; RunS2 (two networks joined by east-west gateways, double HBONE) on two two-node
// clusters; RunS3 (cross-region 90/10 distribution, failover by removal and by death under
// outlier detection), RunS4 (S4 at L4: a 90/10 canary by weighted TCP routes to subsets) and
// RunS5 (failover between clusters by failoverPriority and outlier detection, on S2's topology).
// Weighted splits are checked over 1 000 connections against a two-sided 99.9% binomial bound.
//
// # Concurrency
//
// A [Cluster]'s methods are safe for concurrent use. Everything here needs root (CAP_NET_ADMIN and
// CAP_SYS_ADMIN), except rendering the local config.
package testbed
