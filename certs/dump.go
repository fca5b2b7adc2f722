package certs

import (
	"crypto/x509"
	"slices"
	"strings"
	"time"
)

// CertState is one identity's entry in the config_dump "certificates" list.
type CertState struct {
	Identity string              // SPIFFE ID
	State    string              // "Available" | "Initializing" | "Unavailable: <err>"
	Chain    []*x509.Certificate // leaf first; empty until a certificate was issued
	Roots    []*x509.Certificate
}

// Dump returns the state of every identity the manager tracks, sorted by identity. Identities dropped
// for disuse are not listed, even before Run has freed them. An expired certificate whose renewal has
// not succeeded is reported Unavailable but still listed.
func (m *Manager) Dump() []CertState {
	m.mu.Lock()
	now := m.cfg.Now()
	out := make([]CertState, 0, len(m.entries))
	for id, e := range m.entries {
		if m.staleLocked(e, now) {
			continue
		}
		s := CertState{Identity: id.String()}
		switch {
		case usable(e.cert, now):
			s.State = "Available"
		case e.err != nil:
			s.State = "Unavailable: " + e.err.Error()
		case e.cert != nil:
			s.State = "Unavailable: certificate expired at " + e.cert.NotAfter.Format(time.RFC3339)
		default:
			s.State = "Initializing"
		}
		if e.cert != nil {
			s.Chain = slices.Clone(e.cert.Chain)
			s.Roots = slices.Clone(e.cert.Roots)
		}
		out = append(out, s)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b CertState) int { return strings.Compare(a.Identity, b.Identity) })
	return out
}
