package workload

import (
	"cmp"
	"fmt"
	"net/netip"

	"go.yaml.in/yaml/v3"
)

// workload decodes workloads[i].
func (d *decoder) workload(i int, n *yaml.Node) (*Workload, error) {
	d.entry = fmt.Sprintf("workloads[%d]", i)
	if uid := scalarValue(n, "uid"); uid != "" {
		d.entry += fmt.Sprintf(" (uid %q)", uid)
	}
	defer func() { d.entry = "" }()

	w := d.newWorkload()
	w.Capacity = 1
	ipsSet := false
	err := d.mapping(n, "", map[string]handler{
		"uid":               d.setStr(&w.UID),
		"name":              d.setStr(&w.Name),
		"namespace":         d.setStr(&w.Namespace),
		"trustDomain":       d.setStr(&w.TrustDomain),
		"serviceAccount":    d.setStr(&w.ServiceAccount),
		"network":           d.setStr(&w.Network),
		"node":              d.setStr(&w.Node),
		"clusterId":         d.setStr(&w.ClusterID),
		"hostname":          d.setStr(&w.Hostname),
		"workloadName":      d.setStr(&w.WorkloadName),
		"workloadType":      d.setStr(&w.WorkloadType),
		"canonicalName":     d.setStr(&w.CanonicalName),
		"canonicalRevision": d.setStr(&w.CanonicalRevision),
		"nativeTunnel":      d.setBool(&w.NativeTunnel),
		"protocol":          enum(d, &w.Protocol, ParseProtocol),
		"status":            enum(d, &w.Status, ParseStatus),
		"networkMode":       enum(d, &w.NetworkMode, ParseNetworkMode),
		"workloadIps": func(v *yaml.Node, f string) error {
			ipsSet = true
			ips := d.ips[:0]
			err := d.seq(v, f, func(item *yaml.Node, f string) error {
				ip, err := d.ip(item, f)
				ips = append(ips, ip)
				return err
			})
			d.ips = ips
			if w.IPs = d.addrs.clone(ips); w.IPs == nil {
				w.IPs = []netip.Addr{} // set, but empty
			}
			return err
		},
		"locality": func(v *yaml.Node, f string) error {
			return d.mapping(v, f, map[string]handler{
				"region":  d.setStr(&w.Locality.Region),
				"zone":    d.setStr(&w.Locality.Zone),
				"subzone": d.setStr(&w.Locality.Subzone),
			})
		},
		"capacity": func(v *yaml.Node, f string) (err error) {
			w.Capacity, err = d.uint32(v, f)
			return err
		},
		"waypoint": func(v *yaml.Node, f string) (err error) {
			w.Waypoint, err = d.gateway(v, f)
			return err
		},
		"networkGateway": func(v *yaml.Node, f string) (err error) {
			w.NetworkGateway, err = d.gateway(v, f)
			return err
		},
		"applicationTunnel": func(v *yaml.Node, f string) error {
			w.ApplicationTunnel = &ApplicationTunnel{}
			return d.mapping(v, f, map[string]handler{
				"protocol": enum(d, &w.ApplicationTunnel.Protocol, oneOf("application tunnel protocol", "NONE", "PROXY")),
				"port": func(v *yaml.Node, f string) (err error) {
					w.ApplicationTunnel.Port, err = d.port(v, f, true)
					return err
				},
			}, "protocol")
		},
		"authorizationPolicies": d.setStrList(&w.AuthorizationPolicies),
		"labels": func(v *yaml.Node, f string) (err error) {
			w.Labels, err = d.labels(v, f)
			return err
		},
		"services": func(v *yaml.Node, f string) (err error) {
			w.Services, err = d.workloadServices(v, f)
			return err
		},
	}, "uid", "name", "namespace")
	if err == nil {
		err = d.nonEmpty(n, "uid", w.UID)
	}
	if err != nil {
		return w, err
	}
	if !ipsSet && w.Hostname == "" && w.NetworkGateway == nil {
		// A workload without an address is reachable only through its network's gateway: the
		// "split-horizon" workload istiod sends for a remote network (multinetwork-and-policy.md §1.1).
		return w, d.fail(n, "workloadIps", "missing required field (or set hostname, or networkGateway for a workload behind a network gateway)")
	}
	w.Name = d.in.nameOf(w.UID, w.Name)
	w.Services = d.in.serviceMap(w.Services)
	w.TrustDomain = cmp.Or(w.TrustDomain, DefaultTrustDomain)
	w.ServiceAccount = cmp.Or(w.ServiceAccount, DefaultServiceAccount)
	w.ClusterID = cmp.Or(w.ClusterID, DefaultClusterID)
	return w, nil
}

// minWorkloadNodes is the fewest nodes decoding a workload charges to the budget (besides
// entryCost): the list item, its mapping, and the values of uid, name, namespace and
// workloadIps or hostname.
const minWorkloadNodes = 6

// workloadBlock is the most workload structs allocated at once.
const workloadBlock = 1024

// newWorkload returns a zero Workload, carved from blocks of up to workloadBlock structs while
// more workloads are expected (reserveWorkloads).
func (d *decoder) newWorkload() *Workload {
	if len(d.workloads) == 0 && d.reserved > 0 {
		n := min(d.reserved, workloadBlock)
		d.workloads, d.reserved = make([]Workload, n), d.reserved-n
	}
	if len(d.workloads) == 0 {
		return new(Workload)
	}
	w := &d.workloads[0]
	d.workloads = d.workloads[1:]
	return w
}

// workloadServices decodes {"ns/hostname": {servicePort: targetPort}}.
func (d *decoder) workloadServices(n *yaml.Node, field string) (map[string]map[uint16]uint16, error) {
	if n.Kind != yaml.MappingNode {
		return nil, d.fail(n, field, "want a mapping of namespace/hostname to ports, got %s", kindName(n))
	}
	out := d.svcs // scratch: the interner copies it
	clear(out)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, err := d.resolve(n.Content[i], field)
		if err != nil {
			return nil, err
		}
		key, err := d.str(kn, field)
		if err != nil {
			return nil, err
		}
		f := fmt.Sprintf("%s[%q]", field, key)
		if _, err := ParseNamespacedHostname(key); err != nil {
			return nil, d.fail(kn, f, "%w", err)
		}
		if _, dup := out[key]; dup {
			return nil, d.fail(kn, f, "service listed twice")
		}
		vn, err := d.resolve(n.Content[i+1], f)
		if err != nil {
			return nil, err
		}
		ports := d.emptyPorts()
		if !isNull(vn) {
			if ports, err = d.portMap(vn, f); err != nil {
				return nil, err
			}
		}
		out[key] = ports
	}
	return out, nil
}

// gateway decodes a GatewayAddress: {destination: "network/ip" | "ns/hostname", hboneMtlsPort}.
func (d *decoder) gateway(n *yaml.Node, field string) (*GatewayAddress, error) {
	var g GatewayAddress
	var port uint16
	err := d.mapping(n, field, map[string]handler{
		"destination": func(v *yaml.Node, f string) error {
			s, err := d.str(v, f)
			if err != nil {
				return err
			}
			if g, err = ParseGatewayDestination(s); err != nil {
				return d.fail(v, f, "%w", err)
			}
			return nil
		},
		"hboneMtlsPort": func(v *yaml.Node, f string) (err error) {
			port, err = d.port(v, f, false)
			return err
		},
	}, "destination", "hboneMtlsPort")
	g.HBONEMTLSPort = port
	return &g, err
}
