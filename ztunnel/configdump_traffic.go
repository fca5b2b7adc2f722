package ztunnel

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ztunnel-go/ztunnel/workload"
)

// trafficPolicyJSON is the config dump's trafficPolicy section (not in the reference, which reads
// no DestinationRule or VirtualService): the rules in force, each with the hosts it applies to and
// its spec as written.
type trafficPolicyJSON struct {
	DestinationRules []trafficObjectJSON `json:"destinationRules"` // sorted by namespace/name
	VirtualServices  []trafficObjectJSON `json:"virtualServices"`  // sorted by namespace/name
}

type trafficObjectJSON struct {
	Name      string          `json:"name"`
	Namespace string          `json:"namespace"`
	Hosts     []string        `json:"hosts"` // fully qualified
	Spec      json.RawMessage `json:"spec,omitempty"`
}

// dumpTraffic lists the traffic policy of ti (nil: none).
func dumpTraffic(ti *workload.TrafficIndex) trafficPolicyJSON {
	out := trafficPolicyJSON{DestinationRules: []trafficObjectJSON{}, VirtualServices: []trafficObjectJSON{}}
	for _, d := range ti.Destinations() {
		out.DestinationRules = append(out.DestinationRules, trafficObjectJSON{Name: d.Name, Namespace: d.Namespace,
			Hosts: []string{d.Host}, Spec: specJSON(d.Source)})
	}
	for _, r := range ti.Routes() {
		out.VirtualServices = append(out.VirtualServices, trafficObjectJSON{Name: r.Name, Namespace: r.Namespace,
			Hosts: append([]string{}, r.Hosts...), Spec: specJSON(r.Source)})
	}
	return out
}

// specJSON is the istio.io/api spec in its JSON form; nil when there is none.
func specJSON(src any) json.RawMessage {
	m, ok := src.(proto.Message)
	if !ok || m == nil {
		return nil
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil
	}
	return b
}
