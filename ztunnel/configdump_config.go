package ztunnel

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// configJSON is the proxy's configuration in /config_dump, under the reference's key names
// where the reference has the setting (ztunnel-behavior.md §7.2, §11), plus ours (trustDomain,
// connectTimeout). Secrets are left out: header values are redacted and the token is not
// shown.
type configJSON struct {
	Proxy                    bool              `json:"proxy"`
	DNSProxy                 bool              `json:"dnsProxy"`
	WindowSize               uint32            `json:"windowSize"`
	ConnectionWindowSize     uint32            `json:"connectionWindowSize"`
	FrameSize                uint32            `json:"frameSize"`
	PoolMaxStreamsPerConn    int               `json:"poolMaxStreamsPerConn"`
	PoolUnusedReleaseTimeout durationJSON      `json:"poolUnusedReleaseTimeout"`
	AdminAddr                string            `json:"adminAddr"`
	StatsAddr                string            `json:"statsAddr"`
	ReadinessAddr            string            `json:"readinessAddr"`
	InboundAddr              string            `json:"inboundAddr"`
	InboundPlaintextAddr     string            `json:"inboundPlaintextAddr"`
	OutboundAddr             string            `json:"outboundAddr"`
	IllegalPorts             []uint16          `json:"illegalPorts"`
	Network                  string            `json:"network"`
	LocalNode                *string           `json:"localNode"`
	ProxyMode                string            `json:"proxyMode"`
	ClusterID                string            `json:"clusterId"`
	TrustDomain              string            `json:"trustDomain"`
	CAAddress                *string           `json:"caAddress"`
	CARootCert               any               `json:"caRootCert"`
	AltCAHostname            *string           `json:"altCaHostname"`
	XDSAddress               *string           `json:"xdsAddress"`
	XDSRootCert              any               `json:"xdsRootCert"`
	AltXDSHostname           *string           `json:"altXdsHostname"`
	SecretTTL                durationJSON      `json:"secretTtl"`
	XDSOnDemand              bool              `json:"xdsOnDemand"`
	FakeCA                   bool              `json:"fakeCa"` // true: the built-in CA issues certificates
	SelfTerminationDeadline  durationJSON      `json:"selfTerminationDeadline"`
	ConnectTimeout           durationJSON      `json:"connectTimeout"`
	ProxyMetadata            map[string]string `json:"proxyMetadata"`
	RequireOriginalSource    *bool             `json:"requireOriginalSource"`
	InpodUDS                 string            `json:"inpodUds"`
	InpodPortReuse           bool              `json:"inpodPortReuse"`
	PacketMark               uint32            `json:"packetMark"`
	XDSHeaders               [][2]string       `json:"xdsHeaders"`
	CAHeaders                [][2]string       `json:"caHeaders"`
	IPv6Enabled              bool              `json:"ipv6Enabled"`
}

// durationJSON spells a duration as the reference does: {"secs": 300, "nanos": 0}.
type durationJSON struct {
	Secs  int64 `json:"secs"`
	Nanos int64 `json:"nanos"`
}

func dumpDuration(d time.Duration) durationJSON {
	return durationJSON{Secs: int64(d / time.Second), Nanos: int64(d % time.Second)}
}

func dumpConfig(c Config) configJSON {
	listen := func(port int) string {
		if *c.IPv6 {
			return fmt.Sprintf("[::]:%d", port)
		}
		return fmt.Sprintf("0.0.0.0:%d", port)
	}
	meta := c.Meta
	if meta == nil {
		meta = map[string]string{}
	}
	return configJSON{
		Proxy:                    true,
		WindowSize:               c.StreamWindow,
		ConnectionWindowSize:     c.ConnectionWindow,
		FrameSize:                c.FrameSize,
		PoolMaxStreamsPerConn:    c.PoolMaxStreams,
		PoolUnusedReleaseTimeout: dumpDuration(c.PoolUnusedRelease),
		AdminAddr:                c.AdminAddr,
		StatsAddr:                c.MetricsAddr,
		ReadinessAddr:            c.ReadinessAddr,
		InboundAddr:              listen(HBONEPort),
		InboundPlaintextAddr:     listen(InboundPort),
		OutboundAddr:             listen(OutboundPort),
		IllegalPorts:             []uint16{OutboundPort, InboundPort, HBONEPort},
		Network:                  c.Network,
		LocalNode:                nonEmpty(c.NodeName),
		ProxyMode:                "Shared",
		ClusterID:                c.ClusterID,
		TrustDomain:              c.TrustDomain,
		CAAddress:                nonEmpty(c.CA.Address),
		CARootCert:               dumpRootCert(c.CA),
		AltCAHostname:            nonEmpty(c.CA.AltHostname),
		XDSAddress:               nonEmpty(c.XDS.Address),
		XDSRootCert:              dumpRootCert(c.XDS),
		AltXDSHostname:           nonEmpty(c.XDS.AltHostname),
		SecretTTL:                dumpDuration(c.SecretTTL),
		XDSOnDemand:              c.XDSOnDemand,
		FakeCA:                   c.CA.Address == "",
		SelfTerminationDeadline:  dumpDuration(c.TerminationDeadline),
		ConnectTimeout:           dumpDuration(c.ConnectTimeout),
		ProxyMetadata:            meta,
		RequireOriginalSource:    c.OrigSrc,
		InpodUDS:                 c.InPodUDS,
		InpodPortReuse:           *c.PortReuse,
		PacketMark:               c.PacketMark,
		XDSHeaders:               redactHeaders(c.XDS.Headers),
		CAHeaders:                redactHeaders(c.CA.Headers),
		IPv6Enabled:              *c.IPv6,
	}
}

// dumpRootCert spells a root CA setting as the reference's RootCert enum: {"File": path},
// "Static" (inline PEM) or "Default" (the system roots); null without a control plane.
func dumpRootCert(cp ControlPlane) any {
	switch {
	case cp.Address == "":
		return nil
	case cp.RootCA == "SYSTEM":
		return "Default"
	case strings.Contains(cp.RootCA, "-----BEGIN"):
		return "Static"
	}
	return map[string]string{"File": cp.RootCA}
}

// redactHeaders lists header names with their values hidden: they often carry credentials.
func redactHeaders(h map[string]string) [][2]string {
	out := make([][2]string, 0, len(h))
	for k := range h {
		out = append(out, [2]string{k, "<redacted>"})
	}
	slices.SortFunc(out, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return out
}

// versionJSON is the build in /config_dump, under the reference's keys plus goVersion.
// rustVersion is empty: this is not a Rust build.
type versionJSON struct {
	Version        string `json:"version"`
	GitRevision    string `json:"gitRevision"`
	RustVersion    string `json:"rustVersion"`
	BuildProfile   string `json:"buildProfile"`
	BuildStatus    string `json:"buildStatus"`
	IstioVersion   string `json:"istioVersion"`
	CryptoProvider string `json:"cryptoProvider"`
	GoVersion      string `json:"goVersion"`
}

// dumpVersion reads the build information the Go toolchain embeds (module version, VCS
// revision and whether the tree was modified).
func dumpVersion(meta map[string]string) versionJSON {
	v := versionJSON{Version: "unknown", GitRevision: "unknown", BuildProfile: "release",
		BuildStatus: "unknown", IstioVersion: "unknown", CryptoProvider: "go", GoVersion: runtime.Version()}
	if iv := meta["ISTIO_VERSION"]; iv != "" {
		v.IstioVersion = iv
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.GitRevision = s.Value
		case "vcs.modified":
			v.BuildStatus = map[bool]string{true: "Modified", false: "Clean"}[s.Value == "true"]
		case "-race":
			if s.Value == "true" {
				v.BuildProfile = "race"
			}
		}
	}
	return v
}
