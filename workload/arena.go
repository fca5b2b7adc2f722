package workload

import "strings"

// Bulk allocation for the long-lived parts of a decoded config. Decoding allocates several
// times the size of its result in short-lived garbage (YAML nodes, field paths, scratch maps).
// Small long-lived objects allocated one by one in between end up scattered over many
// partly-used heap spans, which stay resident after the garbage is collected. Carving them
// out of a few large blocks instead keeps the result dense.

// stringArena copies strings into shared blocks. Blocks are append-only strings.Builder
// buffers: bytes once written are never modified, so the strings handed out stay valid and
// immutable. A block stays alive while any string in it does, so use an arena only for
// strings that live and die together (one decoded config). The zero value is ready to use.
type stringArena struct {
	b strings.Builder // current block
}

// stringBlock is the size of an arena block. Longer strings get a block of their own.
const stringBlock = 16 << 10

// clone returns a copy of s inside the arena.
func (a *stringArena) clone(s string) string {
	if a.b.Cap()-a.b.Len() < len(s) {
		a.b = strings.Builder{} // start a new block; the old one stays as it is
		a.b.Grow(max(stringBlock, len(s)))
	}
	a.b.WriteString(s)
	all := a.b.String()
	return all[len(all)-len(s):]
}

// slab hands out slices carved from shared blocks of T, for many small slices that live and
// die together (the IPs of the workloads of one config). The slices it returns have no spare
// capacity, so appending to one never writes into another. The zero value is ready to use.
type slab[T any] struct {
	block []T // current block; its unused capacity is what is left to hand out
}

// slabBlock is the number of elements of a slab block. Longer slices get a block of their own.
const slabBlock = 1024

// clone returns a copy of src carved from the current block. An empty src gives an empty,
// non-nil slice when src is non-nil (nil stays nil); it does not point into src.
func (s *slab[T]) clone(src []T) []T {
	if len(src) == 0 {
		if src == nil {
			return nil
		}
		return []T{}
	}
	if cap(s.block)-len(s.block) < len(src) {
		s.block = make([]T, 0, max(slabBlock, len(src)))
	}
	start := len(s.block)
	s.block = append(s.block, src...)
	return s.block[start:len(s.block):len(s.block)]
}
