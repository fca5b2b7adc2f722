package workload

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Snapshot is an immutable, internally consistent index over workloads, services and
// policies. The zero value is not usable; build one with NewSnapshot. All methods are safe
// for concurrent use and never modify the snapshot.
type Snapshot struct {
	workloads []*Workload                  // sorted by uid
	byUID     map[string]*Workload         // uid -> workload
	byAddr    map[NetworkAddress]*Workload // (network, IP) -> preferred workload; not HostNetwork
	byNode    map[string][]*Workload       // node -> workloads, sorted by uid
	byIdent   map[identityKey][]*Workload  // (namespace, service account) -> workloads, by uid
	services  []*Service                   // sorted by hostname, then namespace
	svcByKey  map[string]*Service          // "ns/hostname" -> service
	svcByVIP  map[NetworkAddress]*Service  // exact VIP -> preferred service
	cidrVIPs  []cidrVIP                    // CIDR VIPs, most preferred first
	policies  []*Policy                    // sorted by key
	polByKey  map[string]*Policy           // "ns/name" -> policy
	polByNS   map[string][]*Policy         // namespace -> Namespace-scoped policies; "" -> Global ones
}

type identityKey struct{ namespace, serviceAccount string }

type cidrVIP struct {
	prefix NetworkPrefix
	svc    *Service
}

// NewSnapshot validates its input and builds the indexes. It rejects nil entries, empty or
// duplicate workload uids, invalid workload IPs, services without namespace or hostname,
// duplicate service keys, invalid VIPs, invalid policies and duplicate policy keys.
//
// NewSnapshot takes ownership of the workloads and policies: callers must not modify them
// afterwards. Services are copied (their Endpoints are computed here), so the caller's
// Service values are left as they were. A workload whose trust domain, service account or
// cluster id is empty is replaced by a copy with the defaults filled in.
//
// Service endpoints are the service's own Endpoints plus one per workload whose Services map
// names the service (those win over an own endpoint with the same uid, and take the
// workload's status). Only endpoints whose status passes the service's health policy are
// kept. Workloads naming an unknown service are kept; they join it in a later snapshot.
func NewSnapshot(workloads []*Workload, services []*Service, policies []*Policy) (*Snapshot, error) {
	s := &Snapshot{
		workloads: make([]*Workload, 0, len(workloads)),
		byUID:     make(map[string]*Workload, len(workloads)),
		byAddr:    make(map[NetworkAddress]*Workload, len(workloads)),
		byNode:    make(map[string][]*Workload),
		byIdent:   make(map[identityKey][]*Workload),
		services:  make([]*Service, 0, len(services)),
		svcByKey:  make(map[string]*Service, len(services)),
		svcByVIP:  make(map[NetworkAddress]*Service, len(services)),
		policies:  make([]*Policy, 0, len(policies)),
		polByKey:  make(map[string]*Policy, len(policies)),
		polByNS:   make(map[string][]*Policy),
	}
	if err := s.addWorkloads(workloads); err != nil {
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	if err := s.addServices(services, joinCounts(s.workloads)); err != nil {
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	if err := s.addPolicies(policies); err != nil {
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	s.joinEndpoints()
	s.indexWorkloads()
	s.indexServices()
	return s, nil
}

func (s *Snapshot) addWorkloads(workloads []*Workload) error {
	for i, w := range workloads {
		if w == nil {
			return fmt.Errorf("workloads[%d]: nil workload", i)
		}
		if w.UID == "" {
			return fmt.Errorf("workloads[%d] (name %q): empty uid", i, w.Name)
		}
		if _, dup := s.byUID[w.UID]; dup {
			return fmt.Errorf("workloads[%d] (uid %q): duplicate uid", i, w.UID)
		}
		w, err := normalizeWorkload(w)
		if err != nil {
			return fmt.Errorf("workloads[%d] (uid %q): %w", i, w.UID, err)
		}
		s.byUID[w.UID] = w
		s.workloads = append(s.workloads, w)
	}
	slices.SortFunc(s.workloads, func(a, b *Workload) int { return strings.Compare(a.UID, b.UID) })
	return nil
}

// normalizeWorkload checks w's addresses and returns w, or a copy of it with defaults filled
// in and IPv4-mapped IPv6 addresses unmapped.
func normalizeWorkload(w *Workload) (*Workload, error) {
	needCopy := w.TrustDomain == "" || w.ServiceAccount == "" || w.ClusterID == ""
	for j, ip := range w.IPs {
		if !ip.IsValid() || ip.Zone() != "" {
			return w, fmt.Errorf("IPs[%d]: invalid IP %q", j, ip)
		}
		if ip.Is4In6() {
			needCopy = true
		}
	}
	if !needCopy {
		return w, nil
	}
	c := *w
	c.TrustDomain = cmp.Or(c.TrustDomain, DefaultTrustDomain)
	c.ServiceAccount = cmp.Or(c.ServiceAccount, DefaultServiceAccount)
	c.ClusterID = cmp.Or(c.ClusterID, DefaultClusterID)
	c.IPs = make([]netip.Addr, len(w.IPs))
	for j, ip := range w.IPs {
		c.IPs[j] = ip.Unmap()
	}
	return &c, nil
}

// joinCounts counts, per service key, the workloads naming that service, so that each
// service's endpoint map is allocated once at its final size.
func joinCounts(workloads []*Workload) map[string]int {
	n := make(map[string]int)
	for _, w := range workloads {
		for key := range w.Services {
			n[key]++
		}
	}
	return n
}

func (s *Snapshot) addServices(services []*Service, joining map[string]int) error {
	for i, in := range services {
		if in == nil {
			return fmt.Errorf("services[%d]: nil service", i)
		}
		if in.Namespace == "" || in.Hostname == "" {
			return fmt.Errorf("services[%d] (name %q): namespace and hostname must be set", i, in.Name)
		}
		key := in.Key()
		if _, dup := s.svcByKey[key]; dup {
			return fmt.Errorf("services[%d] (%q): duplicate service", i, key)
		}
		svc := *in
		for j, v := range in.VIPs {
			if !v.Addr.IsValid() || v.Addr.Zone() != "" {
				return fmt.Errorf("services[%d] (%q): vips[%d]: invalid VIP %q", i, key, j, v.Addr)
			}
			if v.Addr.Is4In6() {
				if &svc.VIPs[0] == &in.VIPs[0] {
					svc.VIPs = slices.Clone(in.VIPs) // don't write to the caller's slice
				}
				svc.VIPs[j].Addr = v.Addr.Unmap()
			}
		}
		for j, p := range in.CIDRVIPs {
			if !p.Prefix.IsValid() {
				return fmt.Errorf("services[%d] (%q): cidrVips[%d]: invalid CIDR %q", i, key, j, p.Prefix)
			}
		}
		svc.Endpoints = make(map[string]*Endpoint, len(in.Endpoints)+joining[key])
		for uid, ep := range in.Endpoints {
			if ep == nil {
				return fmt.Errorf("services[%d] (%q): endpoints[%q]: nil endpoint", i, key, uid)
			}
			uid = cmp.Or(ep.WorkloadUID, uid)
			if svc.allowsStatus(ep.Status) {
				svc.Endpoints[uid] = ep
			}
		}
		s.svcByKey[key] = &svc
		s.services = append(s.services, &svc)
	}
	slices.SortFunc(s.services, func(a, b *Service) int {
		return cmp.Or(strings.Compare(a.Hostname, b.Hostname), strings.Compare(a.Namespace, b.Namespace))
	})
	return nil
}

func (s *Snapshot) addPolicies(policies []*Policy) error {
	for i, p := range policies {
		if p == nil {
			return fmt.Errorf("policies[%d]: nil policy", i)
		}
		key := p.Key()
		if err := p.validate(); err != nil {
			return fmt.Errorf("policies[%d] (%q): %w", i, key, err)
		}
		if _, dup := s.polByKey[key]; dup {
			return fmt.Errorf("policies[%d] (%q): duplicate policy", i, key)
		}
		s.polByKey[key] = p
		s.policies = append(s.policies, p)
	}
	slices.SortFunc(s.policies, func(a, b *Policy) int { return strings.Compare(a.Key(), b.Key()) })
	for _, p := range s.policies {
		switch p.Scope {
		case PolicyScopeGlobal:
			s.polByNS[""] = append(s.polByNS[""], p)
		case PolicyScopeNamespace:
			s.polByNS[p.Namespace] = append(s.polByNS[p.Namespace], p)
		}
	}
	return nil
}

// joinEndpoints adds one endpoint per (workload, service it names) to the service copies.
func (s *Snapshot) joinEndpoints() {
	for _, w := range s.workloads {
		for key, ports := range w.Services {
			svc := s.svcByKey[key]
			if svc == nil {
				continue
			}
			if !svc.allowsStatus(w.Status) {
				delete(svc.Endpoints, w.UID) // the workload's own status overrides the service's copy
				continue
			}
			svc.Endpoints[w.UID] = &Endpoint{WorkloadUID: w.UID, Port: ports, Status: w.Status}
		}
	}
}

func (s *Snapshot) indexWorkloads() {
	for _, w := range s.workloads { // uid order, so every per-key list is sorted by uid
		s.byNode[w.Node] = append(s.byNode[w.Node], w)
		k := identityKey{w.Namespace, w.ServiceAccount}
		s.byIdent[k] = append(s.byIdent[k], w)
		if w.NetworkMode == NetworkModeHostNetwork {
			continue // its IPs are the node's
		}
		for _, ip := range w.IPs {
			a := NetworkAddress{Network: w.Network, Addr: ip}
			if cur, ok := s.byAddr[a]; !ok || addrRank(w) > addrRank(cur) {
				s.byAddr[a] = w
			}
		}
	}
}

// addrRank orders workloads sharing an IP: pods first, then HBONE workloads. Equal ranks
// keep the smallest uid (workloads are visited in uid order).
func addrRank(w *Workload) int {
	r := 0
	if strings.Contains(w.UID, "//Pod/") {
		r += 2
	}
	if w.Protocol == ProtocolHBONE {
		r++
	}
	return r
}

func (s *Snapshot) indexServices() {
	byKey := slices.Clone(s.services)
	slices.SortFunc(byKey, func(a, b *Service) int { return strings.Compare(a.Key(), b.Key()) })
	for _, svc := range byKey { // key order: on equal preference the first key wins
		for _, v := range svc.VIPs {
			if cur, ok := s.svcByVIP[v]; !ok || (svc.Canonical && !cur.Canonical) {
				s.svcByVIP[v] = svc
			}
		}
		for _, p := range svc.CIDRVIPs {
			s.cidrVIPs = append(s.cidrVIPs, cidrVIP{prefix: NetworkPrefix{p.Network, p.Prefix.Masked()}, svc: svc})
		}
	}
	// Longest prefix first, then canonical, then key order (stable sort keeps it).
	slices.SortStableFunc(s.cidrVIPs, func(a, b cidrVIP) int {
		if c := cmp.Compare(b.prefix.Prefix.Bits(), a.prefix.Prefix.Bits()); c != 0 {
			return c
		}
		switch {
		case a.svc.Canonical && !b.svc.Canonical:
			return -1
		case b.svc.Canonical && !a.svc.Canonical:
			return 1
		}
		return 0
	})
}
