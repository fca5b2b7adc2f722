package ztunnel

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
)

// certsJSON is one identity's entry in the "certificates" list of /config_dump.
type certsJSON struct {
	Identity  string     `json:"identity"`
	State     string     `json:"state"`
	CertChain []certJSON `json:"certChain"` // leaf first, then intermediates
	RootCerts []certJSON `json:"rootCerts"`
}

// certJSON describes one certificate as istioctl reads it: the PEM base64-encoded, the
// serial number in decimal, the validity in RFC 3339 (UTC, whole seconds).
type certJSON struct {
	PEM            string `json:"pem"`
	SerialNumber   string `json:"serialNumber"`
	ValidFrom      string `json:"validFrom"`
	ExpirationTime string `json:"expirationTime"`
}

func dumpCerts(states []certs.CertState) []certsJSON {
	out := make([]certsJSON, 0, len(states))
	for _, s := range states {
		out = append(out, certsJSON{
			Identity:  s.Identity,
			State:     s.State,
			CertChain: dumpCertList(s.Chain),
			RootCerts: dumpCertList(s.Roots),
		})
	}
	return out
}

func dumpCertList(cs []*x509.Certificate) []certJSON {
	out := make([]certJSON, 0, len(cs))
	for _, c := range cs {
		out = append(out, dumpCert(c))
	}
	return out
}

func dumpCert(c *x509.Certificate) certJSON {
	j := certJSON{
		PEM:            base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})),
		ValidFrom:      rfc3339(c.NotBefore),
		ExpirationTime: rfc3339(c.NotAfter),
	}
	if c.SerialNumber != nil {
		j.SerialNumber = c.SerialNumber.String() // decimal
	}
	return j
}

func rfc3339(t time.Time) string { return t.UTC().Truncate(time.Second).Format(time.RFC3339) }

// workloadStateJSON is one enrolled pod in the "workloadState" map of /config_dump, keyed by
// pod uid (the reference's in-pod admin handler).
type workloadStateJSON struct {
	State       string           `json:"state"` // "Up" | "Pending"
	Connections *connectionsJSON `json:"connections,omitempty"`
	Info        podInfoJSON      `json:"info"`
}

type podInfoJSON struct {
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

type connectionsJSON struct {
	Inbound  []connJSON `json:"inbound"`
	Outbound []connJSON `json:"outbound"`
}

// connJSON is one live connection. OriginalDst is null when unknown (an inbound connection
// without a destination service); ActualDst is null until the proxy connected.
type connJSON struct {
	Src         string  `json:"src"`
	OriginalDst *string `json:"originalDst"`
	ActualDst   *string `json:"actualDst"`
	Protocol    string  `json:"protocol"`
}

// dumpPods returns the state of every enrolled pod. Pods are read under m.mu, their
// connections afterwards (each pod's tracker has its own lock).
func (m *podManager) dumpPods() map[string]workloadStateJSON {
	m.mu.Lock()
	pods := make([]*podProxy, 0, len(m.pods))
	for _, pod := range m.pods {
		pods = append(pods, pod)
	}
	out := make(map[string]workloadStateJSON, len(pods)+len(m.pending))
	for uid, pp := range m.pending {
		out[uid] = workloadStateJSON{
			State: "Pending",
			Info:  podInfoJSON{Name: pp.info.Name, Namespace: pp.info.Namespace, ServiceAccount: pp.info.ServiceAccount},
		}
	}
	m.mu.Unlock()
	for _, pod := range pods {
		conns := &connectionsJSON{Inbound: []connJSON{}, Outbound: []connJSON{}}
		for _, v := range pod.conns.views() {
			c := connJSON{Src: v.Src, OriginalDst: nonEmpty(v.OriginalDst), ActualDst: nonEmpty(v.ActualDst), Protocol: v.Protocol}
			if v.Direction == "inbound" {
				conns.Inbound = append(conns.Inbound, c)
			} else {
				conns.Outbound = append(conns.Outbound, c)
			}
		}
		out[pod.uid] = workloadStateJSON{
			State:       "Up", // a pod is listed once its listeners run
			Connections: conns,
			Info:        podInfoJSON{Name: pod.info.Name, Namespace: pod.info.Namespace, ServiceAccount: pod.info.ServiceAccount},
		}
	}
	return out
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
