package ztunnel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ztunnel-go/ztunnel/workload"
)

// configDump is the document served at /config_dump (ztunnel-behavior.md §7.2), the one
// `istioctl ztunnel-config` reads. The reference builds it as a generic JSON value, so its
// keys come out sorted at every level; marshalDump does the same.
type configDump struct {
	Workloads      []workloadJSON               `json:"workloads"`      // sorted by uid
	Services       []serviceJSON                `json:"services"`       // sorted by hostname
	Policies       []policyJSON                 `json:"policies"`       // sorted by namespace/name
	StagedServices map[string]any               `json:"stagedServices"` // always empty here
	StaticConfig   staticConfigJSON             `json:"staticConfig"`
	Version        versionJSON                  `json:"version"`
	Config         configJSON                   `json:"config"`
	Certificates   []certsJSON                  `json:"certificates"` // sorted by identity
	WorkloadState  map[string]workloadStateJSON `json:"workloadState"`

	// OutlierDetection is the outlier detector's state (not in the reference), by service, subset.
	OutlierDetection []outlierClusterJSON `json:"outlierDetection"`
	// TrafficPolicy is the DestinationRules and VirtualServices in force (not in the reference).
	TrafficPolicy trafficPolicyJSON `json:"trafficPolicy"`
}

// staticConfigJSON echoes the local config (LOCAL_XDS_PATH or LOCAL_XDS); empty lists
// without one.
type staticConfigJSON struct {
	Workloads []workloadJSON `json:"workloads"`
	Policies  []policyJSON   `json:"policies"`
	Services  []serviceJSON  `json:"services"`
}

// configDump collects the current state: the workload snapshot, the local config, the
// configuration, the certificates and the enrolled pods.
func (p *Proxy) configDump() configDump {
	snap := p.store.Load()
	d := configDump{
		Workloads:      make([]workloadJSON, 0, len(snap.Workloads())),
		Services:       make([]serviceJSON, 0, len(snap.Services())),
		Policies:       make([]policyJSON, 0, len(snap.Policies())),
		StagedServices: map[string]any{},
		StaticConfig:   staticConfigJSON{Workloads: []workloadJSON{}, Policies: []policyJSON{}, Services: []serviceJSON{}},
		Version:        dumpVersion(p.cfg.Meta),
		Config:         dumpConfig(p.cfg),
		Certificates:   dumpCerts(p.certs.Dump()),
		WorkloadState:  p.pods.dumpPods(),
	}
	d.OutlierDetection = p.outliers.dump()
	d.TrafficPolicy = dumpTraffic(snap.Traffic())
	for _, w := range snap.Workloads() {
		d.Workloads = append(d.Workloads, dumpLiveWorkload(w))
	}
	for _, s := range snap.Services() {
		d.Services = append(d.Services, dumpService(s))
	}
	for _, pol := range snap.Policies() {
		d.Policies = append(d.Policies, dumpPolicy(pol))
	}
	if lc := p.localConfig(); lc != nil {
		for _, w := range lc.Workloads {
			d.StaticConfig.Workloads = append(d.StaticConfig.Workloads, dumpStaticWorkload(w))
		}
		for _, pol := range lc.Policies {
			d.StaticConfig.Policies = append(d.StaticConfig.Policies, dumpPolicy(pol))
		}
		for _, s := range lc.Services {
			d.StaticConfig.Services = append(d.StaticConfig.Services, dumpService(s))
		}
	}
	return d
}

// localConfig is the local config in use: the file's last good version, or the inline
// config (parsed again; New already accepted it). Nil in xDS mode.
func (p *Proxy) localConfig() *workload.LocalConfig {
	if p.file != nil {
		return p.file.Last()
	}
	if p.cfg.LocalXDS == "" {
		return nil
	}
	lc, err := workload.ParseLocalConfig("LOCAL_XDS", []byte(p.cfg.LocalXDS))
	if err != nil {
		p.log.Error("config dump: cannot parse LOCAL_XDS for staticConfig", "error", err)
		return nil
	}
	return lc
}

// marshalDump renders v as indented JSON with the keys of every object sorted and without
// HTML escaping, as the reference prints it.
func marshalDump(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep numbers exactly as written
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(generic); err != nil { // maps encode with sorted keys
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// serveConfigDump answers /config_dump (any method) with the pretty JSON dump.
func (p *Proxy) serveConfigDump(w http.ResponseWriter, _ *http.Request) {
	body, err := marshalDump(p.configDump())
	if err != nil {
		plainText(w, http.StatusInternalServerError, fmt.Sprintf("render config dump: %v\n", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}
