package ztunnel

import (
	"strings"
	"testing"
	"time"

	"github.com/ztunnel-go/ztunnel/workload"
)

func envOf(kv map[string]string) func(string) string {
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
		"POOL_UNUSED_RELEASE_TIMEOUT":      "90",
		"HTTP2_FRAME_SIZE":                 "65536",
		"TERMINATION_GRACE_PERIOD_SECONDS": "30",
		"ISTIO_META_CLUSTER_ID":            "c1",
		"CLUSTER_ID":                       "ignored",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.PacketMark != 0x100 || *c.PortReuse || !*c.OrigSrc || c.PoolMaxStreams != 7 ||
		c.PoolUnusedRelease != 90*time.Second || c.FrameSize != 65536 ||
		c.TerminationDeadline != 25*time.Second || c.ClusterID != "c1" {
		t.Errorf("parsed config = %+v", c)
	}
}

func TestFromEnvErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{}, []string{"LOCAL_XDS_PATH"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "LOCAL_XDS": "b"}, []string{"mutually exclusive"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "PACKET_MARK": "lots"}, []string{"PACKET_MARK", "lots"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "PACKET_MARK": "0"}, []string{"PACKET_MARK"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "SECRET_TTL": "forever"}, []string{"SECRET_TTL", "forever"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "INPOD_PORT_REUSE": "maybe"}, []string{"INPOD_PORT_REUSE"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "HTTP2_FRAME_SIZE": "100"}, []string{"HTTP2_FRAME_SIZE"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "HTTP2_FRAME_SIZE": "99999999"}, []string{"HTTP2_FRAME_SIZE"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "CA_CERT": "x"}, []string{"CA_CERT and CA_KEY"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "PROXY_MODE": "dedicated"}, []string{"PROXY_MODE", "dedicated"}},
		{map[string]string{"XDS_ADDRESS": "istiod:15012"}, []string{"XDS_ADDRESS", "not implemented"}},
		{map[string]string{"LOCAL_XDS_PATH": "a", "TERMINATION_GRACE_PERIOD_SECONDS": "-3"}, []string{"TERMINATION_GRACE_PERIOD_SECONDS"}},
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
	if _, lv, err := NewLogger(envOf(map[string]string{"RUST_LOG": "access=debug,warn"})); err != nil || lv.Level().String() != "WARN" {
		t.Errorf("RUST_LOG global level: %v %v", lv.Level(), err)
	}
	if _, _, err := NewLogger(envOf(map[string]string{"LOG_LEVEL": "chatty"})); err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Errorf("bad LOG_LEVEL: %v", err)
	}
	if _, _, err := NewLogger(envOf(map[string]string{"LOG_FORMAT": "xml"})); err == nil || !strings.Contains(err.Error(), "LOG_FORMAT") {
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
