package workload

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// service decodes services[i].
func (d *decoder) service(i int, n *yaml.Node) (*Service, error) {
	d.entry = fmt.Sprintf("services[%d]", i)
	ns, host := scalarValue(n, "namespace"), scalarValue(n, "hostname")
	if ns != "" && host != "" {
		d.entry += fmt.Sprintf(" (service %q)", ns+"/"+host)
	}
	defer func() { d.entry = "" }()

	s := &Service{}
	err := d.mapping(n, "", map[string]handler{
		"name":            d.setStr(&s.Name),
		"namespace":       d.setStr(&s.Namespace),
		"hostname":        d.setStr(&s.Hostname),
		"subjectAltNames": d.setStrList(&s.SubjectAltNames),
		"canonical":       d.setBool(&s.Canonical),
		"ports":           d.setPortMap(&s.Ports),
		"ipFamilies":      enum(d, &s.IPFamilies, oneOf("IP families", IPFamiliesDual, IPFamiliesIPv4, IPFamiliesIPv6)),
		"visibility":      enum(d, &s.Visibility, oneOf("visibility", VisibilityPublic, VisibilityNamespace)),
		"vips": func(v *yaml.Node, f string) error {
			return d.seq(v, f, func(item *yaml.Node, f string) error {
				str, err := d.scalar(item, f)
				if err != nil {
					return err
				}
				a, err := ParseNetworkAddress(str)
				if err != nil {
					return d.fail(item, f, "%w", err)
				}
				a.Network = d.in.str(a.Network)
				s.VIPs = append(s.VIPs, a)
				return nil
			})
		},
		"cidrVips": func(v *yaml.Node, f string) error {
			return d.seq(v, f, func(item *yaml.Node, f string) error {
				var p NetworkPrefix
				err := d.mapping(item, f, map[string]handler{
					"network": d.setStr(&p.Network),
					"cidr": func(v *yaml.Node, f string) (err error) {
						p.Prefix, err = d.cidr(v, f)
						return err
					},
				}, "cidr")
				s.CIDRVIPs = append(s.CIDRVIPs, p)
				return err
			})
		},
		"endpoints": func(v *yaml.Node, f string) (err error) {
			s.Endpoints, err = d.endpoints(v, f)
			return err
		},
		"waypoint": func(v *yaml.Node, f string) (err error) {
			s.Waypoint, err = d.gateway(v, f)
			return err
		},
		"weightedWaypoints": func(v *yaml.Node, f string) error {
			return d.seq(v, f, func(item *yaml.Node, f string) error {
				var ww WeightedWaypoint
				err := d.mapping(item, f, map[string]handler{
					"destination": func(v *yaml.Node, f string) error {
						g, err := d.gateway(v, f)
						ww.Destination = *g
						return err
					},
					"weight": func(v *yaml.Node, f string) (err error) {
						ww.Weight, err = d.uint32(v, f)
						return err
					},
				}, "destination", "weight")
				s.WeightedWaypoints = append(s.WeightedWaypoints, ww)
				return err
			})
		},
		"loadBalancer": func(v *yaml.Node, f string) error {
			lb := &LoadBalancing{}
			s.LoadBalancing = lb
			return d.mapping(v, f, map[string]handler{
				"mode":         enum(d, &lb.Mode, ParseLBMode),
				"healthPolicy": enum(d, &lb.HealthPolicy, ParseHealthPolicy),
				"routingPreferences": func(v *yaml.Node, f string) error {
					return d.seq(v, f, func(item *yaml.Node, f string) error {
						var sc Scope
						err := enum(d, &sc, ParseScope)(item, f)
						lb.RoutingPreference = append(lb.RoutingPreference, sc)
						return err
					})
				},
			})
		},
	}, "name", "namespace", "hostname")
	if err == nil {
		err = d.nonEmpty(n, "namespace", s.Namespace, "hostname", s.Hostname)
	}
	return s, err
}

// endpoints decodes {uid: {workloadUid, port: {servicePort: targetPort}, status}}.
func (d *decoder) endpoints(n *yaml.Node, field string) (map[string]*Endpoint, error) {
	if n.Kind != yaml.MappingNode {
		return nil, d.fail(n, field, "want a mapping of workload uid to endpoint, got %s", kindName(n))
	}
	out := make(map[string]*Endpoint, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, err := d.resolve(n.Content[i], field)
		if err != nil {
			return nil, err
		}
		uid, err := d.str(kn, field)
		if err != nil {
			return nil, err
		}
		f := fmt.Sprintf("%s[%q]", field, uid)
		if uid == "" {
			return nil, d.fail(kn, f, "empty workload uid")
		}
		if _, dup := out[uid]; dup {
			return nil, d.fail(kn, f, "endpoint listed twice")
		}
		ep := &Endpoint{WorkloadUID: uid, Port: d.emptyPorts()}
		err = d.mapping(n.Content[i+1], f, map[string]handler{
			"workloadUid": func(v *yaml.Node, f string) error {
				s, err := d.scalar(v, f)
				if err == nil && s != uid {
					err = d.fail(v, f, "workload uid %q does not match its key %q", s, uid)
				}
				return err
			},
			"port":   d.setPortMap(&ep.Port),
			"status": enum(d, &ep.Status, ParseStatus),
		})
		if err != nil {
			return nil, err
		}
		out[uid] = ep
	}
	return out, nil
}
