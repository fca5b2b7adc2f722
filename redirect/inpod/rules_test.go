package inpod

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
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
		{"ipv6_refuse", Config{IPv6: IPv6Refuse}},
		{"dns", Config{CaptureDNS: true}},
		{"dns_ipv6_refuse", Config{CaptureDNS: true, IPv6: IPv6Refuse}},
		{"custom", Config{OutboundPort: 25001, InboundPort: 25006, HBONEPort: 25008, DNSPort: 25053,
			ProxyMark: 0x22, ConnMark: 0x33, RouteTable: 7}},
		{"custom_refuse", Config{OutboundPort: 25001, InboundPort: 25006, HBONEPort: 25008, DNSPort: 25053,
			ProxyMark: 0x22, ConnMark: 0x33, RouteTable: 7, ProbeSNATIPv6: netip.MustParseAddr("fd00::7"),
			IPv6: IPv6Refuse}},
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
		c.ConnMark != 0x111 || c.RouteTable != 100 || c.ProbeSNATIP.String() != "169.254.7.127" || c.CaptureDNS ||
		c.IPv6 != IPv6Capture {
		t.Errorf("DefaultConfig() = %+v", c)
	}
}

// TestRulesCoverIPv6 checks that no mode leaves IPv6 without rules: capture
// redirects (with the IPv6 route), refuse resets, and an unknown mode refuses.
func TestRulesCoverIPv6(t *testing.T) {
	for _, tc := range []struct {
		mode       IPv6Mode
		want       string
		ipv6Routes int
	}{
		{IPv6Capture, "! -d ::1/128 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001", 1},
		{IPv6Refuse, "-A ISTIO_INPUT -p tcp -j REJECT --reject-with tcp-reset", 0},
		{IPv6Mode(7), "-A ISTIO_OUTPUT -p tcp -j REJECT --reject-with tcp-reset", 0},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			rs := Rules(Config{IPv6: tc.mode})
			if !strings.Contains(rs.IPv6Restore, tc.want) {
				t.Errorf("IPv6 rules lack %q:\n%s", tc.want, rs.IPv6Restore)
			}
			n := 0
			for _, r := range rs.Routes {
				if r.Family == 6 {
					n++
				}
			}
			if n != tc.ipv6Routes {
				t.Errorf("%d IPv6 routes, want %d", n, tc.ipv6Routes)
			}
		})
	}
}
