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
	// The workload indexes are sorted slices rather than maps where a snapshot has one entry
	// per workload: binary search costs a few comparisons more than hashing, and a third to
	// half of the memory (a map of 10 000 entries has room for 16 384).
	workloads []*Workload                 // sorted by uid; looked up by binary search
	byAddr    map[string][]addrEntry      // network -> its IPs, sorted; not HostNetwork
	byNode    map[string][]*Workload      // node -> workloads, sorted by uid
	byIdent   map[identityKey][]*Workload // (namespace, service account) -> workloads, by uid
	services  []*Service                  // sorted by hostname, then namespace
	svcByKey  map[string]*Service         // "ns/hostname" -> service
	svcByHost map[string]*Service         // hostname -> its service (canonical first, then key order)
	svcByVIP  map[NetworkAddress]*Service // exact VIP -> preferred service
	cidrVIPs  []cidrVIP                   // CIDR VIPs, most preferred first
	policies  []*Policy                   // sorted by key
	polByKey  map[string]*Policy          // "ns/name" -> policy
	polByNS   map[string][]*Policy        // namespace -> Namespace-scoped policies; "" -> Global ones
	traffic   *TrafficIndex               // DestinationRules and VirtualServices; nil: none
}

// addrEntry maps one IP of a network (the network is the key of its list) to the preferred
// workload with that IP.
type addrEntry struct {
	addr netip.Addr
	w    *Workload
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
		byAddr:    make(map[string][]addrEntry),
		services:  make([]*Service, 0, len(services)),
		svcByKey:  make(map[string]*Service, len(services)),
		svcByHost: make(map[string]*Service, len(services)),
		svcByVIP:  make(map[NetworkAddress]*Service, len(services)),
		policies:  make([]*Policy, 0, len(policies)),
		polByKey:  make(map[string]*Policy, len(policies)),
		polByNS:   make(map[string][]*Policy),
	}
	if err := s.addWorkloads(workloads); err != nil {
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	joining, joins := joinCounts(s.workloads)
	if err := s.addServices(services, joining); err != nil {
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	if err := s.addPolicies(policies); err != nil {
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	s.joinEndpoints(joins)
	s.indexWorkloads()
	s.indexServices()
	return s, nil
}

func (s *Snapshot) addWorkloads(workloads []*Workload) error {
	seen := make(map[string]struct{}, len(workloads)) // uids; dropped once the snapshot is built
	for i, w := range workloads {
		if w == nil {
			return fmt.Errorf("workloads[%d]: nil workload", i)
		}
		if w.UID == "" {
			return fmt.Errorf("workloads[%d] (name %q): empty uid", i, w.Name)
		}
		if _, dup := seen[w.UID]; dup {
			return fmt.Errorf("workloads[%d] (uid %q): duplicate uid", i, w.UID)
		}
		w, err := normalizeWorkload(w)
		if err != nil {
			return fmt.Errorf("workloads[%d] (uid %q): %w", i, w.UID, err)
		}
		seen[w.UID] = struct{}{}
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
// service's endpoint map is allocated once at its final size; total is the sum.
func joinCounts(workloads []*Workload) (perKey map[string]int, total int) {
	perKey = make(map[string]int)
	for _, w := range workloads {
		for key := range w.Services {
			perKey[key]++
		}
		total += len(w.Services)
	}
	return perKey, total
}

func (s *Snapshot) addServices(services []*Service, joining map[string]int) error {
	copies := make([]Service, len(services)) // one allocation for all the copies
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
		svc := &copies[i]
		*svc = *in
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
		s.svcByKey[key] = svc
		s.services = append(s.services, svc)
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

// joinEndpoints adds one endpoint per (workload, service it names) to the service copies;
// joins is the number of such pairs.
func (s *Snapshot) joinEndpoints(joins int) {
	eps := make([]Endpoint, 0, joins) // one allocation for all the joined endpoints
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
			eps = append(eps, Endpoint{WorkloadUID: w.UID, Port: ports, Status: w.Status})
			svc.Endpoints[w.UID] = &eps[len(eps)-1]
		}
	}
}

// indexWorkloads builds byNode, byIdent and byAddr. Each is one slice of all its entries,
// allocated once and cut into per-key sub-slices.
func (s *Snapshot) indexWorkloads() {
	s.byNode = groupWorkloads(s.workloads, func(a, b *Workload) int { return strings.Compare(a.Node, b.Node) },
		func(w *Workload) string { return w.Node })
	s.byIdent = groupWorkloads(s.workloads, func(a, b *Workload) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.ServiceAccount, b.ServiceAccount))
	}, func(w *Workload) identityKey { return identityKey{w.Namespace, w.ServiceAccount} })

	n := 0
	for _, w := range s.workloads {
		if w.NetworkMode != NetworkModeHostNetwork { // its IPs are the node's
			n += len(w.IPs)
		}
	}
	addrs := make([]addrEntry, 0, n)
	for _, w := range s.workloads { // uid order
		if w.NetworkMode != NetworkModeHostNetwork {
			for _, ip := range w.IPs {
				addrs = append(addrs, addrEntry{addr: ip, w: w})
			}
		}
	}
	// By network and IP; among workloads sharing an address the preferred one first (the
	// stable sort keeps uid order among equal ranks), then keep only that one.
	slices.SortStableFunc(addrs, func(a, b addrEntry) int {
		return cmp.Or(strings.Compare(a.w.Network, b.w.Network), a.addr.Compare(b.addr), cmp.Compare(addrRank(b.w), addrRank(a.w)))
	})
	addrs = slices.CompactFunc(addrs, func(a, b addrEntry) bool { return a.w.Network == b.w.Network && a.addr == b.addr })
	for start := 0; start < len(addrs); {
		network := addrs[start].w.Network
		end := start + 1
		for end < len(addrs) && addrs[end].w.Network == network {
			end++
		}
		s.byAddr[network] = addrs[start:end:end]
		start = end
	}
}

// groupWorkloads returns workloads (sorted by uid) grouped by key, each group sorted by uid.
// compare orders by key. All groups share one slice.
func groupWorkloads[K comparable](workloads []*Workload, compare func(a, b *Workload) int, key func(*Workload) K) map[K][]*Workload {
	sorted := slices.Clone(workloads)
	slices.SortStableFunc(sorted, compare) // stable: uid order within a key
	groups := make(map[K][]*Workload)
	for start := 0; start < len(sorted); {
		end := start + 1
		for end < len(sorted) && compare(sorted[start], sorted[end]) == 0 {
			end++
		}
		groups[key(sorted[start])] = sorted[start:end:end]
		start = end
	}
	return groups
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
		if cur, ok := s.svcByHost[svc.Hostname]; !ok || (svc.Canonical && !cur.Canonical) {
			s.svcByHost[svc.Hostname] = svc
		}
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
