package testbed

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The structs below mirror the proxy's local config schema (LOCAL_XDS_PATH; camelCase keys, see
// shared/reference/ztunnel-behavior.md §5). Only the fields the testbed sets are declared. They
// are exported for tools that generate extra config (the bench's synthetic workloads, merged with
// WriteConfigExtra); the proxy's own parser is workload.ParseLocalConfig.

// LocalConfig is a local config file.
type LocalConfig struct {
	Workloads []LocalWorkload `yaml:"workloads"`
	Services  []LocalService  `yaml:"services"`
	Policies  []localPolicy   `yaml:"policies,omitempty"`
}

// LocalWorkload is one entry of LocalConfig.Workloads.
type LocalWorkload struct {
	UID       string `yaml:"uid"`
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
	// ServiceAccount is left out when empty (the proxy reads "default"), as in istiod's
	// split-horizon workloads.
	ServiceAccount string `yaml:"serviceAccount,omitempty"`
	TrustDomain    string `yaml:"trustDomain"`
	// WorkloadIPs is left out when empty: a workload reached only through its NetworkGateway.
	WorkloadIPs []string `yaml:"workloadIps,omitempty"`
	Protocol    string   `yaml:"protocol"`
	// Node is left out when empty (workloads that are no pod of a node).
	Node              string                       `yaml:"node,omitempty"`
	Network           string                       `yaml:"network"`
	ClusterID         string                       `yaml:"clusterId"`
	Locality          *localLocality               `yaml:"locality,omitempty"`
	Status            string                       `yaml:"status"`
	CanonicalName     string                       `yaml:"canonicalName,omitempty"`
	CanonicalRevision string                       `yaml:"canonicalRevision,omitempty"`
	Services          map[string]map[uint16]uint16 `yaml:"services,omitempty"`
	AuthzPolicies     []string                     `yaml:"authorizationPolicies,omitempty"`
	// Capacity is the workload's weight in endpoint selection; nil: left out (the proxy reads 1).
	Capacity *uint32 `yaml:"capacity,omitempty"`
	// NetworkGateway is the gateway that reaches the workload from other networks.
	NetworkGateway *LocalGatewayAddress `yaml:"networkGateway,omitempty"`
}

// LocalGatewayAddress is a GatewayAddress of the local config: Destination is "<network>/<IP>"
// or "<namespace>/<hostname>".
type LocalGatewayAddress struct {
	Destination   string `yaml:"destination"`
	HBONEMTLSPort uint16 `yaml:"hboneMtlsPort"`
}

type localLocality struct {
	Region  string `yaml:"region"`
	Zone    string `yaml:"zone"`
	Subzone string `yaml:"subzone"`
}

// LocalService is one entry of LocalConfig.Services.
type LocalService struct {
	Name         string            `yaml:"name"`
	Namespace    string            `yaml:"namespace"`
	Hostname     string            `yaml:"hostname"`
	VIPs         []string          `yaml:"vips"`
	Ports        map[uint16]uint16 `yaml:"ports"`
	LoadBalancer *localLB          `yaml:"loadBalancer,omitempty"`
	// SubjectAltNames are the identities of the service's endpoints, which a client verifies
	// the inner TLS of double HBONE against. Nil: left out.
	SubjectAltNames []string `yaml:"subjectAltNames,omitempty"`
}

type localLB struct {
	RoutingPreferences []string `yaml:"routingPreferences"`
	Mode               string   `yaml:"mode"`
}

// podRecord is the immutable part of a pod that the config is rendered from.
type podRecord struct {
	Name, Namespace, ServiceAccount string
	Node                            string // node name
	Network, Cluster                string // of the node
	Locality                        localLocality
	IP                              netip.Addr
	Enrolled                        bool
	OmitFromConfig                  bool
	Protocol                        string // override; "" = by Enrolled
	Services                        map[string]map[uint16]uint16
	Labels                          map[string]string
	Policies                        []string // "ns/name" of selector-scoped policies
}

// serviceRecord is a validated ServiceSpec.
type serviceRecord struct {
	Name, Namespace    string
	VIP                netip.Addr
	Ports              map[uint16]uint16
	RoutingPreferences []string
	Mode               string
}

// UID is the pod's workload UID, "<cluster>//v1/Pod/<namespace>/<name>".
func (p podRecord) UID() string { return p.Cluster + "//v1/Pod/" + p.Namespace + "/" + p.Name }

// protocol is the pod's workload protocol, "HBONE" or "TCP".
func (p podRecord) protocol() string {
	switch {
	case p.Protocol != "":
		return p.Protocol
	case p.Enrolled:
		return "HBONE"
	default:
		return "TCP"
	}
}

// canonicalName is the workload's canonical name, from the app labels.
func (p podRecord) canonicalName() string {
	return cmp.Or(p.Labels["app.kubernetes.io/name"], p.Labels["app"])
}

// canonicalRevision is the workload's canonical revision, from the version labels.
func (p podRecord) canonicalRevision() string {
	return cmp.Or(p.Labels["app.kubernetes.io/version"], p.Labels["version"])
}

// distinctNetworks returns the sorted distinct node networks; [""] for none.
func distinctNetworks(networks []string) []string {
	nets := slices.Clone(networks)
	slices.Sort(nets)
	nets = slices.Compact(nets)
	if len(nets) == 0 {
		nets = []string{""}
	}
	return nets
}

// Hostname is the service's cluster hostname.
func (s serviceRecord) Hostname() string {
	return s.Name + "." + s.Namespace + ".svc." + TrustDomain
}

// renderConfig builds the local config YAML for pods, services and policies. networks are the
// distinct node networks: each service VIP is published on every one of them. The output is
// deterministic.
func renderConfig(pods []podRecord, services []serviceRecord, policies []policyRecord, networks []string) ([]byte, error) {
	cfg := LocalConfig{Workloads: []LocalWorkload{}, Services: []LocalService{}}
	for _, p := range pods {
		if p.OmitFromConfig {
			continue
		}
		cfg.Workloads = append(cfg.Workloads, podWorkload(p))
	}
	nets := distinctNetworks(networks)
	for _, s := range services {
		cfg.Services = append(cfg.Services, localService(s, nets))
	}
	cfg.Policies = renderPolicies(policies)
	return encodeLocalConfig(cfg)
}

// podWorkload is the local config entry of a pod.
func podWorkload(p podRecord) LocalWorkload {
	w := LocalWorkload{
		UID:               p.UID(),
		Name:              p.Name,
		Namespace:         p.Namespace,
		ServiceAccount:    p.ServiceAccount,
		TrustDomain:       TrustDomain,
		WorkloadIPs:       []string{p.IP.String()},
		Protocol:          p.protocol(),
		Node:              p.Node,
		Network:           p.Network,
		ClusterID:         p.Cluster,
		Status:            "Healthy",
		CanonicalName:     p.canonicalName(),
		CanonicalRevision: p.canonicalRevision(),
		Services:          p.Services,
		AuthzPolicies:     p.Policies,
	}
	if p.Locality != (localLocality{}) {
		l := p.Locality
		w.Locality = &l
	}
	return w
}

// localService is the local config entry of a service, its VIP on each of nets.
func localService(s serviceRecord, nets []string) LocalService {
	ls := LocalService{
		Name:      s.Name,
		Namespace: s.Namespace,
		Hostname:  s.Hostname(),
		Ports:     s.Ports,
	}
	for _, n := range nets {
		ls.VIPs = append(ls.VIPs, n+"/"+s.VIP.String())
	}
	if len(s.RoutingPreferences) > 0 || s.Mode != "" {
		ls.LoadBalancer = &localLB{RoutingPreferences: s.RoutingPreferences, Mode: s.Mode}
		if ls.LoadBalancer.RoutingPreferences == nil {
			ls.LoadBalancer.RoutingPreferences = []string{}
		}
	}
	return ls
}

// encodeLocalConfig sorts the workloads and services of cfg by namespace and name (so the output
// is deterministic) and encodes it as YAML.
func encodeLocalConfig(cfg LocalConfig) ([]byte, error) {
	slices.SortFunc(cfg.Workloads, func(a, b LocalWorkload) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(cfg.Services, func(a, b LocalService) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("encode local config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode local config: %w", err)
	}
	return buf.Bytes(), nil
}

var (
	validPreferences = []string{"Network", "Region", "Zone", "Subzone", "Node", "Cluster"}
	validModes       = []string{"Standard", "Strict", "Failover", "Passthrough"}
)

// newServiceRecord validates s.
func newServiceRecord(s ServiceSpec) (serviceRecord, error) {
	if err := checkName("service name", s.Name); err != nil {
		return serviceRecord{}, err
	}
	if err := checkName("service namespace", s.Namespace); err != nil {
		return serviceRecord{}, err
	}
	if !s.VIP.IsValid() {
		return serviceRecord{}, fmt.Errorf("service %s/%s: no VIP", s.Namespace, s.Name)
	}
	if len(s.Ports) == 0 {
		return serviceRecord{}, fmt.Errorf("service %s/%s: no ports", s.Namespace, s.Name)
	}
	for _, p := range s.RoutingPreference {
		if !slices.Contains(validPreferences, p) {
			return serviceRecord{}, fmt.Errorf("service %s/%s: routing preference %q: want one of %s",
				s.Namespace, s.Name, p, strings.Join(validPreferences, ", "))
		}
	}
	mode := s.Mode
	if mode == "" && len(s.RoutingPreference) > 0 {
		mode = "Failover"
	}
	if mode != "" && !slices.Contains(validModes, mode) {
		return serviceRecord{}, fmt.Errorf("service %s/%s: mode %q: want one of %s",
			s.Namespace, s.Name, s.Mode, strings.Join(validModes, ", "))
	}
	return serviceRecord{
		Name:               s.Name,
		Namespace:          s.Namespace,
		VIP:                s.VIP.Unmap(),
		Ports:              maps.Clone(s.Ports),
		RoutingPreferences: slices.Clone(s.RoutingPreference),
		Mode:               mode,
	}, nil
}

var k8sNameRE = nodeNameRE

// checkName validates a Kubernetes-style object name.
func checkName(what, name string) error {
	if !k8sNameRE.MatchString(name) {
		return fmt.Errorf("%s %q: want lower-case letters, digits, '-' and '.', at most 63", what, name)
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file in the same directory and a rename,
// so a reader never sees a partial file. It returns the hex SHA-256 of data.
func writeFileAtomic(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
