package ztunnel

import (
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/workload"
)

func envOf(kv map[string]string) []string {
	var out []string
	for k, v := range kv {
		out = append(out, k+"="+v)
	}
	return out
}

func getenvOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestFromEnvDefaults(t *testing.T) {
	c, err := FromEnv(envOf(map[string]string{"LOCAL_XDS_PATH": "/etc/zt.yaml", "NODE_NAME": "worker1"}))
	if err != nil {
		t.Fatal(err)
	}
	c = c.withDefaults()
	checks := []struct {
		name      string
		got, want any
	}{
		{"LocalXDSPath", c.LocalXDSPath, "/etc/zt.yaml"},
		{"NodeName", c.NodeName, "worker1"},
		{"TrustDomain", c.TrustDomain, "cluster.local"},
		{"ClusterID", c.ClusterID, "Kubernetes"},
		{"InPodUDS", c.InPodUDS, "/var/run/ztunnel/ztunnel.sock"},
		{"PacketMark", c.PacketMark, uint32(1337)},
		{"PortReuse", *c.PortReuse, true},
		{"IPv6", *c.IPv6, true},
		{"OrigSrc", c.OrigSrc == nil, true},
		{"PoolMaxStreams", c.PoolMaxStreams, 100},
		{"PoolSpreadConns", c.PoolSpreadConns, 1},
		{"PoolUnusedRelease", c.PoolUnusedRelease, 5 * time.Minute},
		{"StreamWindow", c.StreamWindow, uint32(4 << 20)},
		{"ConnectionWindow", c.ConnectionWindow, uint32(16 << 20)},
		{"FrameSize", c.FrameSize, uint32(1 << 20)},
		{"SecretTTL", c.SecretTTL, 24 * time.Hour},
		{"TerminationDeadline", c.TerminationDeadline, 5 * time.Second},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestFromEnvValues(t *testing.T) {
	c, err := FromEnv(envOf(map[string]string{
		"LOCAL_XDS":                        "workloads: []",
		"PACKET_MARK":                      "0x100",
		"INPOD_PORT_REUSE":                 "false",
		"ENABLE_ORIG_SRC":                  "true",
		"POOL_MAX_STREAMS_PER_CONNECTION":  "7",
		"POOL_SPREAD_CONNECTIONS":          "2",
		"POOL_UNUSED_RELEASE_TIMEOUT":      "90",
		"HTTP2_FRAME_SIZE":                 "65536",
		"TERMINATION_GRACE_PERIOD_SECONDS": "30",
		"ISTIO_META_CLUSTER_ID":            "c1",
		"CLUSTER_ID":                       "ignored",
		"MAX_CONNECTIONS":                  "5000",
		"MAX_CONNECTIONS_PER_POD":          "-1",
		"HBONE_MAX_HANDSHAKES":             "100",
		"HBONE_MAX_HANDSHAKES_PER_SOURCE":  "8",
		"HBONE_HANDSHAKE_TIMEOUT":          "3s",
		"CERT_UNUSED_RELEASE_TIMEOUT":      "10m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.PacketMark != 0x100 || *c.PortReuse || !*c.OrigSrc || c.PoolMaxStreams != 7 || c.PoolSpreadConns != 2 ||
		c.PoolUnusedRelease != 90*time.Second || c.FrameSize != 65536 ||
		c.TerminationDeadline != 25*time.Second || c.ClusterID != "c1" ||
		c.MaxConnections != 5000 || c.MaxConnectionsPerPod != -1 || c.MaxHandshakes != 100 ||
		c.MaxHandshakesPerSource != 8 || c.HandshakeTimeout != 3*time.Second || c.CertUnusedRelease != 10*time.Minute {
		t.Errorf("parsed config = %+v", c)
	}
	g, err := FromEnv(envOf(map[string]string{"LOCAL_XDS_PATH": "/x", "PROXY_MODE": "east-west-gateway",
		"PROXY_WORKLOAD_INFO": "istio-system/eastwest-0/istio-eastwestgateway"}))
	if err != nil || g.Mode != ModeEastWestGateway || g.WorkloadInfo.Namespace != "istio-system" ||
		g.WorkloadInfo.Name != "eastwest-0" || g.WorkloadInfo.ServiceAccount != "istio-eastwestgateway" {
		t.Errorf("gateway mode: %+v, %v", g, err)
	}
	l, err := FromEnv(envOf(map[string]string{"LOCAL_XDS_PATH": "/x", "LOCAL_XDS_MAX_BYTES": "1048576"}))
	if err != nil || l.LocalXDSMaxBytes != 1<<20 {
		t.Errorf("LOCAL_XDS_MAX_BYTES=1048576: %d, %v", l.LocalXDSMaxBytes, err)
	}
}

func TestFromEnvErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"LOCAL_XDS_PATH": "a", "LOCAL_XDS": "b"}, []string{"mutually exclusive"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "PACKET_MARK": "lots"}, []string{"PACKET_MARK", "lots"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "PACKET_MARK": "0"}, []string{"PACKET_MARK"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "SECRET_TTL": "forever"}, []string{"SECRET_TTL", "forever"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "INPOD_PORT_REUSE": "maybe"}, []string{"INPOD_PORT_REUSE"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "HTTP2_FRAME_SIZE": "100"}, []string{"HTTP2_FRAME_SIZE"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "HTTP2_FRAME_SIZE": "99999999"}, []string{"HTTP2_FRAME_SIZE"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "CA_CERT": "x"}, []string{"CA_CERT and CA_KEY"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "PROXY_MODE": "dedicated"}, []string{"PROXY_MODE", "dedicated"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "PROXY_MODE": "east-west-gateway"}, []string{"PROXY_WORKLOAD_INFO"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "PROXY_MODE": "east-west-gateway", "PROXY_WORKLOAD_INFO": "ns/name"}, []string{"PROXY_WORKLOAD_INFO", "ns/name"}},
		{map[string]string{"XDS_ADDRESS": "istiod:15012", "LOCAL_XDS_PATH": "a"}, []string{"XDS_ADDRESS", "LOCAL_XDS_PATH"}},
		{map[string]string{"XDS_ADDRESS": ""}, []string{"no workload source"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "CA_CERT": "c", "CA_KEY": "k", "CA_ADDRESS": "istiod:15012"}, []string{"CA_ADDRESS", "CA_CERT"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "TERMINATION_GRACE_PERIOD_SECONDS": "-3"}, []string{"TERMINATION_GRACE_PERIOD_SECONDS"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "LOCAL_XDS_MAX_BYTES": "0"}, []string{"LOCAL_XDS_MAX_BYTES"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "LOCAL_XDS_MAX_BYTES": "-5"}, []string{"LOCAL_XDS_MAX_BYTES"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "LOCAL_XDS_MAX_BYTES": "64MiB"}, []string{"LOCAL_XDS_MAX_BYTES", "64MiB"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "MAX_CONNECTIONS": "many"}, []string{"MAX_CONNECTIONS", "many"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "HBONE_MAX_HANDSHAKES_PER_SOURCE": "1.5"}, []string{"HBONE_MAX_HANDSHAKES_PER_SOURCE"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "HBONE_HANDSHAKE_TIMEOUT": "soon"}, []string{"HBONE_HANDSHAKE_TIMEOUT", "soon"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "CERT_UNUSED_RELEASE_TIMEOUT": "never"}, []string{"CERT_UNUSED_RELEASE_TIMEOUT"}},
		// Several bad values are all reported at once.
		{map[string]string{"LOCAL_XDS_PATH": "a", "PACKET_MARK": "x", "SECRET_TTL": "y"}, []string{"PACKET_MARK", "SECRET_TTL"}},
	}
	for _, tt := range tests {
		_, err := FromEnv(envOf(tt.env))
		if err == nil {
			t.Errorf("FromEnv(%v) succeeded, want an error naming %v", tt.env, tt.want)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("FromEnv(%v) error %q does not mention %q", tt.env, err, w)
			}
		}
	}
}

func TestNewLogger(t *testing.T) {
	if _, lv, err := NewLogger(getenvOf(map[string]string{"RUST_LOG": "access=debug,warn"})); err != nil || lv.Level().String() != "WARN" {
		t.Errorf("RUST_LOG global level: %v %v", lv.Level(), err)
	}
	if _, _, err := NewLogger(getenvOf(map[string]string{"LOG_LEVEL": "chatty"})); err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Errorf("bad LOG_LEVEL: %v", err)
	}
	if _, _, err := NewLogger(getenvOf(map[string]string{"LOG_FORMAT": "xml"})); err == nil || !strings.Contains(err.Error(), "LOG_FORMAT") {
		t.Errorf("bad LOG_FORMAT: %v", err)
	}
}

func TestIdentitySetAndBaggage(t *testing.T) {
	if got := identitySet([]string{"b", "a", "", "b"}); got != "a,b" {
		t.Errorf("identitySet = %q", got)
	}
}

func TestBaggage(t *testing.T) {
	w := &workload.Workload{Namespace: "sample", WorkloadName: "helloworld-v1", CanonicalName: "helloworld",
		CanonicalRevision: "v1", Locality: workload.Locality{Region: "r1", Zone: "z1"}}
	want := "k8s.cluster.name=Kubernetes,k8s.namespace.name=sample,k8s.deployment.name=helloworld-v1," +
		"service.name=helloworld,service.version=v1,cloud.region=r1,cloud.availability_zone=z1"
	if got := baggage(w, "Kubernetes"); got != want {
		t.Errorf("baggage =\n%s\nwant\n%s", got, want)
	}
}

func TestFromEnvControlPlane(t *testing.T) {
	// No local config: the reference's default istiod for both xDS and the CA.
	c, err := FromEnv(envOf(map[string]string{"AUTH_TOKEN": "/tok", "XDS_HEADER_X_TENANT": "a", "ISTIO_META_CLUSTER_ID": "c1",
		"POD_NAME": "ztunnel-x", "POD_NAMESPACE": "istio-system", "INSTANCE_IP": "10.0.0.9", "XDS_ON_DEMAND": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.XDS.Address != "https://localhost:15012" || c.CA.Address != "https://localhost:15012" {
		t.Errorf("default addresses: xds %q ca %q", c.XDS.Address, c.CA.Address)
	}
	if c.XDS.RootCA != defaultRootCA || c.AuthToken != "/tok" || c.XDS.Headers["X_TENANT"] != "a" ||
		c.Meta["CLUSTER_ID"] != "c1" || c.ClusterID != "c1" || !c.XDSOnDemand ||
		c.PodName != "ztunnel-x" || c.PodNamespace != "istio-system" || c.InstanceIP != "10.0.0.9" {
		t.Errorf("config = %+v", c)
	}
	c, err = FromEnv(envOf(map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1"}))
	if err != nil || c.XDS.Address != "https://istiod.istio-system.svc:15012" {
		t.Errorf("in Kubernetes: %q, %v", c.XDS.Address, err)
	}
	// Local config: no xDS and the built-in CA unless CA_ADDRESS says otherwise.
	c, err = FromEnv(envOf(map[string]string{"LOCAL_XDS_PATH": "a"}))
	if err != nil || c.XDS.Address != "" || c.CA.Address != "" {
		t.Errorf("local: xds %q ca %q %v", c.XDS.Address, c.CA.Address, err)
	}
	c, err = FromEnv(envOf(map[string]string{"LOCAL_XDS_PATH": "a", "CA_ADDRESS": "http://127.0.0.1:15010"}))
	if err != nil || c.CA.Address != "http://127.0.0.1:15010" {
		t.Errorf("local with CA_ADDRESS: %q %v", c.CA.Address, err)
	}
	// XDS_ADDRESS explicitly empty with a local file is fine (the reference's way to disable xDS).
	if _, err := FromEnv(envOf(map[string]string{"LOCAL_XDS_PATH": "a", "XDS_ADDRESS": ""})); err != nil {
		t.Error(err)
	}
}
