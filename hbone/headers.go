package hbone

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// Header names used on HBONE CONNECT requests and responses (lower case, as sent on the wire).
const (
	HeaderForwarded        = "forwarded"
	HeaderBaggage          = "baggage"
	HeaderTraceparent      = "traceparent"
	HeaderForwardedNetwork = "x-forwarded-network"
)

// maxAuthorityLen bounds an authority: a 253-byte DNS name, ':' and a 5-digit port, with brackets to spare.
const maxAuthorityLen = 261

// ParseAuthority parses a CONNECT :authority in authority form: "10.0.0.5:8080", "[fd00::5]:80" or
// "svc.ns.svc.cluster.local:80". It returns the host without brackets and the port (1-65535). It rejects
// an empty host, a missing or bad port, userinfo, IPv6 zones, unbracketed IPv6, spaces and other bytes
// that cannot appear in a host name.
func ParseAuthority(a string) (host string, port uint16, err error) {
	if a == "" {
		return "", 0, errors.New("parse authority: empty")
	}
	if len(a) > maxAuthorityLen {
		return "", 0, fmt.Errorf("parse authority: longer than %d bytes", maxAuthorityLen)
	}
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("parse authority %q: missing port", a)
	}
	host, portStr := a[:i], a[i+1:]
	port, err = parsePort(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("parse authority %q: %w", a, err)
	}
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", 0, fmt.Errorf("parse authority %q: unterminated '['", a)
		}
		host = host[1 : len(host)-1]
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", 0, fmt.Errorf("parse authority %q: bad IPv6 address in brackets", a)
		}
		return host, port, nil
	}
	if err := checkHostName(host); err != nil {
		return "", 0, fmt.Errorf("parse authority %q: %w", a, err)
	}
	return host, port, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 {
		return 0, errors.New("bad port")
	}
	v := 0
	for _, ch := range []byte(s) {
		if ch < '0' || ch > '9' {
			return 0, errors.New("bad port")
		}
		v = v*10 + int(ch-'0')
	}
	if v < 1 || v > 65535 {
		return 0, errors.New("port out of range")
	}
	return uint16(v), nil
}

// checkHostName accepts an IPv4 address or a DNS-style name: labels of letters, digits, '-' and '_',
// 1-63 bytes each, separated by dots, with an optional trailing dot.
func checkHostName(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return errors.New("bad host length")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("bad host label")
		}
		for _, ch := range []byte(label) {
			if !isAlnum(ch) && ch != '-' && ch != '_' {
				return fmt.Errorf("bad byte %q in host", ch)
			}
		}
	}
	return nil
}

func isAlnum(ch byte) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
}

// NewTraceparent returns a random W3C traceparent value "00-<32 hex trace id>-<16 hex parent id>-00".
func NewTraceparent() string {
	var b [24]byte
	for {
		_, _ = rand.Read(b[:]) // never fails (crypto/rand)
		// All-zero trace and parent ids are invalid.
		if !allZero(b[:16]) && !allZero(b[16:]) {
			break
		}
	}
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-00"
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Forwarded returns a forwarded header value (RFC 7239) naming the original client: `for="1.2.3.4:5678"`
// or, with a destination service host name, `for="1.2.3.4:5678";host=svc.ns.svc.cluster.local`. An
// invalid src is written as for=unknown.
func Forwarded(src netip.AddrPort, host string) string {
	v := "for=unknown"
	if src.IsValid() {
		v = `for="` + src.String() + `"`
	}
	if host != "" {
		v += ";host=" + tokenOrQuoted(host)
	}
	return v
}

// ForwardedHost returns the host= parameter of a forwarded header value, or "" if it is absent or the
// value is malformed. With several forwarded elements, the first host= wins.
func ForwardedHost(v string) string {
	p := forwardedParser{s: v}
	for {
		name, value, ok := p.next()
		if !ok {
			return ""
		}
		if strings.EqualFold(name, "host") {
			return value
		}
	}
}

// forwardedParser walks the name=value pairs of a forwarded header value (RFC 7239 §4).
type forwardedParser struct {
	s   string
	bad bool
}

// next returns the next pair; ok is false at the end or on malformed input.
func (p *forwardedParser) next() (name, value string, ok bool) {
	p.s = strings.TrimLeft(p.s, " \t;,")
	if p.s == "" || p.bad {
		return "", "", false
	}
	i := 0
	for i < len(p.s) && isTchar(p.s[i]) {
		i++
	}
	if i == 0 || i >= len(p.s) || p.s[i] != '=' {
		p.bad = true
		return "", "", false
	}
	name, p.s = p.s[:i], p.s[i+1:]
	if strings.HasPrefix(p.s, `"`) {
		var b strings.Builder
		for j := 1; j < len(p.s); j++ {
			switch ch := p.s[j]; {
			case ch == '"':
				p.s = p.s[j+1:]
				if !p.atSeparator() {
					return "", "", false
				}
				return name, b.String(), true
			case ch == '\\' && j+1 < len(p.s):
				j++
				b.WriteByte(p.s[j])
			case ch < ' ' && ch != '\t' || ch == 0x7f:
				p.bad = true
				return "", "", false
			default:
				b.WriteByte(ch)
			}
		}
		p.bad = true // unterminated quoted-string
		return "", "", false
	}
	j := 0
	for j < len(p.s) && isTchar(p.s[j]) {
		j++
	}
	value, p.s = p.s[:j], p.s[j:]
	if value == "" || !p.atSeparator() {
		return "", "", false
	}
	return name, value, true
}

// atSeparator checks that the rest starts with optional whitespace then ';', ',' or the end.
func (p *forwardedParser) atSeparator() bool {
	rest := strings.TrimLeft(p.s, " \t")
	if rest != "" && rest[0] != ';' && rest[0] != ',' {
		p.bad = true
		return false
	}
	return true
}

// isTchar reports whether ch is an RFC 9110 token character.
func isTchar(ch byte) bool {
	return isAlnum(ch) || strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0
}

func tokenOrQuoted(s string) string {
	token := s != ""
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			token = false
			break
		}
	}
	if token {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '"' || ch == '\\':
			b.WriteByte('\\')
			b.WriteByte(ch)
		case ch < ' ' && ch != '\t' || ch == 0x7f:
			// dropped: control bytes cannot appear in a header value
		default:
			b.WriteByte(ch)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// KV is one baggage member.
type KV struct {
	Key, Value string
}

// Baggage builds a W3C baggage header value "k1=v1,k2=v2" in the given order. Members with an empty
// value or a key that is not a token are skipped; values are percent-encoded where the W3C grammar
// requires it (ordinary Kubernetes names are sent unchanged).
func Baggage(kvs []KV) string {
	var b strings.Builder
	for _, kv := range kvs {
		if kv.Value == "" || !isToken(kv.Key) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv.Key)
		b.WriteByte('=')
		for i := 0; i < len(kv.Value); i++ {
			if ch := kv.Value[i]; isBaggageOctet(ch) {
				b.WriteByte(ch)
			} else {
				fmt.Fprintf(&b, "%%%02X", ch)
			}
		}
	}
	return b.String()
}

// ParseBaggage parses a W3C baggage header value into key/value pairs. Member properties (after ';')
// are ignored, values are percent-decoded, malformed members are skipped and the first occurrence of a
// key wins. It returns nil if there is no valid member.
func ParseBaggage(v string) map[string]string {
	var m map[string]string
	for member := range strings.SplitSeq(v, ",") {
		member, _, _ = strings.Cut(member, ";")
		key, value, ok := strings.Cut(member, "=")
		if !ok {
			continue
		}
		key = strings.Trim(key, " \t")
		value = strings.Trim(value, " \t")
		if !isToken(key) {
			continue
		}
		dec, err := url.PathUnescape(value)
		if err != nil {
			continue
		}
		if m == nil {
			m = make(map[string]string)
		}
		if _, dup := m[key]; !dup {
			m[key] = dec
		}
	}
	return m
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

// isBaggageOctet reports whether ch may appear unencoded in a baggage value (W3C baggage-octet).
func isBaggageOctet(ch byte) bool {
	if ch == '%' {
		return false // the escape character itself
	}
	return ch == 0x21 || ch >= 0x23 && ch <= 0x2b || ch >= 0x2d && ch <= 0x3a || ch >= 0x3c && ch <= 0x5b ||
		ch >= 0x5d && ch <= 0x7e
}
