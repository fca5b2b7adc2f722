package workload

import (
	"net/netip"
	"slices"
	"strings"
)

// WorkloadByUID returns the workload with the given uid, or nil.
func (s *Snapshot) WorkloadByUID(uid string) *Workload {
	i, ok := slices.BinarySearchFunc(s.workloads, uid, func(w *Workload, uid string) int { return strings.Compare(w.UID, uid) })
	if !ok {
		return nil
	}
	return s.workloads[i]
}

// WorkloadByAddr returns the workload with IP ip on network, or nil. HostNetwork workloads
// are never found this way. When several workloads share the address, a pod (uid containing
// "//Pod/") wins, then an HBONE workload, then the smallest uid.
func (s *Snapshot) WorkloadByAddr(network string, ip netip.Addr) *Workload {
	addrs := s.byAddr[network]
	i, ok := slices.BinarySearchFunc(addrs, ip.Unmap(), func(e addrEntry, ip netip.Addr) int { return e.addr.Compare(ip) })
	if !ok {
		return nil
	}
	return addrs[i].w
}

// ServiceByVIP returns the service with VIP ip on network, or nil. Among several services
// with that exact VIP a canonical one wins, then the first by key. If no service has the
// exact VIP, the service with the longest matching CIDR VIP is returned (canonical first,
// then by key).
func (s *Snapshot) ServiceByVIP(network string, ip netip.Addr) *Service {
	ip = ip.Unmap()
	if svc := s.svcByVIP[NetworkAddress{Network: network, Addr: ip}]; svc != nil {
		return svc
	}
	for _, c := range s.cidrVIPs {
		if c.prefix.Network == network && c.prefix.Prefix.Contains(ip) {
			return c.svc
		}
	}
	return nil
}

// ServiceByHost returns the service namespace/hostname, or nil.
func (s *Snapshot) ServiceByHost(namespace, hostname string) *Service {
	return s.svcByKey[namespace+"/"+hostname]
}

// ServiceByHostname returns the service named hostname in whatever namespace (a canonical one
// first, then the first in namespace/hostname order), or nil: how a network gateway resolves the
// "hostname:port" authority of a double-HBONE tunnel.
func (s *Snapshot) ServiceByHostname(hostname string) *Service { return s.svcByHost[hostname] }

// WorkloadsOnNode returns the workloads on node, sorted by uid. The slice is shared: do not
// modify it.
func (s *Snapshot) WorkloadsOnNode(node string) []*Workload { return s.byNode[node] }

// FindWorkload returns the workload matching the pod info the CNI sends (ZDS): namespace,
// name and service account ("" means DefaultServiceAccount), on node unless node is "".
// With several matches the smallest uid wins. It returns nil if nothing matches.
func (s *Snapshot) FindWorkload(node, namespace, name, serviceAccount string) *Workload {
	if serviceAccount == "" {
		serviceAccount = DefaultServiceAccount
	}
	for _, w := range s.byIdent[identityKey{namespace, serviceAccount}] {
		if w.Name == name && (node == "" || w.Node == node) {
			return w
		}
	}
	return nil
}

// Workloads returns all workloads sorted by uid. The slice is shared: do not modify it.
func (s *Snapshot) Workloads() []*Workload { return s.workloads }

// Services returns all services sorted by hostname, then namespace. The slice is shared: do
// not modify it.
func (s *Snapshot) Services() []*Service { return s.services }

// Policies returns all policies sorted by key. The slice is shared: do not modify it.
func (s *Snapshot) Policies() []*Policy { return s.policies }

// PolicyByKey returns the policy "namespace/name", or nil.
func (s *Snapshot) PolicyByKey(key string) *Policy { return s.polByKey[key] }

// PoliciesFor returns the policies that apply to w: the Namespace-scoped policies of its
// namespace, the Global policies, and the policies named in w.AuthorizationPolicies that
// exist (missing keys are skipped). Each policy appears once. The result is freshly
// allocated.
func (s *Snapshot) PoliciesFor(w *Workload) []*Policy {
	nsPols, global := s.polByNS[w.Namespace], s.polByNS[""]
	out := make([]*Policy, 0, len(nsPols)+len(global)+len(w.AuthorizationPolicies))
	out = append(out, nsPols...)
	out = append(out, global...)
	selected := len(out)
	for _, key := range w.AuthorizationPolicies {
		p := s.polByKey[key]
		if p == nil || p.Scope == PolicyScopeGlobal ||
			(p.Scope == PolicyScopeNamespace && p.Namespace == w.Namespace) {
			continue // missing, or already in out
		}
		if !slices.Contains(out[selected:], p) {
			out = append(out, p)
		}
	}
	return out
}
