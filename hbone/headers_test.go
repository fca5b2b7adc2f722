package hbone

import (
	"net/netip"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseAuthority(t *testing.T) {
	good := []struct {
		in   string
		host string
		port uint16
	}{
		{"10.0.0.5:8080", "10.0.0.5", 8080},
		{"[fd00::5]:80", "fd00::5", 80},
		{"[::ffff:10.0.0.1]:443", "::ffff:10.0.0.1", 443},
		{"svc.ns.svc.cluster.local:80", "svc.ns.svc.cluster.local", 80},
		{"svc.ns.svc.cluster.local.:80", "svc.ns.svc.cluster.local.", 80},
		{"my_svc-1:65535", "my_svc-1", 65535},
	}
	for _, tc := range good {
		host, port, err := ParseAuthority(tc.in)
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("ParseAuthority(%q) = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
	bad := []string{
		"", ":80", "10.0.0.5", "10.0.0.5:", "10.0.0.5:0", "10.0.0.5:65536", "10.0.0.5:+80", "10.0.0.5:8x",
		"10.0.0.5:123456", "user@10.0.0.5:80", "fd00::5:80", "[fd00::5:80", "[fd00::5%eth0]:80", "[10.0.0.1]:80",
		"a b:80", "a..b:80", "a/b:80", "a?b:80", "[]:80", "exa\x00mple:80", ".:80", "-:80x",
		"a." + string(make([]byte, 300)) + ":80",
	}
	for _, in := range bad {
		if host, port, err := ParseAuthority(in); err == nil {
			t.Errorf("ParseAuthority(%q) = %q, %d, nil; want an error", in, host, port)
		}
	}
}

func TestNewTraceparent(t *testing.T) {
	re := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-00$`)
	a, b := NewTraceparent(), NewTraceparent()
	if !re.MatchString(a) || !re.MatchString(b) {
		t.Errorf("bad format: %q %q", a, b)
	}
	if a == b {
		t.Errorf("two traceparents are equal: %q", a)
	}
}

func TestForwarded(t *testing.T) {
	src := netip.MustParseAddrPort("1.2.3.4:5678")
	tests := []struct {
		src  netip.AddrPort
		host string
		want string
	}{
		{src, "", `for="1.2.3.4:5678"`},
		{src, "svc.ns.svc.cluster.local", `for="1.2.3.4:5678";host=svc.ns.svc.cluster.local`},
		{netip.MustParseAddrPort("[fd00::1]:80"), "", `for="[fd00::1]:80"`},
		{netip.AddrPort{}, "a b", `for=unknown;host="a b"`},
	}
	for _, tc := range tests {
		if got := Forwarded(tc.src, tc.host); got != tc.want {
			t.Errorf("Forwarded(%v, %q) = %q, want %q", tc.src, tc.host, got, tc.want)
		}
	}
}

func TestForwardedHost(t *testing.T) {
	tests := map[string]string{
		`for="1.2.3.4:5678";host=svc.ns.svc.cluster.local`: "svc.ns.svc.cluster.local",
		`for="1.2.3.4:5678"`:                     "",
		`host="quoted \"x\""; for=1.1.1.1`:       `quoted "x"`,
		`for=a, for=b;HOST=second`:               "second",
		`for="unterminated;host=x`:               "",
		`host=`:                                  "",
		`garbage`:                                "",
		`for=1.2.3.4 junk;host=x`:                "",
		`  ;  host="svc:80" ; proto=https`:       "svc:80",
		`host=svc:80`:                            "", // ':' needs a quoted-string (RFC 7239)
		"":                                       "",
		`for="[fd00::1]:80";by=x;host=h.example`: "h.example",
	}
	for in, want := range tests {
		if got := ForwardedHost(in); got != want {
			t.Errorf("ForwardedHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBaggage(t *testing.T) {
	kvs := []KV{
		{"k8s.cluster.name", "Kubernetes"},
		{"k8s.namespace.name", "default"},
		{"k8s.deployment.name", "web"},
		{"service.name", "web"},
		{"service.version", ""}, // omitted
		{"bad key", "x"},        // omitted
		{"cloud.region", "us east,1%"},
	}
	got := Baggage(kvs)
	want := "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=web,service.name=web," +
		"cloud.region=us%20east%2C1%25"
	if got != want {
		t.Errorf("Baggage = %q\nwant      %q", got, want)
	}
	wantMap := map[string]string{
		"k8s.cluster.name": "Kubernetes", "k8s.namespace.name": "default", "k8s.deployment.name": "web",
		"service.name": "web", "cloud.region": "us east,1%",
	}
	if diff := cmp.Diff(wantMap, ParseBaggage(got)); diff != "" {
		t.Errorf("ParseBaggage round trip (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"a": "1", "b": "2"}, ParseBaggage(" a = 1 ;prop=x, junk, =3, b=2, a=9, c=%zz")); diff != "" {
		t.Errorf("ParseBaggage lenient parse (-want +got):\n%s", diff)
	}
	if m := ParseBaggage(""); m != nil {
		t.Errorf("ParseBaggage(\"\") = %v, want nil", m)
	}
}
