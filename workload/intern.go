package workload

import (
	"encoding/binary"
	"slices"
)

// interner shares equal values decoded from one local config or one xDS response, so that a
// snapshot of N workloads holds one copy of each namespace, node, trust domain, service
// account, network, cluster id, service key and port mapping instead of N. It is used by one
// goroutine and lives only while its input is decoded; nothing it hands out is modified
// afterwards (snapshot contents are immutable), which is what makes sharing safe. The maps
// passed to it are never retained, so callers may reuse them as scratch space.
//
// The zero value is not usable; use newInterner or newCopyingInterner. A nil *interner shares
// nothing: its methods return their argument.
type interner struct {
	strs     map[string]string
	ports    map[string]map[uint16]uint16            // canonical encoding -> shared port map
	services map[string]map[string]map[uint16]uint16 // canonical encoding -> shared services map
	buf      []byte                                  // scratch for port map encodings
	sbuf     []byte                                  // scratch for services map encodings
	keys     []string                                // scratch for sorting service keys

	// Set by newCopyingInterner: new strings are copied into blocks of arena, so that the
	// strings a snapshot keeps sit together instead of pinning the memory of the (much
	// larger) parse they came from. Nil: strings are kept as passed.
	arena *stringArena
}

func newInterner() *interner {
	return &interner{
		strs:     make(map[string]string),
		ports:    make(map[string]map[uint16]uint16),
		services: make(map[string]map[string]map[uint16]uint16),
	}
}

// newCopyingInterner returns an interner that copies each new string into an arena (see
// stringArena). Use it when the input is decoded as a whole and dropped afterwards, like a
// local config: the strings of one input then share a few blocks.
func newCopyingInterner() *interner {
	in := newInterner()
	in.arena = &stringArena{}
	return in
}

// str returns the shared copy of s.
func (in *interner) str(s string) string {
	if in == nil || s == "" {
		return s
	}
	if c, ok := in.strs[s]; ok {
		return c
	}
	if in.arena != nil {
		s = in.arena.clone(s)
	}
	in.strs[s] = s
	return s
}

// nameOf returns name, sharing the bytes of uid when uid ends in "/<name>" (as Kubernetes
// uids "<cluster>//<group/version>/<Kind>/<namespace>/<name>" do): the name then costs no
// allocation of its own.
func (*interner) nameOf(uid, name string) string {
	if name != "" && len(uid) > len(name) && uid[len(uid)-len(name)-1] == '/' && uid[len(uid)-len(name):] == name {
		return uid[len(uid)-len(name):]
	}
	return name
}

// portMap returns the shared map equal to m (a copy of m the first time). A nil m stays nil;
// an empty one becomes the shared empty map.
func (in *interner) portMap(m map[uint16]uint16) map[uint16]uint16 {
	if in == nil || m == nil {
		return m
	}
	in.buf = appendPorts(in.buf[:0], m)
	if c, ok := in.ports[string(in.buf)]; ok {
		return c
	}
	shared := make(map[uint16]uint16, len(m))
	for k, v := range m {
		shared[k] = v
	}
	in.ports[string(in.buf)] = shared
	return shared
}

// serviceMap returns the shared map equal to m (service key -> port map), with its keys and
// port maps shared too. A nil m stays nil. Replicas of one deployment have equal maps, so they
// end up holding one.
func (in *interner) serviceMap(m map[string]map[uint16]uint16) map[string]map[uint16]uint16 {
	if in == nil || m == nil {
		return m
	}
	keys := in.keys[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	enc := in.sbuf[:0]
	for _, k := range keys { // each entry: key length, key, port map (self-delimiting)
		enc = binary.AppendUvarint(enc, uint64(len(k)))
		enc = append(enc, k...)
		enc = appendPorts(enc, m[k])
	}
	clear(keys)
	in.keys, in.sbuf = keys, enc
	if c, ok := in.services[string(enc)]; ok {
		return c
	}
	shared := make(map[string]map[uint16]uint16, len(m))
	for k, ports := range m {
		shared[in.str(k)] = in.portMap(ports)
	}
	in.services[string(enc)] = shared
	return shared
}

// appendPorts appends a canonical encoding of m: the pair count, then the pairs sorted by
// service port.
func appendPorts(b []byte, m map[uint16]uint16) []byte {
	var small [8]uint16
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint16(b, k)
		b = binary.BigEndian.AppendUint16(b, m[k])
	}
	return b
}
