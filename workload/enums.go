package workload

import (
	"fmt"
	"strings"
)

// The enums below are numbered like their WDS/authorization proto counterparts, so the xDS
// converter can cast, and spelled (String, ParseX) like the reference ztunnel's local config
// and config_dump.

// Protocol is the protocol a workload expects inbound traffic in.
type Protocol uint8

const (
	ProtocolTCP   Protocol = iota // plaintext TCP (proto TunnelProtocol NONE)
	ProtocolHBONE                 // HBONE on port 15008
)

var protocolNames = []string{"TCP", "HBONE"}

func (p Protocol) String() string { return enumString(protocolNames, p) }

// ParseProtocol parses "TCP" or "HBONE".
func ParseProtocol(s string) (Protocol, error) {
	return parseEnum[Protocol]("protocol", protocolNames, s)
}

// Status is the health of a workload or endpoint.
type Status uint8

const (
	StatusHealthy Status = iota
	StatusUnhealthy
)

var statusNames = []string{"Healthy", "Unhealthy"}

func (s Status) String() string { return enumString(statusNames, s) }

// ParseStatus parses "Healthy" or "Unhealthy".
func ParseStatus(s string) (Status, error) { return parseEnum[Status]("status", statusNames, s) }

// NetworkMode says whether a workload shares the node's network namespace.
type NetworkMode uint8

const (
	NetworkModeStandard    NetworkMode = iota
	NetworkModeHostNetwork             // never indexed by IP: the IP is the node's
)

var networkModeNames = []string{"Standard", "HostNetwork"}

func (m NetworkMode) String() string { return enumString(networkModeNames, m) }

// ParseNetworkMode parses "Standard" or "HostNetwork".
func ParseNetworkMode(s string) (NetworkMode, error) {
	return parseEnum[NetworkMode]("network mode", networkModeNames, s)
}

// Scope is one level of a service's routing preference. The zero value is not a valid scope.
type Scope uint8

const (
	ScopeRegion Scope = iota + 1
	ScopeZone
	ScopeSubzone
	ScopeNode
	ScopeCluster
	ScopeNetwork
)

var scopeNames = []string{"", "Region", "Zone", "Subzone", "Node", "Cluster", "Network"}

func (s Scope) String() string { return enumString(scopeNames, s) }

// ParseScope parses "Region", "Zone", "Subzone", "Node", "Cluster" or "Network".
func ParseScope(s string) (Scope, error) {
	return parseEnum[Scope]("routing preference", scopeNames, s)
}

// LBMode is a service's load-balancing mode.
type LBMode uint8

const (
	LBModeStandard    LBMode = iota // routing preferences ignored (proto UNSPECIFIED_MODE)
	LBModeStrict                    // only endpoints matching every preference
	LBModeFailover                  // best-matching endpoints first
	LBModePassthrough               // no endpoint selection: connect to the original destination
)

var lbModeNames = []string{"Standard", "Strict", "Failover", "Passthrough"}

func (m LBMode) String() string { return enumString(lbModeNames, m) }

// ParseLBMode parses "Standard", "Strict", "Failover" or "Passthrough".
func ParseLBMode(s string) (LBMode, error) {
	return parseEnum[LBMode]("load balancer mode", lbModeNames, s)
}

// HealthPolicy decides which endpoints of a service are kept.
type HealthPolicy uint8

const (
	HealthOnlyHealthy HealthPolicy = iota
	HealthAllowAll
)

var healthPolicyNames = []string{"OnlyHealthy", "AllowAll"}

func (h HealthPolicy) String() string { return enumString(healthPolicyNames, h) }

// ParseHealthPolicy parses "OnlyHealthy" or "AllowAll".
func ParseHealthPolicy(s string) (HealthPolicy, error) {
	return parseEnum[HealthPolicy]("health policy", healthPolicyNames, s)
}

// PolicyScope says which workloads an authorization policy applies to.
type PolicyScope uint8

const (
	PolicyScopeGlobal           PolicyScope = iota // every workload
	PolicyScopeNamespace                           // workloads in the policy's namespace
	PolicyScopeWorkloadSelector                    // workloads naming the policy in AuthorizationPolicies
)

var policyScopeNames = []string{"Global", "Namespace", "WorkloadSelector"}

func (s PolicyScope) String() string { return enumString(policyScopeNames, s) }

// ParsePolicyScope parses "Global", "Namespace" or "WorkloadSelector".
func ParsePolicyScope(s string) (PolicyScope, error) {
	return parseEnum[PolicyScope]("policy scope", policyScopeNames, s)
}

// PolicyAction is what a matching authorization policy does.
type PolicyAction uint8

const (
	PolicyActionAllow PolicyAction = iota
	PolicyActionDeny
)

var policyActionNames = []string{"Allow", "Deny"}

func (a PolicyAction) String() string { return enumString(policyActionNames, a) }

// ParsePolicyAction parses "Allow" or "Deny".
func ParsePolicyAction(s string) (PolicyAction, error) {
	return parseEnum[PolicyAction]("policy action", policyActionNames, s)
}

// StringMatchKind is how a StringMatch compares.
type StringMatchKind uint8

const (
	StringMatchExact    StringMatchKind = iota
	StringMatchPrefix                   // value is a prefix
	StringMatchSuffix                   // value is a suffix
	StringMatchPresence                 // any non-empty string; Value unused
)

var stringMatchNames = []string{"Exact", "Prefix", "Suffix", "Presence"}

func (k StringMatchKind) String() string { return enumString(stringMatchNames, k) }

// ParseStringMatchKind parses "Exact", "Prefix", "Suffix" or "Presence".
func ParseStringMatchKind(s string) (StringMatchKind, error) {
	return parseEnum[StringMatchKind]("string match", stringMatchNames, s)
}

// The IPFamilies and Visibility values of a Service, as spelled in the local config.
const (
	IPFamiliesDual = "Dual"
	IPFamiliesIPv4 = "IPv4"
	IPFamiliesIPv6 = "IPv6"

	VisibilityPublic    = "Public"
	VisibilityNamespace = "Namespace"
)

func enumString[E ~uint8](names []string, e E) string {
	if int(e) < len(names) && names[e] != "" {
		return names[e]
	}
	return fmt.Sprintf("%T(%d)", e, uint8(e))
}

func parseEnum[E ~uint8](what string, names []string, s string) (E, error) {
	for i, n := range names {
		if n != "" && n == s {
			return E(i), nil
		}
	}
	var valid []string
	for _, n := range names {
		if n != "" {
			valid = append(valid, n)
		}
	}
	return 0, fmt.Errorf("invalid %s %q (want one of %s)", what, s, strings.Join(valid, ", "))
}
