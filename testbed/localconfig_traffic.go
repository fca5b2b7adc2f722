package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/ztunnel-go/ztunnel/workload"
)

// DestinationRule is an Istio DestinationRule object: its name, namespace and spec. A short host
// in the spec ("reviews") means "<host>.<Namespace>.svc.cluster.local".
type DestinationRule struct {
	Name, Namespace string
	Spec            *networking.DestinationRule
}

// VirtualService is an Istio VirtualService object: its name, namespace and spec. The proxies
// apply its tcp routes.
type VirtualService struct {
	Name, Namespace string
	Spec            *networking.VirtualService
}

// TrafficPolicy is a cluster's traffic policy: the DestinationRule and VirtualService objects a
// Kubernetes cluster would hold, in creation order (of two objects for one host the first
// applies).
type TrafficPolicy struct {
	DestinationRules []DestinationRule
	VirtualServices  []VirtualService
}

// SetTrafficPolicy replaces the cluster's traffic policy with tp (an empty tp removes it),
// writes it into every network's local config (its destinationRules and virtualServices keys,
// the same objects on every network, as a shared control plane sends them) and waits until
// every proxy loaded it. tp is checked first as the proxies compile it
// (workload.CompileTraffic, with the workload labels the config carries: the well-known ones
// only): every problem is reported, naming the object and field, and nothing is written. Not
// available with Config.ControlPlane (the fake istiod serves no traffic policy).
func (c *Cluster) SetTrafficPolicy(ctx context.Context, tp TrafficPolicy) error {
	if c.istiod != nil {
		return errors.New("set traffic policy: not available with Config.ControlPlane (the fake istiod serves no traffic policy)")
	}
	data, err := renderTraffic(tp)
	if err != nil {
		return fmt.Errorf("set traffic policy: %w", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("set traffic policy: cluster is closed")
	}
	c.traffic = data
	c.mu.Unlock()
	c.log.Info("setting traffic policy", "destinationRules", len(tp.DestinationRules), "virtualServices", len(tp.VirtualServices))
	if err := c.WriteConfig(); err != nil {
		return fmt.Errorf("set traffic policy: %w", err)
	}
	if err := c.WaitConfigApplied(ctx); err != nil {
		return fmt.Errorf("set traffic policy: %w", err)
	}
	return nil
}

// trafficObject is a DestinationRule or VirtualService in the local config, as in Kubernetes
// YAML.
type trafficObject struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   trafficObjMeta `yaml:"metadata"`
	Spec       *yaml.Node     `yaml:"spec"`
}

type trafficObjMeta struct {
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
}

// trafficKeys are the top-level keys of the local config that hold traffic policy.
type trafficKeys struct {
	DestinationRules []trafficObject `yaml:"destinationRules,omitempty"`
	VirtualServices  []trafficObject `yaml:"virtualServices,omitempty"`
}

// renderTraffic checks tp (see SetTrafficPolicy) and renders it as the destinationRules and
// virtualServices keys of a local config: YAML text to append to a rendered config, whose
// top-level mapping it extends. An empty tp renders as nothing (nil).
func renderTraffic(tp TrafficPolicy) ([]byte, error) {
	if len(tp.DestinationRules) == 0 && len(tp.VirtualServices) == 0 {
		return nil, nil
	}
	var keys trafficKeys
	var drs []*workload.NamedDestinationRule
	var vss []*workload.NamedVirtualService
	for i, dr := range tp.DestinationRules {
		o, err := newTrafficObject("DestinationRule", dr.Name, dr.Namespace, dr.Spec)
		if err != nil {
			return nil, fmt.Errorf("destination rule %d (%s/%s): %w", i, dr.Namespace, dr.Name, err)
		}
		keys.DestinationRules = append(keys.DestinationRules, o)
		drs = append(drs, &workload.NamedDestinationRule{Name: dr.Name, Namespace: dr.Namespace, Spec: dr.Spec})
	}
	for i, vs := range tp.VirtualServices {
		o, err := newTrafficObject("VirtualService", vs.Name, vs.Namespace, vs.Spec)
		if err != nil {
			return nil, fmt.Errorf("virtual service %d (%s/%s): %w", i, vs.Namespace, vs.Name, err)
		}
		keys.VirtualServices = append(keys.VirtualServices, o)
		vss = append(vss, &workload.NamedVirtualService{Name: vs.Name, Namespace: vs.Namespace, Spec: vs.Spec})
	}
	// The rendered config carries no explicit workload labels: LabelKeys nil.
	if _, _, err := workload.CompileTraffic(drs, vss, workload.TrafficOptions{}); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(keys); err != nil {
		return nil, fmt.Errorf("encode traffic policy: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode traffic policy: %w", err)
	}
	return buf.Bytes(), nil
}

// newTrafficObject converts an object to its local config form: the spec goes through protojson
// (the JSON names of the Kubernetes YAML) and is written in block style.
func newTrafficObject[M interface {
	*networking.DestinationRule | *networking.VirtualService
	proto.Message
}](kind, name, namespace string, spec M) (trafficObject, error) {
	if err := checkName("name", name); err != nil {
		return trafficObject{}, err
	}
	if err := checkName("namespace", namespace); err != nil {
		return trafficObject{}, err
	}
	if spec == nil {
		return trafficObject{}, errors.New("no spec")
	}
	js, err := protojson.Marshal(spec)
	if err != nil {
		return trafficObject{}, fmt.Errorf("encode spec: %w", err)
	}
	var n yaml.Node // JSON is YAML: its nodes keep the scalars exactly as protojson wrote them
	if err := yaml.Unmarshal(js, &n); err != nil {
		return trafficObject{}, fmt.Errorf("convert spec to YAML: %w", err)
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = *n.Content[0]
	}
	blockStyle(&n)
	return trafficObject{APIVersion: "networking.istio.io/v1", Kind: kind,
		Metadata: trafficObjMeta{Name: name, Namespace: namespace}, Spec: &n}, nil
}

// blockStyle clears the flow and quoting styles JSON left on n and below, so the encoder writes
// block style and quotes only the strings that need it.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}
