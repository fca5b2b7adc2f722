package xdstest

import (
	"net/netip"
	"strconv"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// Batch collects changes that are pushed together: one response per type per stream.
type Batch struct {
	s       *Server
	changes []change
}

type change struct {
	typeURL, name string
	res           proto.Message // nil = delete
}

// Set adds or updates a resource in the batch. res may be an *anypb.Any, sent as is (to send
// bytes that do not decode, or a wrong type); any other message is wrapped in an Any. A
// message that cannot be marshaled is logged and skipped.
func (b *Batch) Set(typeURL, name string, res proto.Message) {
	b.changes = append(b.changes, change{typeURL, name, res})
}

// Delete removes a resource in the batch; deleting a missing name still pushes the removal.
func (b *Batch) Delete(typeURL, name string) {
	b.changes = append(b.changes, change{typeURL: typeURL, name: name})
}

// SetWorkload sets the Address resource of w, named by its uid.
func (b *Batch) SetWorkload(w *workloadapi.Workload) {
	b.Set(TypeAddress, w.GetUid(), &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}})
}

// SetService sets the Address resource of svc, named "namespace/hostname".
func (b *Batch) SetService(svc *workloadapi.Service) {
	b.Set(TypeAddress, svc.GetNamespace()+"/"+svc.GetHostname(), &workloadapi.Address{Type: &workloadapi.Address_Service{Service: svc}})
}

// SetAuthorization sets the Authorization resource p, named "namespace/name".
func (b *Batch) SetAuthorization(p *security.Authorization) {
	b.Set(TypeAuthorization, p.GetNamespace()+"/"+p.GetName(), p)
}

// Batch runs fn to collect changes, then applies them and pushes them at once.
func (s *Server) Batch(fn func(b *Batch)) {
	b := &Batch{s: s}
	fn(b)
	s.apply(b.changes)
}

// Set adds or updates one resource (see Batch.Set) and pushes it with a new version to every
// stream subscribed to it.
func (s *Server) Set(typeURL, name string, res proto.Message) {
	s.Batch(func(b *Batch) { b.Set(typeURL, name, res) })
}

// SetMany sets several resources of one type in a single push.
func (s *Server) SetMany(typeURL string, res map[string]proto.Message) {
	s.Batch(func(b *Batch) {
		for name, r := range res {
			b.Set(typeURL, name, r)
		}
	})
}

// Delete removes one resource and pushes the removal to every stream subscribed to it.
func (s *Server) Delete(typeURL, name string) {
	s.Batch(func(b *Batch) { b.Delete(typeURL, name) })
}

// SetWorkload, SetService and SetAuthorization set one resource; see the Batch methods.
func (s *Server) SetWorkload(w *workloadapi.Workload) { s.Batch(func(b *Batch) { b.SetWorkload(w) }) }

// SetService sets the Address resource of svc, named "namespace/hostname".
func (s *Server) SetService(svc *workloadapi.Service) { s.Batch(func(b *Batch) { b.SetService(svc) }) }

// SetAuthorization sets the Authorization resource p, named "namespace/name".
func (s *Server) SetAuthorization(p *security.Authorization) {
	s.Batch(func(b *Batch) { b.SetAuthorization(p) })
}

// apply stores changes and queues one response per type on each stream that wants some of
// them.
func (s *Server) apply(changes []change) {
	type delta struct {
		set     map[string]*entry
		removed map[string]bool
	}
	byType := map[string]*delta{}
	var order []string
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range changes {
		d := byType[c.typeURL]
		if d == nil {
			d = &delta{set: map[string]*entry{}, removed: map[string]bool{}}
			byType[c.typeURL] = d
			order = append(order, c.typeURL)
		}
		if s.resources[c.typeURL] == nil {
			s.resources[c.typeURL] = map[string]*entry{}
		}
		if c.res == nil {
			delete(s.resources[c.typeURL], c.name)
			delete(d.set, c.name)
			d.removed[c.name] = true
			continue
		}
		body, ok := c.res.(*anypb.Any)
		if !ok {
			var err error
			if body, err = anypb.New(c.res); err != nil {
				s.log.Error("xdstest: cannot marshal resource; skipped", "type", c.typeURL, "name", c.name, "error", err)
				continue
			}
		}
		s.version++
		e := &entry{version: "v" + strconv.FormatUint(s.version, 10), body: body, aliases: aliasesOf(c.res)}
		s.resources[c.typeURL][c.name] = e
		d.set[c.name] = e
		delete(d.removed, c.name)
	}
	for st := range s.streams {
		for _, typeURL := range order {
			sub := st.subs[typeURL]
			if sub == nil {
				continue
			}
			d := byType[typeURL]
			resp := &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL}
			for name, e := range d.set {
				if sub.wants(name) {
					resp.Resources = append(resp.Resources, e.resource(name, nil))
				}
			}
			for name := range d.removed {
				if sub.wants(name) {
					resp.RemovedResources = append(resp.RemovedResources, name)
				}
			}
			if len(resp.Resources)+len(resp.RemovedResources) > 0 {
				s.enqueueLocked(st, resp)
			}
		}
	}
}

// aliasesOf returns the on-demand keys an Address answers to besides its name: "network/ip"
// for each workload IP or service VIP.
func aliasesOf(res proto.Message) []string {
	a, ok := res.(*workloadapi.Address)
	if !ok {
		return nil
	}
	var out []string
	if w := a.GetWorkload(); w != nil {
		for _, b := range w.GetAddresses() {
			if s := ipString(b); s != "" {
				out = append(out, w.GetNetwork()+"/"+s)
			}
		}
	}
	if svc := a.GetService(); svc != nil {
		for _, na := range svc.GetAddresses() {
			if s := ipString(na.GetAddress()); s != "" {
				out = append(out, na.GetNetwork()+"/"+s)
			}
		}
	}
	return out
}

// ipString formats a raw 4- or 16-byte address, or returns "" for other lengths.
func ipString(b []byte) string {
	ip, ok := netip.AddrFromSlice(b)
	if !ok {
		return ""
	}
	return ip.Unmap().String()
}
