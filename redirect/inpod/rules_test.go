package inpod

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestRulesGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"default", Config{}},
		{"ipv6", Config{IPv6: true}},
		{"dns", Config{CaptureDNS: true}},
		{"dns_ipv6", Config{CaptureDNS: true, IPv6: true}},
		{"custom", Config{OutboundPort: 25001, InboundPort: 25006, HBONEPort: 25008, DNSPort: 25053,
			ProxyMark: 0x22, ConnMark: 0x33, RouteTable: 7, IPv6: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Rules(tc.cfg).String()
			if again := Rules(tc.cfg).String(); again != got {
				t.Fatalf("Rules is not deterministic:\n%s\nvs\n%s", got, again)
			}
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Rules(%+v) mismatch (-want +got):\n%s", tc.cfg, diff)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	if DefaultConfig() != (Config{}).withDefaults() {
		t.Errorf("DefaultConfig differs from zero Config with defaults")
	}
	// Defaults are the contract with ztunnel: check the important ones literally.
	c := DefaultConfig()
	if c.OutboundPort != 15001 || c.InboundPort != 15006 || c.HBONEPort != 15008 || c.ProxyMark != 1337 ||
		c.ConnMark != 0x111 || c.RouteTable != 100 || c.ProbeSNATIP.String() != "169.254.7.127" || c.CaptureDNS || c.IPv6 {
		t.Errorf("DefaultConfig() = %+v", c)
	}
	// Explicit values are kept.
	if got := Rules(Config{IPv6: true}); got.IPv6Restore == "" || len(got.Routes) != 2 {
		t.Errorf("IPv6 ruleset missing parts: %+v", got)
	}
	if got := Rules(Config{}); got.IPv6Restore != "" || len(got.Routes) != 1 {
		t.Errorf("IPv4-only ruleset has IPv6 parts: %+v", got)
	}
}
