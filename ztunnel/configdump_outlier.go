package ztunnel

import (
	"cmp"
	"slices"
)

// outlierClusterJSON is one cluster in the "outlierDetection" list of /config_dump (not in the
// reference, which has no outlier detection).
type outlierClusterJSON struct {
	Service string `json:"service"` // "namespace/hostname"
	Subset  string `json:"subset"`  // "" for the whole service
	// The policy's times, defaults resolved.
	IntervalSecs  float64 `json:"intervalSeconds"`
	BaseEjectSecs float64 `json:"baseEjectionSeconds"`
	MaxEjectSecs  float64 `json:"maxEjectionSeconds"`

	EjectedHosts int               `json:"ejectedHosts"`
	Ejections    map[string]uint64 `json:"ejections"` // by reason, every reason present
	Overflow     uint64            `json:"overflow"`  // ejections refused by maxEjectionPercent
	NextCheck    string            `json:"nextCheck"` // RFC 3339: the next interval check
	Hosts        []outlierHostJSON `json:"hosts"`     // by uid, then port
}

// outlierHostJSON is one host of a cluster: its consecutive failure counters and ejection.
type outlierHostJSON struct {
	UID                    string `json:"uid"`
	Port                   uint16 `json:"port"`
	Consecutive5xx         uint32 `json:"consecutive5xx"`
	ConsecutiveGateway     uint32 `json:"consecutiveGateway"`
	ConsecutiveLocalOrigin uint32 `json:"consecutiveLocalOrigin"`
	Ejected                bool   `json:"ejected"`
	// EjectedUntil (RFC 3339, only while ejected) is when the ejection time is up: the host
	// returns at the cluster's first interval check from then on.
	EjectedUntil string `json:"ejectedUntil,omitempty"`
	TimesEjected uint64 `json:"timesEjected"`
	// EjectionBackoff is the multiplier of the base ejection time for the current or next
	// ejection (raised per ejection, lowered per interval check the host is not ejected).
	EjectionBackoff uint32 `json:"ejectionBackoff"`
	LastReport      string `json:"lastReport"` // RFC 3339
}

// dump returns the state of every cluster, by service then subset; an empty list for a nil
// detector.
func (d *outlierDetector) dump() []outlierClusterJSON {
	out := []outlierClusterJSON{}
	if d == nil {
		return out
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, cs := range d.clusters {
		s := &cs.settings
		cj := outlierClusterJSON{
			Service:       k.service,
			Subset:        k.subset,
			EjectedHosts:  cs.active,
			Ejections:     map[string]uint64{},
			Overflow:      cs.overflow,
			NextCheck:     rfc3339(cs.nextCheck),
			Hosts:         make([]outlierHostJSON, 0, len(cs.hosts)),
			IntervalSecs:  s.interval.Seconds(),
			BaseEjectSecs: s.baseEjection.Seconds(),
			MaxEjectSecs:  s.maxEjection.Seconds(),
		}
		for r, n := range cs.ejections {
			cj.Ejections[ejectReason(r).String()] = n
		}
		for h, hs := range cs.hosts {
			hj := outlierHostJSON{
				UID:                    h.uid,
				Port:                   h.port,
				Consecutive5xx:         hs.consecutive5xx,
				ConsecutiveGateway:     hs.consecutiveGateway,
				ConsecutiveLocalOrigin: hs.consecutiveLocalOrigin,
				Ejected:                hs.ejected,
				TimesEjected:           hs.ejections,
				EjectionBackoff:        hs.backoff,
				LastReport:             rfc3339(hs.lastReport),
			}
			if hs.ejected {
				hj.EjectedUntil = rfc3339(hs.ejectedAt.Add(s.ejectionTime(hs.backoff)))
			}
			cj.Hosts = append(cj.Hosts, hj)
		}
		slices.SortFunc(cj.Hosts, func(a, b outlierHostJSON) int {
			return cmp.Or(cmp.Compare(a.UID, b.UID), cmp.Compare(a.Port, b.Port))
		})
		out = append(out, cj)
	}
	slices.SortFunc(out, func(a, b outlierClusterJSON) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Subset, b.Subset))
	})
	return out
}
