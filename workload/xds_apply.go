package workload

import (
	"fmt"
	"maps"
	"strings"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// xdsState is what the client holds: the accepted resources by name, the version of each as
// the server last sent it, and the Store they are published to. Owned by the Run goroutine.
//
// Resource names are the model's keys: workload uid, service "namespace/hostname", policy
// "namespace/name"; a resource whose name differs from its key is rejected. Keeping the maps
// by name makes a removal exact, and a workload that arrives before its service is simply
// kept: NewSnapshot joins it once the service is there.
type xdsState struct {
	store     *Store
	workloads map[string]*Workload
	services  map[string]*Service
	policies  map[string]*Policy
	known     map[string]map[string]string // type URL -> name -> version
}

func newXDSState(store *Store) *xdsState {
	return &xdsState{
		store:     store,
		workloads: map[string]*Workload{},
		services:  map[string]*Service{},
		policies:  map[string]*Policy{},
		known:     map[string]map[string]string{TypeAddress: {}, TypeAuthorization: {}},
	}
}

// applyResult is the outcome of one response.
type applyResult struct {
	nack   string   // "" = ACK; else "<name>: <reason>; ..."
	served []string // names the response carried (resources, their aliases, removals)
}

// undo restores one map entry; applied in reverse order when NewSnapshot rejects a push.
type undo func()

// apply applies one response: each resource is converted on its own, bad ones are reported in
// the NACK while the rest applies; then a new Snapshot is built and published. If building it
// fails, the whole push is rolled back and NACKed. Versions are recorded only for what was
// accepted.
func (s *xdsState) apply(resp *discovery.DeltaDiscoveryResponse) applyResult {
	typeURL := resp.GetTypeUrl()
	var res applyResult
	for _, r := range resp.GetResources() {
		res.served = append(res.served, r.GetName())
		res.served = append(res.served, r.GetAliases()...)
	}
	res.served = append(res.served, resp.GetRemovedResources()...)
	if typeURL != TypeAddress && typeURL != TypeAuthorization {
		res.nack = fmt.Sprintf("type %q was not subscribed", typeURL)
		return res
	}

	var rejects []string
	var undos []undo
	accepted := make(map[string]string, len(resp.GetResources())) // name -> version
	in := newInterner()                                           // shares strings and port maps within this response
	for _, r := range resp.GetResources() {
		u, err := s.applyResource(typeURL, r, in)
		if err != nil {
			rejects = append(rejects, fmt.Sprintf("%s: %v", r.GetName(), err))
			delete(accepted, r.GetName()) // a later copy of the name was bad
			continue
		}
		undos = append(undos, u)
		accepted[r.GetName()] = r.GetVersion()
	}
	for _, name := range resp.GetRemovedResources() {
		if u := s.remove(typeURL, name); u != nil {
			undos = append(undos, u)
		}
	}
	if len(undos) > 0 {
		snap, err := NewSnapshot(s.snapshotInput())
		if err != nil {
			for i := len(undos) - 1; i >= 0; i-- {
				undos[i]()
			}
			rejects = append(rejects, fmt.Sprintf("push rejected, state unchanged: %v", err))
			res.nack = strings.Join(rejects, "; ")
			return res
		}
		s.store.Replace(snap)
	}
	known := s.known[typeURL]
	maps.Copy(known, accepted)
	for _, name := range resp.GetRemovedResources() {
		delete(known, name)
	}
	res.nack = strings.Join(rejects, "; ")
	return res
}

// applyResource decodes, converts and stores one resource, returning how to undo that.
func (s *xdsState) applyResource(typeURL string, r *discovery.Resource, in *interner) (undo, error) {
	name := r.GetName()
	a := r.GetResource()
	if a == nil {
		return nil, fmt.Errorf("no resource body")
	}
	if a.GetTypeUrl() != typeURL {
		return nil, fmt.Errorf("resource type %q, want %q", a.GetTypeUrl(), typeURL)
	}
	if typeURL == TypeAuthorization {
		var x security.Authorization
		if err := proto.Unmarshal(a.GetValue(), &x); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		p, err := convertAuthorization(&x)
		if err != nil {
			return nil, err
		}
		if p.Key() != name {
			return nil, fmt.Errorf("name does not match the policy's namespace/name %q", p.Key())
		}
		return setEntry(s.policies, name, p), nil
	}
	var x workloadapi.Address
	if err := proto.Unmarshal(a.GetValue(), &x); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	w, svc, err := convertAddress(&x, in)
	if err != nil {
		return nil, err
	}
	if w != nil {
		if w.UID != name {
			return nil, fmt.Errorf("name does not match the workload uid %q", w.UID)
		}
		u1, u2 := setEntry(s.workloads, name, w), deleteEntry(s.services, name)
		return func() { u2(); u1() }, nil
	}
	if svc.Key() != name {
		return nil, fmt.Errorf("name does not match the service's namespace/hostname %q", svc.Key())
	}
	u1, u2 := setEntry(s.services, name, svc), deleteEntry(s.workloads, name)
	return func() { u2(); u1() }, nil
}

// remove deletes name (a workload uid, then a service key, for Address) and returns how to
// undo that, or nil if there was nothing to delete.
func (s *xdsState) remove(typeURL, name string) undo {
	if typeURL == TypeAuthorization {
		if _, ok := s.policies[name]; ok {
			return deleteEntry(s.policies, name)
		}
		return nil
	}
	if _, ok := s.workloads[name]; ok {
		return deleteEntry(s.workloads, name)
	}
	if _, ok := s.services[name]; ok {
		return deleteEntry(s.services, name)
	}
	return nil
}

// snapshotInput lists the current resources for NewSnapshot.
func (s *xdsState) snapshotInput() ([]*Workload, []*Service, []*Policy) {
	return mapValues(s.workloads), mapValues(s.services), mapValues(s.policies)
}

// knownVersions returns a copy of the versions held for typeURL.
func (s *xdsState) knownVersions(typeURL string) map[string]string {
	return maps.Clone(s.known[typeURL])
}

func mapValues[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// setEntry sets m[k] = v and returns how to restore the previous state.
func setEntry[V any](m map[string]V, k string, v V) undo {
	old, had := m[k]
	m[k] = v
	return func() {
		if had {
			m[k] = old
		} else {
			delete(m, k)
		}
	}
}

// deleteEntry deletes m[k] and returns how to restore it (a no-op if it was absent).
func deleteEntry[V any](m map[string]V, k string) undo {
	old, had := m[k]
	if !had {
		return func() {}
	}
	delete(m, k)
	return func() { m[k] = old }
}
