package authz

import (
	"sync"

	"github.com/ztunnel-go/ztunnel/workload"
)

// Reason texts; the deny ones are the reference's AuthorizationRejectionError texts, which
// the access log prints after "connection closed due to policy rejection: ".
const (
	reasonDeniedPrefix  = "explicitly denied by: "
	reasonAllowedPrefix = "allowed by: "
	reasonNoneAllowed   = "allow policies exist, but none allowed"
	reasonNoAllow       = "no allow policies"
)

// policyStrings are the decision strings of one policy.
type policyStrings struct {
	key     string // "ns/name", a substring of denied
	denied  string // "explicitly denied by: ns/name"
	allowed string // "allowed by: ns/name"
}

// maxNamesCached bounds the cache; it is emptied when full (a cluster rarely has this many
// policies, so that only happens after heavy churn of policy names).
const maxNamesCached = 1 << 14

// names caches policyStrings by (namespace, name). The strings depend only on those two
// values, so an entry is never stale, and a Decision costs no allocation once its policy's
// strings are cached.
var names struct {
	mu sync.RWMutex // guards m
	m  map[[2]string]policyStrings
}

// stringsFor returns p's decision strings, building and caching them on first use.
func stringsFor(p *workload.Policy) policyStrings {
	k := [2]string{p.Namespace, p.Name}
	names.mu.RLock()
	s, ok := names.m[k]
	names.mu.RUnlock()
	if ok {
		return s
	}
	denied := reasonDeniedPrefix + p.Key()
	s = policyStrings{
		key:     denied[len(reasonDeniedPrefix):],
		denied:  denied,
		allowed: reasonAllowedPrefix + denied[len(reasonDeniedPrefix):],
	}
	names.mu.Lock()
	if names.m == nil || len(names.m) >= maxNamesCached {
		names.m = make(map[[2]string]policyStrings)
	}
	names.m[k] = s
	names.mu.Unlock()
	return s
}
