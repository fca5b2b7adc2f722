package controlplane

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ErrNoAddress is returned by ParseAddress and Dial for an empty address.
var ErrNoAddress = errors.New("no control plane address configured")

// Address is a parsed control plane address.
type Address struct {
	TLS      bool   // https (the default) rather than plaintext http
	Host     string // without port or brackets
	HostPort string // what is dialed, e.g. "istiod.istio-system.svc:15012" or "[::1]:15010"
}

// ParseAddress parses "https://host:port" (TLS), "http://host:port" (plaintext) or "host:port"
// (= https). A missing port means 443 (https) or 80 (http). User info, paths other than "/",
// queries and fragments are rejected.
func ParseAddress(s string) (Address, error) {
	if s == "" {
		return Address{}, ErrNoAddress
	}
	raw := s
	if !strings.Contains(s, "://") {
		raw = "https://" + s
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Address{}, fmt.Errorf("address %q: %w", s, err)
	}
	var a Address
	port := ""
	switch u.Scheme {
	case "https":
		a.TLS, port = true, "443"
	case "http":
		port = "80"
	default:
		return Address{}, fmt.Errorf("address %q: scheme %q not supported, want https or http", s, u.Scheme)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return Address{}, fmt.Errorf("address %q: want scheme://host:port with no user, path, query or fragment", s)
	}
	a.Host = u.Hostname()
	if a.Host == "" {
		return Address{}, fmt.Errorf("address %q: no host", s)
	}
	if p := u.Port(); p != "" {
		port = p
	} else if strings.HasSuffix(u.Host, ":") {
		return Address{}, fmt.Errorf("address %q: empty port", s)
	}
	a.HostPort = net.JoinHostPort(a.Host, port)
	return a, nil
}
