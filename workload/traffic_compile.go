package workload

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
)

// Compiling Istio's DestinationRule and VirtualService (networking.istio.io/v1, whose specs are
// the istio.io/api networking/v1alpha3 types) into the traffic model of traffic.go.
//
// What is applied, and how (multinetwork-and-policy.md §3–4):
//
//   - Hosts. A short name (no dot, not an IP), such as "reviews", is relative to the namespace
//     of the object that names it: "reviews.<namespace>.svc.<domain suffix>", as Istio does;
//     anything with a dot is taken as written. Wildcard hosts ("*", "*.example.com") are refused:
//     the index matches hosts exactly.
//   - DestinationRule trafficPolicy: outlierDetection and loadBalancer.localityLbSetting (see
//     compileOutlier and compileLocality), for the host and for each subset. A subset's
//     trafficPolicy replaces the rule's outlierDetection if it sets one, and the rule's whole
//     loadBalancer if it sets one (so a subset loadBalancer without localityLbSetting means
//     "nothing said", as in Istio's MergeTrafficPolicy).
//   - Not applied, without error: connectionPool, tls, tunnel, proxyProtocol, retryBudget,
//     loadBalancer.simple/consistentHash/warmup (the node proxy balances by capacity),
//     loadBalancer.zoneAwareLbSetting (Istio does not apply it in ambient either), exportTo (a
//     rule applies to every client of the node), outlierDetectionHttpErrorCodes (HTTP only).
//   - Refused: workloadSelector (the node proxy cannot restrict a rule to some clients), and
//     portLevelSettings that set outlierDetection or localityLbSetting (no per-port policy).
//   - VirtualService: only tcp routes are used. A VirtualService without tcp routes (http or tls
//     only) is ignored, as is one whose gateways do not include "mesh" (it is for gateways).
//     A tcp match may set only port (matches are ORed; one without a port matches any port);
//     destinationSubnets, sourceLabels, sourceNamespace, sourceSubnet and gateways are refused.
//     Weights: none negative; with several destinations they must sum to 100 (Istio normalizes
//     any positive sum; we refuse it, so that what is written is what is split); a single
//     destination gets all traffic whatever its weight says (its Weight is set to 100).

// NamedDestinationRule is a DestinationRule's spec with the name and namespace of its object.
type NamedDestinationRule struct {
	Name, Namespace string
	Spec            *networking.DestinationRule
}

// NamedVirtualService is a VirtualService's spec with the name and namespace of its object.
type NamedVirtualService struct {
	Name, Namespace string
	Spec            *networking.VirtualService
}

// TrafficOptions are what compiling needs to know about the mesh.
type TrafficOptions struct {
	// DomainSuffix completes short host names: "<host>.<namespace>.svc.<DomainSuffix>".
	// Empty means "cluster.local".
	DomainSuffix string
	// LabelKeys reports whether some workload carries label key explicitly (Workload.Labels):
	// a subset selector or failoverPriority label that is neither such a key nor one Workload.Label
	// maps to what workload discovery carries (KnownLabel) can match nothing and is refused as an
	// unknown label. Nil: no workload carries explicit labels (workload discovery).
	LabelKeys func(key string) bool
}

// DefaultDomainSuffix is the DNS suffix of the cluster's services when TrafficOptions leaves it empty.
const DefaultDomainSuffix = "cluster.local"

// TrafficError is a problem with one DestinationRule or VirtualService: it names the object,
// the field in its spec (a path in the JSON names of the Kubernetes YAML, e.g.
// "subsets[1].labels.version") and what is wrong with the value.
type TrafficError struct {
	Kind            string // "destination rule" or "virtual service"
	Namespace, Name string
	Field           string // "" when the problem is about the object as a whole
	Err             error
}

func (e *TrafficError) Error() string {
	s := e.Kind + " " + e.Namespace + "/" + e.Name + ": "
	if e.Field != "" {
		s += e.Field + ": "
	}
	return s + e.Err.Error()
}

func (e *TrafficError) Unwrap() error { return e.Err }

const (
	kindDestinationRule = "destination rule"
	kindVirtualService  = "virtual service"
)

// CompileTraffic compiles DestinationRules and VirtualServices for NewTrafficIndex. It checks
// each object (see the semantics above) and then the objects together: two rules for one host,
// or two VirtualServices for one host, keep the first in the order given (give them in creation
// order to match Istio's choice of the oldest); a route to a subset must name a subset of the
// rule of its destination host; subset and failoverPriority labels must be known (see
// TrafficOptions.LabelKeys).
//
// Every problem is reported: the error joins one *TrafficError per problem (nil if there is
// none). The policies returned are those without problems (a VirtualService routing to a subset
// of a refused rule is refused too), in the order given, and NewTrafficIndex always accepts
// them: a caller that must not apply a partial set (a local config file) treats any error as
// fatal; one that watches objects changing one at a time (Kubernetes) may apply the rest.
func CompileTraffic(drs []*NamedDestinationRule, vss []*NamedVirtualService, opts TrafficOptions) ([]*DestinationPolicy, []*RoutePolicy, error) {
	var errs []error
	dests := make([]*DestinationPolicy, 0, len(drs))
	for _, dr := range drs {
		d, err := compileDestinationRule(dr, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		dests = append(dests, d)
	}
	routes := make([]*RoutePolicy, 0, len(vss))
	for _, vs := range vss {
		r, err := compileVirtualService(vs, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r != nil {
			routes = append(routes, r)
		}
	}
	dests, routes, crossErrs := checkTraffic(dests, routes, opts)
	for _, e := range crossErrs {
		errs = append(errs, e)
	}
	return dests, routes, errors.Join(errs...)
}

// domainSuffix returns the suffix of opts, with its default.
func (o TrafficOptions) domainSuffix() string {
	if o.DomainSuffix == "" {
		return DefaultDomainSuffix
	}
	return o.DomainSuffix
}

// trafficCompiler collects the context of one object's errors.
type trafficCompiler struct {
	kind, ns, name string
	opts           TrafficOptions
}

func (c *trafficCompiler) fail(field, format string, args ...any) error {
	return &TrafficError{Kind: c.kind, Namespace: c.ns, Name: c.name, Field: field, Err: fmt.Errorf(format, args...)}
}

// host checks a host name of the object and returns it fully qualified.
func (c *trafficCompiler) host(field, h string) (string, error) {
	switch {
	case h == "":
		return "", c.fail(field, "empty host")
	case strings.Contains(h, "*"):
		return "", c.fail(field, "wildcard host %q is not supported (name one service)", h)
	case strings.ContainsAny(h, " /:\t\n") && !isIP(h):
		return "", c.fail(field, "invalid host %q", h)
	case strings.Contains(h, ".") || isIP(h):
		return h, nil
	}
	return h + "." + c.ns + ".svc." + c.opts.domainSuffix(), nil
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// compileDestinationRule compiles one rule on its own (checkTraffic does the rest).
func compileDestinationRule(dr *NamedDestinationRule, opts TrafficOptions) (*DestinationPolicy, error) {
	if dr == nil || dr.Spec == nil {
		return nil, &TrafficError{Kind: kindDestinationRule, Err: errors.New("no spec")}
	}
	c := &trafficCompiler{kind: kindDestinationRule, ns: dr.Namespace, name: dr.Name, opts: opts}
	if dr.Name == "" || dr.Namespace == "" {
		return nil, c.fail("", "missing name or namespace")
	}
	spec := dr.Spec
	host, err := c.host("host", spec.GetHost())
	if err != nil {
		return nil, err
	}
	if spec.GetWorkloadSelector() != nil {
		return nil, c.fail("workloadSelector", "not supported: the node proxy applies a rule to every client of the host")
	}
	d := &DestinationPolicy{Name: dr.Name, Namespace: dr.Namespace, Host: host, Source: spec}
	if d.Policy, err = c.trafficPolicy("trafficPolicy", spec.GetTrafficPolicy()); err != nil {
		return nil, err
	}
	first := map[string]int{}
	for i, s := range spec.GetSubsets() {
		f := fmt.Sprintf("subsets[%d]", i)
		if s == nil || s.GetName() == "" {
			return nil, c.fail(f+".name", "missing subset name")
		}
		if j, dup := first[s.GetName()]; dup {
			return nil, c.fail(f+".name", "duplicate subset name %q (also subsets[%d])", s.GetName(), j)
		}
		first[s.GetName()] = i
		sub := &Subset{Name: s.GetName(), Policy: d.Policy}
		if len(s.GetLabels()) > 0 {
			sub.Labels = make(map[string]string, len(s.GetLabels()))
		}
		for k, v := range s.GetLabels() {
			if k == "" {
				return nil, c.fail(f+".labels", "empty label key")
			}
			sub.Labels[k] = v
		}
		if tp := s.GetTrafficPolicy(); tp != nil {
			own, err := c.trafficPolicy(f+".trafficPolicy", tp)
			if err != nil {
				return nil, err
			}
			if tp.GetOutlierDetection() != nil {
				sub.Policy.Outlier = own.Outlier
			}
			if tp.GetLoadBalancer() != nil {
				sub.Policy.Locality = own.Locality
			}
		}
		d.Subsets = append(d.Subsets, sub)
	}
	return d, nil
}

// trafficPolicy compiles the parts of a trafficPolicy the node proxy applies.
func (c *trafficCompiler) trafficPolicy(field string, tp *networking.TrafficPolicy) (TrafficSettings, error) {
	var ts TrafficSettings
	if tp == nil {
		return ts, nil
	}
	for i, pl := range tp.GetPortLevelSettings() {
		f := fmt.Sprintf("%s.portLevelSettings[%d]", field, i)
		if pl.GetOutlierDetection() != nil {
			return ts, c.fail(f+".outlierDetection", "per-port outlier detection is not supported: set it for the host or a subset")
		}
		if pl.GetLoadBalancer().GetLocalityLbSetting() != nil {
			return ts, c.fail(f+".loadBalancer.localityLbSetting", "per-port locality settings are not supported: set them for the host or a subset")
		}
	}
	var err error
	if od := tp.GetOutlierDetection(); od != nil {
		if ts.Outlier, err = c.outlier(field+".outlierDetection", od); err != nil {
			return ts, err
		}
	}
	if lb := tp.GetLoadBalancer().GetLocalityLbSetting(); lb != nil {
		if ts.Locality, err = c.locality(field+".loadBalancer.localityLbSetting", lb); err != nil {
			return ts, err
		}
	}
	return ts, nil
}

// Outlier detection defaults (Envoy's, as Istio leaves them; multinetwork-and-policy.md §3.1–3.2).
const (
	defaultConsecutiveErrors  = 5
	defaultOutlierInterval    = 10 * time.Second
	defaultBaseEjectionTime   = 30 * time.Second
	minMaxEjectionTime        = 300 * time.Second
	defaultMaxEjectionPercent = 10
)

// outlier compiles outlierDetection:
//
//   - consecutive5xxErrors: absent → 5; 0 turns it off. If absent, the deprecated
//     consecutiveErrors counts instead when set (current Istio ignores it; the intent of who
//     wrote it is plain).
//   - consecutiveGatewayErrors: absent or 0 → off.
//   - splitExternalLocalOriginErrors: connect failures count apart, against
//     consecutiveLocalOriginFailures (absent → Envoy's 5; 0 → off, where Istio would leave
//     Envoy's 5). Without the split, consecutiveLocalOriginFailures has no effect.
//   - interval (10 s) and baseEjectionTime (30 s): at least 1 ms when set. maxEjectionTime, which
//     the API does not have, is the larger of 300 s and baseEjectionTime (Envoy's default).
//   - maxEjectionPercent: 0–100, 0 or absent → 10. minHealthPercent: 0–100 (0: no panic mode).
func (c *trafficCompiler) outlier(field string, od *networking.OutlierDetection) (*OutlierPolicy, error) {
	o := &OutlierPolicy{Consecutive5xx: defaultConsecutiveErrors}
	switch {
	case od.GetConsecutive_5XxErrors() != nil:
		o.Consecutive5xx = od.GetConsecutive_5XxErrors().GetValue()
	case od.GetConsecutiveErrors() < 0:
		return nil, c.fail(field+".consecutiveErrors", "negative value %d", od.GetConsecutiveErrors())
	case od.GetConsecutiveErrors() > 0:
		o.Consecutive5xx = uint32(od.GetConsecutiveErrors())
	}
	o.ConsecutiveGateway = od.GetConsecutiveGatewayErrors().GetValue()
	if od.GetSplitExternalLocalOriginErrors() {
		o.SplitLocalOrigin = true
		o.ConsecutiveLocalOrigin = defaultConsecutiveErrors
		if v := od.GetConsecutiveLocalOriginFailures(); v != nil {
			o.ConsecutiveLocalOrigin = v.GetValue()
		}
	}
	var err error
	if o.Interval, err = c.duration(field+".interval", od.GetInterval(), defaultOutlierInterval); err != nil {
		return nil, err
	}
	if o.BaseEjectionTime, err = c.duration(field+".baseEjectionTime", od.GetBaseEjectionTime(), defaultBaseEjectionTime); err != nil {
		return nil, err
	}
	o.MaxEjectionTime = max(minMaxEjectionTime, o.BaseEjectionTime)
	if o.MaxEjectionPercent, err = c.percent(field+".maxEjectionPercent", od.GetMaxEjectionPercent()); err != nil {
		return nil, err
	}
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = defaultMaxEjectionPercent
	}
	if o.MinHealthPercent, err = c.percent(field+".minHealthPercent", od.GetMinHealthPercent()); err != nil {
		return nil, err
	}
	return o, nil
}

// duration returns d, or def if d is absent; d must be valid and at least 1 ms.
func (c *trafficCompiler) duration(field string, d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, c.fail(field, "invalid duration: %v", err)
	}
	v := d.AsDuration()
	if v < time.Millisecond {
		return 0, c.fail(field, "duration %v is too short (at least 1ms)", v)
	}
	return v, nil
}

func (c *trafficCompiler) percent(field string, v int32) (uint32, error) {
	if v < 0 || v > 100 {
		return 0, c.fail(field, "%d is not a percentage (0 to 100)", v)
	}
	return uint32(v), nil
}

// locality compiles localityLbSetting, with Istio's validation
// (istio pkg/config/validation/agent ValidateLocalityLbSetting):
//
//   - enabled: absent → true.
//   - distribute: each from and to key is a locality "region/zone/subzone" where a trailing "*"
//     segment (or a missing zone or subzone) matches anything; each to map's weights sum to 100;
//     neither the from localities nor the to keys of one entry may overlap (Istio's to keys are
//     claimed in map order, which is unspecified). Weights of 0 are allowed (that locality gets
//     no traffic; Istio's validation wants at least 1).
//   - failover: from and to are distinct regions (no "/" or "*"); a from region at most once
//     (Istio would use the first and silently ignore the rest).
//   - distribute and failover exclude each other; failover excludes the region, zone and
//     subzone labels in failoverPriority.
//   - failoverPriority: labels, or "label=value"; the labels must be known (checkTraffic).
func (c *trafficCompiler) locality(field string, lb *networking.LocalityLoadBalancerSetting) (*LocalityPolicy, error) {
	l := &LocalityPolicy{Enabled: lb.GetEnabled() == nil || lb.GetEnabled().GetValue()}
	if len(lb.GetDistribute()) > 0 && len(lb.GetFailover()) > 0 {
		return nil, c.fail(field, "distribute and failover cannot both be set")
	}
	var froms []string
	for i, d := range lb.GetDistribute() {
		f := fmt.Sprintf("%s.distribute[%d]", field, i)
		if d == nil {
			return nil, c.fail(f, "empty entry")
		}
		if err := c.localityPattern(f+".from", d.GetFrom()); err != nil {
			return nil, err
		}
		if j := overlapping(froms, d.GetFrom()); j >= 0 {
			return nil, c.fail(f+".from", "locality %q overlaps distribute[%d].from %q", d.GetFrom(), j, froms[j])
		}
		froms = append(froms, d.GetFrom())
		if len(d.GetTo()) == 0 {
			return nil, c.fail(f+".to", "no localities to distribute to")
		}
		dist := LocalityDistribution{From: d.GetFrom()}
		var sum uint64
		for k, w := range d.GetTo() {
			dist.To = append(dist.To, LocalityWeight{Locality: k, Weight: w})
			sum += uint64(w)
		}
		slices.SortFunc(dist.To, func(a, b LocalityWeight) int { return compareStrings(a.Locality, b.Locality) })
		var tos []string
		for _, lw := range dist.To {
			kf := fieldKey(f+".to", lw.Locality)
			if err := c.localityPattern(kf, lw.Locality); err != nil {
				return nil, err
			}
			if j := overlapping(tos, lw.Locality); j >= 0 {
				return nil, c.fail(kf, "locality %q overlaps %q in the same to", lw.Locality, tos[j])
			}
			tos = append(tos, lw.Locality)
		}
		if sum != 100 {
			return nil, c.fail(f+".to", "weights sum to %d, want 100", sum)
		}
		l.Distribute = append(l.Distribute, dist)
	}
	seen := map[string]int{}
	for i, fo := range lb.GetFailover() {
		f := fmt.Sprintf("%s.failover[%d]", field, i)
		if fo == nil {
			return nil, c.fail(f, "empty entry")
		}
		for _, side := range []struct{ name, v string }{{"from", fo.GetFrom()}, {"to", fo.GetTo()}} {
			switch {
			case side.v == "":
				return nil, c.fail(f+"."+side.name, "missing region")
			case strings.ContainsAny(side.v, "/*"):
				return nil, c.fail(f+"."+side.name, "%q is not a region (failover names regions, without \"/\" or \"*\")", side.v)
			}
		}
		if fo.GetFrom() == fo.GetTo() {
			return nil, c.fail(f, "from and to are the same region %q", fo.GetFrom())
		}
		if j, dup := seen[fo.GetFrom()]; dup {
			return nil, c.fail(f+".from", "region %q already has a failover (failover[%d])", fo.GetFrom(), j)
		}
		seen[fo.GetFrom()] = i
		l.Failover = append(l.Failover, LocalityFailover{From: fo.GetFrom(), To: fo.GetTo()})
	}
	for i, p := range lb.GetFailoverPriority() {
		f := fmt.Sprintf("%s.failoverPriority[%d]", field, i)
		key, _, hasValue := strings.Cut(p, "=")
		if key == "" || strings.TrimSpace(key) != key {
			return nil, c.fail(f, "invalid label %q", p)
		}
		if len(lb.GetFailover()) > 0 && !hasValue {
			switch key {
			case "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone":
				return nil, c.fail(f, "%q cannot be used with failover", key)
			}
		}
		l.FailoverPriority = append(l.FailoverPriority, p)
	}
	return l, nil
}

// localityPattern checks a distribute locality: 1 to 3 non-empty "/"-separated segments, of
// which only the last may be "*", and "*" nowhere else.
func (c *trafficCompiler) localityPattern(field, loc string) error {
	segs := strings.Split(loc, "/")
	if loc == "" || len(segs) > 3 {
		return c.fail(field, "invalid locality %q (want region, region/zone or region/zone/subzone)", loc)
	}
	for i, s := range segs {
		switch {
		case s == "":
			return c.fail(field, "invalid locality %q: empty segment", loc)
		case s == "*" && i != len(segs)-1, s != "*" && strings.Contains(s, "*"):
			return c.fail(field, "invalid locality %q: \"*\" may only be the whole last segment", loc)
		}
	}
	return nil
}

// overlapping returns the index of a locality pattern in list that matches some locality loc
// matches too, or -1.
func overlapping(list []string, loc string) int {
	a := strings.Split(loc, "/")
	for i, other := range list {
		b := strings.Split(other, "/")
		overlap := true
		for k := range 3 {
			x, y := "*", "*"
			if k < len(a) {
				x = a[k]
			}
			if k < len(b) {
				y = b[k]
			}
			if x != y && x != "*" && y != "*" {
				overlap = false
				break
			}
		}
		if overlap {
			return i
		}
	}
	return -1
}

// compileVirtualService compiles one VirtualService on its own; nil, nil if it does not apply to
// the node proxy (no tcp routes, or gateways without "mesh").
func compileVirtualService(vs *NamedVirtualService, opts TrafficOptions) (*RoutePolicy, error) {
	if vs == nil || vs.Spec == nil {
		return nil, &TrafficError{Kind: kindVirtualService, Err: errors.New("no spec")}
	}
	c := &trafficCompiler{kind: kindVirtualService, ns: vs.Namespace, name: vs.Name, opts: opts}
	if vs.Name == "" || vs.Namespace == "" {
		return nil, c.fail("", "missing name or namespace")
	}
	spec := vs.Spec
	if gws := spec.GetGateways(); len(gws) > 0 && !slices.Contains(gws, "mesh") {
		return nil, nil
	}
	if len(spec.GetTcp()) == 0 {
		return nil, nil
	}
	r := &RoutePolicy{Name: vs.Name, Namespace: vs.Namespace, Source: spec}
	if len(spec.GetHosts()) == 0 {
		return nil, c.fail("hosts", "no hosts")
	}
	first := map[string]int{}
	for i, h := range spec.GetHosts() {
		f := fmt.Sprintf("hosts[%d]", i)
		fq, err := c.host(f, h)
		if err != nil {
			return nil, err
		}
		if j, dup := first[fq]; dup {
			return nil, c.fail(f, "host %q listed twice (also hosts[%d])", fq, j)
		}
		first[fq] = i
		r.Hosts = append(r.Hosts, fq)
	}
	for i, tr := range spec.GetTcp() {
		route, err := c.tcpRoute(fmt.Sprintf("tcp[%d]", i), tr)
		if err != nil {
			return nil, err
		}
		r.TCP = append(r.TCP, route)
	}
	return r, nil
}

func (c *trafficCompiler) tcpRoute(field string, tr *networking.TCPRoute) (*TCPRoute, error) {
	if tr == nil {
		return nil, c.fail(field, "empty route")
	}
	route := &TCPRoute{}
	anyPort := len(tr.GetMatch()) == 0
	for j, m := range tr.GetMatch() {
		f := fmt.Sprintf("%s.match[%d]", field, j)
		if m == nil {
			anyPort = true
			continue
		}
		for _, unsupported := range []struct {
			name string
			set  bool
		}{
			{"destinationSubnets", len(m.GetDestinationSubnets()) > 0},
			{"sourceSubnet", m.GetSourceSubnet() != ""},
			{"sourceLabels", len(m.GetSourceLabels()) > 0},
			{"sourceNamespace", m.GetSourceNamespace() != ""},
			{"gateways", len(m.GetGateways()) > 0},
		} {
			if unsupported.set {
				return nil, c.fail(f+"."+unsupported.name, "not supported by the node proxy (a tcp match may set only port)")
			}
		}
		switch p := m.GetPort(); {
		case p == 0:
			anyPort = true
		case p > 65535:
			return nil, c.fail(f+".port", "port %d out of range [1, 65535]", p)
		case !slices.Contains(route.Ports, uint16(p)):
			route.Ports = append(route.Ports, uint16(p))
		}
	}
	if anyPort {
		route.Ports = nil
	}
	if len(tr.GetRoute()) == 0 {
		return nil, c.fail(field+".route", "no destinations")
	}
	var sum int64
	for k, rd := range tr.GetRoute() {
		f := fmt.Sprintf("%s.route[%d]", field, k)
		dst := rd.GetDestination()
		if dst == nil {
			return nil, c.fail(f+".destination", "missing destination")
		}
		host, err := c.host(f+".destination.host", dst.GetHost())
		if err != nil {
			return nil, err
		}
		port := dst.GetPort().GetNumber()
		if port > 65535 {
			return nil, c.fail(f+".destination.port.number", "port %d out of range [0, 65535]", port)
		}
		if rd.GetWeight() < 0 {
			return nil, c.fail(f+".weight", "negative weight %d", rd.GetWeight())
		}
		sum += int64(rd.GetWeight())
		route.Destinations = append(route.Destinations, RouteDestination{Host: host, Subset: dst.GetSubset(),
			Port: uint16(port), Weight: uint32(rd.GetWeight())})
	}
	switch {
	case len(route.Destinations) == 1:
		route.Destinations[0].Weight = 100
	case sum != 100:
		return nil, c.fail(field+".route", "weights sum to %d, want 100 (%s)", sum, weightList(tr.GetRoute()))
	}
	return route, nil
}

func weightList(rds []*networking.RouteDestination) string {
	var b strings.Builder
	for i, rd := range rds {
		if i > 0 {
			b.WriteString(" + ")
		}
		b.WriteString(strconv.Itoa(int(rd.GetWeight())))
	}
	return b.String()
}

// checkTraffic checks compiled policies together (see CompileTraffic) and returns those that
// pass, in order, and one *TrafficError per problem.
func checkTraffic(dests []*DestinationPolicy, routes []*RoutePolicy, opts TrafficOptions) ([]*DestinationPolicy, []*RoutePolicy, []*TrafficError) {
	var errs []*TrafficError
	fail := func(kind, ns, name, field, format string, args ...any) {
		errs = append(errs, &TrafficError{Kind: kind, Namespace: ns, Name: name, Field: field, Err: fmt.Errorf(format, args...)})
	}
	known := func(key string) bool { return KnownLabel(key) || (opts.LabelKeys != nil && opts.LabelKeys(key)) }
	byHost := make(map[string]*DestinationPolicy, len(dests))
	keptDests := dests[:0:0]
	for _, d := range dests {
		if prev := byHost[d.Host]; prev != nil {
			fail(kindDestinationRule, d.Namespace, d.Name, "host", "host %q already has destination rule %s (one rule per host)", d.Host, prev.Key())
			continue
		}
		if field, key := unknownLabel(d, known); field != "" {
			fail(kindDestinationRule, d.Namespace, d.Name, field, "unknown label %q: no workload carries it and workload "+
				"discovery does not map it (known without explicit workload labels: %s)", key, strings.Join(knownLabelKeys, ", "))
			continue
		}
		byHost[d.Host] = d
		keptDests = append(keptDests, d)
	}
	routed := map[string]*RoutePolicy{}
	keptRoutes := routes[:0:0]
routes:
	for _, r := range routes {
		for i, h := range r.Hosts {
			if prev := routed[h]; prev != nil {
				fail(kindVirtualService, r.Namespace, r.Name, fmt.Sprintf("hosts[%d]", i), "host %q is already routed by virtual service %s (one per host)", h, prev.Key())
				continue routes
			}
		}
		for i, tr := range r.TCP {
			for k, dst := range tr.Destinations {
				if dst.Subset == "" {
					continue
				}
				f := fmt.Sprintf("tcp[%d].route[%d].destination.subset", i, k)
				d := byHost[dst.Host]
				switch {
				case d == nil:
					fail(kindVirtualService, r.Namespace, r.Name, f, "subset %q of host %q: no destination rule for that host defines subsets", dst.Subset, dst.Host)
					continue routes
				case d.Subset(dst.Subset) == nil:
					fail(kindVirtualService, r.Namespace, r.Name, f, "subset %q of host %q is not defined by destination rule %s (it defines %s)",
						dst.Subset, dst.Host, d.Key(), subsetNames(d))
					continue routes
				}
			}
		}
		for _, h := range r.Hosts {
			routed[h] = r
		}
		keptRoutes = append(keptRoutes, r)
	}
	return keptDests, keptRoutes, errs
}

// knownLabelKeys are the label keys Workload.Label answers without explicit labels.
var knownLabelKeys = []string{"app", "app.kubernetes.io/name", "app.kubernetes.io/version", "kubernetes.io/hostname",
	"service.istio.io/canonical-name", "service.istio.io/canonical-revision", "topology.istio.io/cluster",
	"topology.istio.io/network", "topology.istio.io/subzone", "topology.kubernetes.io/region",
	"topology.kubernetes.io/zone", "version"}

// unknownLabel returns the field and key of the first label of d's subsets or failoverPriority
// that known does not know; "" if all are known.
func unknownLabel(d *DestinationPolicy, known func(string) bool) (field, key string) {
	check := func(field string, ts TrafficSettings) (string, string) {
		if ts.Locality == nil {
			return "", ""
		}
		for i, p := range ts.Locality.FailoverPriority {
			if k, _, _ := strings.Cut(p, "="); !known(k) {
				return fmt.Sprintf("%s.loadBalancer.localityLbSetting.failoverPriority[%d]", field, i), k
			}
		}
		return "", ""
	}
	if f, k := check("trafficPolicy", d.Policy); f != "" {
		return f, k
	}
	for i, s := range d.Subsets {
		keys := make([]string, 0, len(s.Labels))
		for k := range s.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if !known(k) {
				return fieldKey(fmt.Sprintf("subsets[%d].labels", i), k), k
			}
		}
		// Only the subset's own locality settings are the subset's fault (inherited ones are the
		// same pointer as the rule's, checked above).
		if s.Policy.Locality != d.Policy.Locality {
			if f, k := check(fmt.Sprintf("subsets[%d].trafficPolicy", i), s.Policy); f != "" {
				return f, k
			}
		}
	}
	return "", ""
}

func subsetNames(d *DestinationPolicy) string {
	if len(d.Subsets) == 0 {
		return "no subsets"
	}
	names := make([]string, len(d.Subsets))
	for i, s := range d.Subsets {
		names[i] = strconv.Quote(s.Name)
	}
	return strings.Join(names, ", ")
}

// identifier matches field names that a path can show after a dot.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// fieldKey returns the path of key in the mapping at path: path.key for an identifier, else
// path["key"] (label keys such as "topology.istio.io/cluster").
func fieldKey(path, key string) string {
	if identifier.MatchString(key) {
		return join(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}
