package workload

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Decoders for the leaf values of the local config. Each takes a resolved node and its field
// path and returns a *ConfigError naming it.

// str decodes a string the config keeps: it is interned.
func (d *decoder) str(n *yaml.Node, field string) (string, error) {
	s, err := d.scalar(n, field)
	return d.in.str(s), err
}

// scalar decodes a string that is parsed further and not kept as is (an IP, an enum).
func (d *decoder) scalar(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", d.fail(n, field, "want a string, got %s", kindName(n))
	}
	if isNull(n) {
		return "", nil
	}
	return n.Value, nil
}

func (d *decoder) boolean(n *yaml.Node, field string) (bool, error) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		return false, d.fail(n, field, "want true or false, got %s", kindName(n))
	}
	return b, nil
}

// integer decodes an integer in [lo, hi]. Quoted digits are accepted too.
func (d *decoder) integer(n *yaml.Node, field string, lo, hi int64) (int64, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, d.fail(n, field, "want an integer, got %s", kindName(n))
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		var perr error
		if v, perr = strconv.ParseInt(strings.TrimSpace(n.Value), 10, 64); perr != nil {
			return 0, d.fail(n, field, "want an integer, got %s", kindName(n))
		}
	}
	if v < lo || v > hi {
		return 0, d.fail(n, field, "%d out of range [%d, %d]", v, lo, hi)
	}
	return v, nil
}

// port decodes a port number; 0 is allowed only if allowZero.
func (d *decoder) port(n *yaml.Node, field string, allowZero bool) (uint16, error) {
	lo := int64(1)
	if allowZero {
		lo = 0
	}
	v, err := d.integer(n, field, lo, math.MaxUint16)
	return uint16(v), err
}

func (d *decoder) uint32(n *yaml.Node, field string) (uint32, error) {
	v, err := d.integer(n, field, 0, math.MaxUint32)
	return uint32(v), err
}

func (d *decoder) ip(n *yaml.Node, field string) (netip.Addr, error) {
	s, err := d.scalar(n, field)
	if err != nil {
		return netip.Addr{}, err
	}
	a, perr := netip.ParseAddr(s)
	if perr != nil || a.Zone() != "" {
		return netip.Addr{}, d.fail(n, field, "invalid IP %q", s)
	}
	return a.Unmap(), nil
}

// cidr decodes "ip/bits"; a bare IP means a single-address prefix.
func (d *decoder) cidr(n *yaml.Node, field string) (netip.Prefix, error) {
	s, err := d.scalar(n, field)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !strings.Contains(s, "/") {
		if a, aerr := netip.ParseAddr(s); aerr == nil && a.Zone() == "" {
			a = a.Unmap()
			return netip.PrefixFrom(a, a.BitLen()), nil
		}
	} else if p, perr := netip.ParsePrefix(s); perr == nil {
		return p, nil
	}
	return netip.Prefix{}, d.fail(n, field, "invalid CIDR %q", s)
}

func (d *decoder) strList(n *yaml.Node, field string) ([]string, error) {
	var out []string
	err := d.seq(n, field, func(item *yaml.Node, f string) error {
		s, err := d.str(item, f)
		out = append(out, s)
		return err
	})
	return out, err
}

// portMap decodes {servicePort: targetPort}; keys are 1-65535, values 0-65535. The map
// returned is shared (see interner.portMap): callers must not modify it.
func (d *decoder) portMap(n *yaml.Node, field string) (map[uint16]uint16, error) {
	n, err := d.resolve(n, field)
	if err != nil {
		return nil, err
	}
	if n.Kind != yaml.MappingNode {
		return nil, d.fail(n, field, "want a mapping of port to port, got %s", kindName(n))
	}
	out := d.ports // scratch: the interner copies it
	clear(out)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, err := d.resolve(n.Content[i], field)
		if err != nil {
			return nil, err
		}
		k, err := d.port(kn, field, false)
		if err != nil {
			return nil, err
		}
		f := fmt.Sprintf("%s[%d]", field, k)
		if _, dup := out[k]; dup {
			return nil, d.fail(kn, f, "duplicate port")
		}
		vn, err := d.resolve(n.Content[i+1], f)
		if err != nil {
			return nil, err
		}
		if out[k], err = d.port(vn, f, true); err != nil {
			return nil, err
		}
	}
	return d.in.portMap(out), nil
}

// enum returns a handler decoding a string with parse into *dst.
func enum[E any](d *decoder, dst *E, parse func(string) (E, error)) handler {
	return func(v *yaml.Node, f string) error {
		s, err := d.scalar(v, f)
		if err != nil {
			return err
		}
		e, err := parse(s)
		if err != nil {
			return d.fail(v, f, "%w", err)
		}
		*dst = e
		return nil
	}
}

func (d *decoder) setStr(dst *string) handler {
	return func(v *yaml.Node, f string) (err error) { *dst, err = d.str(v, f); return err }
}

func (d *decoder) setBool(dst *bool) handler {
	return func(v *yaml.Node, f string) (err error) { *dst, err = d.boolean(v, f); return err }
}

func (d *decoder) setStrList(dst *[]string) handler {
	return func(v *yaml.Node, f string) (err error) { *dst, err = d.strList(v, f); return err }
}

func (d *decoder) setPortMap(dst *map[uint16]uint16) handler {
	return func(v *yaml.Node, f string) (err error) { *dst, err = d.portMap(v, f); return err }
}

// oneOf parses s as one of the given spellings.
func oneOf(what string, valid ...string) func(string) (string, error) {
	return func(s string) (string, error) {
		for _, v := range valid {
			if s == v {
				return v, nil // not s: v is static, s may pin the input
			}
		}
		return "", errors.New("invalid " + what + " " + strconv.Quote(s) + " (want one of " + strings.Join(valid, ", ") + ")")
	}
}

// emptyPorts returns the shared empty port map.
func (d *decoder) emptyPorts() map[uint16]uint16 {
	clear(d.ports)
	return d.in.portMap(d.ports)
}
