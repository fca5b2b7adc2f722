package ztunnel

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The structures below hold what `istioctl ztunnel-config` reads from /config_dump, field by
// field and with the same JSON names and Go types (ztunnel-behavior.md §7.3; istio/istio
// istioctl/pkg/writer/ztunnel/configdump). Decoding our dump into them and checking the
// values is how these tests know istioctl can print it.

type ictlDump struct {
	Workloads     []*ictlWorkload              `json:"workloads"`
	Services      []*ictlService               `json:"services"`
	Policies      []*ictlPolicy                `json:"policies"`
	Certificates  []*ictlCerts                 `json:"certificates"`
	WorkloadState map[string]ictlWorkloadState `json:"workloadstate"` // matched case-insensitively
}

type ictlLocality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Subzone string `json:"subzone,omitempty"`
}

type ictlGateway struct {
	Destination string `json:"destination"`
}

type ictlAppTunnel struct {
	Protocol string  `json:"protocol"`
	Port     *uint16 `json:"port,omitempty"`
}

type ictlWorkload struct {
	UID                   string        `json:"uid"`
	WorkloadIPs           []string      `json:"workloadIps"`
	Waypoint              *ictlGateway  `json:"waypoint,omitempty"`
	NetworkGateway        *ictlGateway  `json:"networkGateway,omitempty"`
	Protocol              string        `json:"protocol"`
	Name                  string        `json:"name"`
	Namespace             string        `json:"namespace"`
	ServiceAccount        string        `json:"serviceAccount"`
	WorkloadName          string        `json:"workloadName"`
	WorkloadType          string        `json:"workloadType"`
	CanonicalName         string        `json:"canonicalName"`
	CanonicalRevision     string        `json:"canonicalRevision"`
	ClusterID             string        `json:"clusterId"`
	TrustDomain           string        `json:"trustDomain,omitempty"`
	Locality              ictlLocality  `json:"locality,omitempty"`
	Node                  string        `json:"node"`
	Network               string        `json:"network,omitempty"`
	Status                string        `json:"status"`
	Hostname              string        `json:"hostname"`
	Capacity              uint32        `json:"capacity"`
	ApplicationTunnel     ictlAppTunnel `json:"applicationTunnel,omitempty"`
	AuthorizationPolicies []string      `json:"authorizationPolicies,omitempty"`
}

type ictlLoadBalancer struct {
	Mode               string   `json:"mode"`
	RoutingPreferences []string `json:"routingPreferences"`
	HealthPolicy       string   `json:"healthPolicy"`
}

type ictlEndpoint struct {
	WorkloadUID string            `json:"workloadUid"`
	Service     string            `json:"service"`
	Address     string            `json:"address,omitempty"`
	Port        map[uint16]uint16 `json:"port"`
}

type ictlCIDR struct {
	CIDR    string `json:"cidr"`
	Network string `json:"network,omitempty"`
}

type ictlService struct {
	Name            string                   `json:"name"`
	Namespace       string                   `json:"namespace"`
	Hostname        string                   `json:"hostname"`
	Addresses       []string                 `json:"vips"`
	CIDRVIPs        []ictlCIDR               `json:"cidrVips,omitempty"`
	Ports           map[string]int           `json:"ports"`
	LoadBalancer    *ictlLoadBalancer        `json:"loadBalancer,omitempty"`
	Waypoint        *ictlGateway             `json:"waypoint,omitempty"`
	Endpoints       map[string]*ictlEndpoint `json:"endpoints"`
	SubjectAltNames []string                 `json:"subjectAltNames,omitempty"`
	IPFamilies      string                   `json:"ipFamilies"`
	Canonical       bool                     `json:"canonical,omitempty"`
	Visibility      string                   `json:"visibility,omitempty"`
}

type ictlStringMatch struct {
	Exact    string `json:"Exact,omitempty"`
	Suffix   string `json:"Suffix,omitempty"`
	Prefix   string `json:"Prefix,omitempty"`
	Presence any    `json:"Presence,omitempty"`
}

type ictlSAMatch struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

type ictlMatch struct {
	Namespaces          []ictlStringMatch `json:"namespaces,omitempty"`
	NotNamespaces       []ictlStringMatch `json:"notNamespaces,omitempty"`
	Principals          []ictlStringMatch `json:"principals,omitempty"`
	NotPrincipals       []ictlStringMatch `json:"notPrincipals,omitempty"`
	SourceIps           []string          `json:"sourceIps,omitempty"`
	NotSourceIps        []string          `json:"notSourceIps,omitempty"`
	DestinationIps      []string          `json:"destinationIps,omitempty"`
	NotDestinationIps   []string          `json:"notDestinationIps,omitempty"`
	DestinationPorts    []uint16          `json:"destinationPorts,omitempty"`
	NotDestinationPorts []uint16          `json:"notDestinationPorts,omitempty"`
	ServiceAccounts     []ictlSAMatch     `json:"serviceAccounts,omitempty"`
	NotServiceAccounts  []ictlSAMatch     `json:"notServiceAccounts,omitempty"`
}

type ictlPolicy struct {
	Name      string           `json:"name"`
	Namespace string           `json:"namespace"`
	Scope     string           `json:"scope"`
	Action    string           `json:"action"`
	Rules     [][][]*ictlMatch `json:"rules"`
}

type ictlCerts struct {
	Identity  string      `json:"identity"`
	State     string      `json:"state"`
	CertChain []*ictlCert `json:"certChain"`
	RootCert  []*ictlCert `json:"rootCerts"`
}

type ictlCert struct {
	Pem            string `json:"pem"`
	SerialNumber   string `json:"serialNumber"`
	ValidFrom      string `json:"validFrom"`
	ExpirationTime string `json:"expirationTime"`
}

type ictlWorkloadState struct {
	State       string          `json:"state,omitempty"`
	Connections ictlConnections `json:"connections,omitempty"`
	Info        ictlPodInfo     `json:"info"`
}

type ictlConnections struct {
	Inbound  []ictlConn `json:"inbound"`
	Outbound []ictlConn `json:"outbound"`
}

type ictlPodInfo struct {
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	TrustDomain    string `json:"trustDomain"`
	ServiceAccount string `json:"serviceAccount"`
}

type ictlConn struct {
	Src         string `json:"src"`
	OriginalDst string `json:"originalDst"`
	ActualDst   string `json:"actualDst"`
	Protocol    string `json:"protocol"`
}

func checkIstioctlWorkloads(t *testing.T, d *ictlDump) {
	var uids []string
	byName := map[string]*ictlWorkload{}
	for _, w := range d.Workloads {
		uids = append(uids, w.UID)
		byName[w.Name] = w
	}
	wantUIDs := []string{"cluster1//v1/Pod/default/client", "cluster1//v1/Pod/default/legacy",
		"cluster1//v1/Pod/default/server", "cluster1//v1/Pod/default/waypoint"}
	if diff := cmp.Diff(wantUIDs, uids); diff != "" {
		t.Fatalf("workload uids, sorted (-want +got):\n%s", diff)
	}
	port := uint16(15088)
	want := map[string]*ictlWorkload{
		"client": {UID: wantUIDs[0], WorkloadIPs: []string{"10.0.0.1"}, Waypoint: &ictlGateway{"/10.96.0.100"},
			Protocol: "HBONE", Name: "client", Namespace: "default", ServiceAccount: "client",
			WorkloadName: "client", WorkloadType: "deployment", CanonicalName: "client", CanonicalRevision: "v1",
			ClusterID: "cluster1", TrustDomain: "cluster.local", Locality: ictlLocality{Region: "r1", Zone: "z1"},
			Node: "node1", Status: "Healthy", Capacity: 1, AuthorizationPolicies: []string{"default/selected"}},
		"server": {UID: wantUIDs[2], WorkloadIPs: []string{"10.0.0.2", "fd00::2"},
			Waypoint: &ictlGateway{"default/waypoint.default.svc.cluster.local"}, NetworkGateway: &ictlGateway{"net1/192.168.1.1"},
			Protocol: "HBONE", Name: "server", Namespace: "default", ServiceAccount: "server", ClusterID: "Kubernetes",
			TrustDomain: "example.org", Node: "node2", Network: "net1", Status: "Healthy", Hostname: "server-0.example.org",
			Capacity: 3, ApplicationTunnel: ictlAppTunnel{Protocol: "PROXY", Port: &port}},
		"legacy": {UID: wantUIDs[1], WorkloadIPs: []string{"10.0.0.3"}, Protocol: "TCP", Name: "legacy", Namespace: "default",
			ServiceAccount: "default", ClusterID: "Kubernetes", TrustDomain: "cluster.local", Node: "node1",
			Status: "Unhealthy", Capacity: 1},
	}
	for name, w := range want {
		if diff := cmp.Diff(w, byName[name]); diff != "" {
			t.Errorf("workload %s as istioctl reads it (-want +got):\n%s", name, diff)
		}
	}
	// istioctl's WAYPOINT column: the service whose "ns/hostname" or one of whose VIPs is the
	// waypoint destination.
	for _, name := range []string{"client", "server"} {
		if got := ictlWaypointName(d, byName[name].Waypoint); got != "waypoint" {
			t.Errorf("workload %s: istioctl resolves its waypoint %q to %q, want the waypoint service", name, byName[name].Waypoint.Destination, got)
		}
	}
}

// ictlWaypointName resolves a waypoint destination to a service name the way istioctl does.
func ictlWaypointName(d *ictlDump, g *ictlGateway) string {
	if g == nil {
		return "None"
	}
	for _, s := range d.Services {
		if g.Destination == s.Namespace+"/"+s.Hostname {
			return s.Name
		}
		for _, vip := range s.Addresses {
			if vip == g.Destination {
				return s.Name
			}
		}
	}
	return "NA"
}

func checkIstioctlServices(t *testing.T, d *ictlDump) {
	var hosts []string
	byName := map[string]*ictlService{}
	for _, s := range d.Services {
		hosts = append(hosts, s.Hostname)
		byName[s.Name] = s
	}
	wantHosts := []string{"server.default.svc.cluster.local", "strict.other.svc.cluster.local", "waypoint.default.svc.cluster.local"}
	if diff := cmp.Diff(wantHosts, hosts); diff != "" {
		t.Fatalf("service hostnames, sorted (-want +got):\n%s", diff)
	}
	want := map[string]*ictlService{
		"server": {Name: "server", Namespace: "default", Hostname: wantHosts[0],
			Addresses: []string{"/10.96.0.10", "net1/fd00::10"}, CIDRVIPs: []ictlCIDR{{CIDR: "10.97.0.0/16"}},
			Ports: map[string]int{"80": 8080, "443": 0},
			LoadBalancer: &ictlLoadBalancer{Mode: "Failover", RoutingPreferences: []string{"Network", "Region", "Zone", "Subzone"},
				HealthPolicy: "AllowAll"},
			Waypoint: &ictlGateway{"default/waypoint.default.svc.cluster.local"},
			Endpoints: map[string]*ictlEndpoint{ // AllowAll keeps the unhealthy legacy endpoint
				"cluster1//v1/Pod/default/external": {WorkloadUID: "cluster1//v1/Pod/default/external", Port: map[uint16]uint16{80: 9090}},
				"cluster1//v1/Pod/default/legacy":   {WorkloadUID: "cluster1//v1/Pod/default/legacy", Port: map[uint16]uint16{80: 8080}},
				"cluster1//v1/Pod/default/server":   {WorkloadUID: "cluster1//v1/Pod/default/server", Port: map[uint16]uint16{80: 8080, 443: 8443}},
			},
			SubjectAltNames: []string{"spiffe://example.org/ns/default/sa/server"}, IPFamilies: "Dual", Canonical: true,
			Visibility: "Public"},
		"strict": {Name: "strict", Namespace: "other", Hostname: wantHosts[1], Addresses: []string{"/10.96.0.20"},
			Ports:        map[string]int{"8080": 8080},
			LoadBalancer: &ictlLoadBalancer{Mode: "Strict", RoutingPreferences: []string{"Node", "Cluster"}, HealthPolicy: "OnlyHealthy"},
			Waypoint:     &ictlGateway{"/10.96.0.100"}, Endpoints: map[string]*ictlEndpoint{}, IPFamilies: "IPv4",
			SubjectAltNames: []string{}, // always present, as in the reference
			Visibility:      "Namespace"},
	}
	for name, s := range want {
		if diff := cmp.Diff(s, byName[name]); diff != "" {
			t.Errorf("service %s as istioctl reads it (-want +got):\n%s", name, diff)
		}
	}
	if got := ictlWaypointName(d, byName["strict"].Waypoint); got != "waypoint" {
		t.Errorf("service strict: waypoint resolves to %q, want waypoint", got)
	}
}

func checkIstioctlPolicies(t *testing.T, d *ictlDump) {
	var keys []string
	byName := map[string]*ictlPolicy{}
	for _, p := range d.Policies {
		keys = append(keys, p.Namespace+"/"+p.Name)
		byName[p.Name] = p
	}
	if diff := cmp.Diff([]string{"default/ns-allow", "default/selected", "istio-system/global"}, keys); diff != "" {
		t.Fatalf("policy keys, sorted (-want +got):\n%s", diff)
	}
	want := map[string]*ictlPolicy{
		"selected": {Name: "selected", Namespace: "default", Scope: "WorkloadSelector", Action: "Deny", Rules: [][][]*ictlMatch{
			{
				{
					{
						Namespaces:          []ictlStringMatch{{Exact: "default"}, {Prefix: "kube-"}},
						NotNamespaces:       []ictlStringMatch{{Suffix: "-system"}},
						Principals:          []ictlStringMatch{{Presence: []any{}}, {Exact: "cluster.local/ns/default/sa/client"}},
						NotPrincipals:       []ictlStringMatch{{Prefix: "evil"}},
						SourceIps:           []string{"10.0.0.0/8", "fd00::/64"},
						NotSourceIps:        []string{"10.1.2.3/32"},
						DestinationIps:      []string{"192.168.0.0/16"},
						NotDestinationIps:   []string{"192.168.1.0/24"},
						DestinationPorts:    []uint16{80, 443},
						NotDestinationPorts: []uint16{9999},
						ServiceAccounts:     []ictlSAMatch{{Namespace: "default", ServiceAccount: "client"}},
						NotServiceAccounts:  []ictlSAMatch{{Namespace: "default", ServiceAccount: "bad"}},
					},
					{DestinationPorts: []uint16{8080}},
				},
				{{NotDestinationPorts: []uint16{22}}},
			},
		}},
		"ns-allow": {Name: "ns-allow", Namespace: "default", Scope: "Namespace", Action: "Allow",
			Rules: [][][]*ictlMatch{{{{Principals: []ictlStringMatch{{Suffix: "/sa/client"}}}}}}},
		"global": {Name: "global", Namespace: "istio-system", Scope: "Global", Action: "Allow", Rules: [][][]*ictlMatch{}},
	}
	for name, p := range want {
		if diff := cmp.Diff(p, byName[name]); diff != "" {
			t.Errorf("policy %s as istioctl reads it (-want +got):\n%s", name, diff)
		}
	}
}

// checkIstioctlConnections prints the rows of `istioctl ztunnel-config connections` the way
// istioctl builds them: IPs named after the workload with that first IP, or the service
// with that first VIP.
func checkIstioctlConnections(t *testing.T, d *ictlDump) {
	names := map[string]string{}
	for _, s := range d.Services {
		if len(s.Addresses) > 0 {
			_, ip, _ := strings.Cut(s.Addresses[0], "/")
			names[ip] = s.Hostname
		}
	}
	for _, w := range d.Workloads {
		if len(w.WorkloadIPs) > 0 {
			names[w.WorkloadIPs[0]] = w.Name + "." + w.Namespace
		}
	}
	lookup := func(addr string) string {
		ip, port, _ := net.SplitHostPort(addr)
		if n, ok := names[ip]; ok {
			return net.JoinHostPort(n, port)
		}
		return addr
	}
	var rows []string
	for _, uid := range []string{"pod-uid-client", "pod-uid-waypoint"} {
		st, ok := d.WorkloadState[uid]
		if !ok {
			t.Fatalf("workloadState lacks pod %s: %v", uid, d.WorkloadState)
		}
		if st.State != "Up" {
			t.Errorf("pod %s state %q, want Up", uid, st.State)
		}
		name := st.Info.Name + "." + st.Info.Namespace
		for _, c := range st.Connections.Inbound {
			rows = append(rows, fmt.Sprintf("%s Inbound %s %s %s %s", name, lookup(c.ActualDst), lookup(c.Src), c.OriginalDst, c.Protocol))
		}
		for _, c := range st.Connections.Outbound {
			rows = append(rows, fmt.Sprintf("%s Outbound %s %s %s %s", name, lookup(c.Src), lookup(c.ActualDst), lookup(c.OriginalDst), c.Protocol))
		}
	}
	want := []string{
		"client.default Inbound client.default:8080 server.default:50000 client.default.svc.cluster.local:80 HBONE",
		"client.default Inbound client.default:9090 legacy.default:50001  TCP",
		"client.default Outbound client.default:40000 server.default:15008 server.default.svc.cluster.local:80 HBONE",
		"client.default Outbound client.default:40001  legacy.default:80 TCP",
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("istioctl connections rows (-want +got):\n%s", diff)
	}
	if info := d.WorkloadState["pod-uid-waypoint"].Info; info != (ictlPodInfo{Name: "waypoint", Namespace: "default", ServiceAccount: "waypoint"}) {
		t.Errorf("waypoint pod info %+v", info)
	}
}
