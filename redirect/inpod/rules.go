package inpod

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Chain names owned by this package (in nat and mangle, raw when DNS is
// captured, and the IPv6 filter table). ChainPrerouting and ChainOutput
// match istio-cni so either tool can clean up after the other.
const (
	ChainPrerouting = "ISTIO_PRERT"
	ChainOutput     = "ISTIO_OUTPUT"
	ChainInput      = "ISTIO_INPUT"
)

// IPv6Mode says what the rules do with the pod's IPv6 TCP traffic. Every
// mode covers every IPv6 address of the pod, link-local (fe80::/10)
// included: nothing reaches the application or leaves the pod around the
// proxy.
type IPv6Mode int

const (
	// IPv6Capture redirects IPv6 TCP to the proxy as IPv4 is, and adds the
	// IPv6 ip rule and local route. For a proxy that listens on IPv6 ([::],
	// the proxy's default). The default.
	IPv6Capture IPv6Mode = iota
	// IPv6Refuse resets every IPv6 TCP connection to or from the pod except
	// over loopback, the proxy's own (marked) connections and kubelet probes
	// from ProbeSNATIPv6. For a proxy that does not listen on IPv6
	// (IPV6_ENABLED=false).
	IPv6Refuse
)

func (m IPv6Mode) String() string {
	switch m {
	case IPv6Capture:
		return "capture"
	case IPv6Refuse:
		return "refuse"
	}
	return fmt.Sprintf("IPv6Mode(%d)", int(m))
}

// markMask is the mask used with ProxyMark and ConnMark, as in istio-cni.
const markMask = 0xfff

// rulePriority is the preference of the fwmark ip rule (istio-cni uses 32764).
const rulePriority = 32764

// Config describes the in-pod redirection. Zero fields take the defaults
// given per field (the same as [DefaultConfig]).
type Config struct {
	OutboundPort uint16 // captured outbound TCP; zero: 15001
	InboundPort  uint16 // captured plaintext inbound TCP; zero: 15006
	HBONEPort    uint16 // HBONE inbound, never redirected; zero: 15008
	DNSPort      uint16 // DNS proxy, used only when CaptureDNS; zero: 15053
	// CaptureDNS redirects the pod's DNS (UDP and TCP port 53) to DNSPort and
	// puts the proxy's upstream DNS traffic in conntrack zone 1. Default off.
	CaptureDNS bool
	// ProxyMark (mask 0xfff) marks traffic sent by the proxy, which is never
	// redirected; zero: 0x539 (1337).
	ProxyMark uint32
	// ConnMark (mask 0xfff) marks return traffic of the proxy's
	// spoofed-source connections, routed to lo via RouteTable; zero: 0x111.
	ConnMark uint32
	// RouteTable holds the `local default dev lo` route; zero: 100.
	RouteTable int
	// ProbeSNATIP is the address the node SNATs kubelet probes to; such
	// traffic is accepted, not redirected. Zero: 169.254.7.127.
	ProbeSNATIP netip.Addr
	// ProbeSNATIPv6 is the IPv6 counterpart of ProbeSNATIP.
	// Zero: fd16:9254:7127:1337:ffff:ffff:ffff:ffff.
	ProbeSNATIPv6 netip.Addr
	// IPv6 chooses the ip6tables rules: capture (the zero value) or refuse.
	IPv6 IPv6Mode
}

// DefaultConfig returns the configuration istio-cni uses by default
// (IPv4 and IPv6 captured, DNS not captured).
func DefaultConfig() Config {
	return Config{}.withDefaults()
}

func (c Config) withDefaults() Config {
	if c.OutboundPort == 0 {
		c.OutboundPort = 15001
	}
	if c.InboundPort == 0 {
		c.InboundPort = 15006
	}
	if c.HBONEPort == 0 {
		c.HBONEPort = 15008
	}
	if c.DNSPort == 0 {
		c.DNSPort = 15053
	}
	if c.ProxyMark == 0 {
		c.ProxyMark = 0x539
	}
	if c.ConnMark == 0 {
		c.ConnMark = 0x111
	}
	if c.RouteTable == 0 {
		c.RouteTable = 100
	}
	if !c.ProbeSNATIP.IsValid() {
		c.ProbeSNATIP = netip.AddrFrom4([4]byte{169, 254, 7, 127})
	}
	if !c.ProbeSNATIPv6.IsValid() {
		c.ProbeSNATIPv6 = netip.MustParseAddr("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
	}
	return c
}

// RouteRule is one `ip rule add fwmark Mark/Mask pref Priority lookup Table`
// plus `ip route add local Dst dev lo table Table`.
type RouteRule struct {
	Family   int // 4 or 6
	Mark     uint32
	Mask     uint32
	Priority int
	Table    int
	Dst      netip.Prefix // 0.0.0.0/0 or ::/0
}

func (r RouteRule) String() string {
	return fmt.Sprintf("ip -%d rule add fwmark %#x/%#x pref %d lookup %d\nip -%d route add local %s dev lo table %d\n",
		r.Family, r.Mark, r.Mask, r.Priority, r.Table, r.Family, r.Dst, r.Table)
}

// Ruleset is the complete in-pod redirection spec, as produced by [Rules].
type Ruleset struct {
	// IPv4Restore is iptables-restore input (for --noflush) that declares
	// (and so flushes) our chains, fills them, and appends the jumps from the
	// built-in chains. Apply drops jump lines that already exist.
	IPv4Restore string
	// IPv6Restore is the ip6tables-restore counterpart: the same
	// redirection (IPv6Capture), or a filter table that resets TCP
	// (IPv6Refuse). Never empty.
	IPv6Restore string
	// Routes are the policy routing rules, one per family.
	Routes []RouteRule
}

// String renders the whole ruleset, for golden tests and logs.
func (r Ruleset) String() string {
	var b strings.Builder
	b.WriteString("# iptables-restore --noflush\n")
	b.WriteString(r.IPv4Restore)
	if r.IPv6Restore != "" {
		b.WriteString("# ip6tables-restore --noflush\n")
		b.WriteString(r.IPv6Restore)
	}
	for _, rt := range r.Routes {
		b.WriteString(rt.String())
	}
	return b.String()
}

// Rules computes the ruleset for cfg. It is pure and deterministic. An
// IPv6 mode other than IPv6Capture and IPv6Refuse refuses IPv6.
func Rules(cfg Config) Ruleset {
	cfg = cfg.withDefaults()
	rs := Ruleset{
		IPv4Restore: restoreText(cfg, ipv4),
		Routes: []RouteRule{{
			Family: 4, Mark: cfg.ConnMark, Mask: markMask, Priority: rulePriority,
			Table: cfg.RouteTable, Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0),
		}},
	}
	if cfg.IPv6 != IPv6Capture {
		rs.IPv6Restore = refuseText(cfg)
		return rs
	}
	rs.IPv6Restore = restoreText(cfg, ipv6)
	rs.Routes = append(rs.Routes, RouteRule{
		Family: 6, Mark: cfg.ConnMark, Mask: markMask, Priority: rulePriority,
		Table: cfg.RouteTable, Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0),
	})
	return rs
}

type family int

const (
	ipv4 family = iota
	ipv6
)

// proxyZone is the conntrack zone of the original-direction tuples of the
// proxy's own TCP connections.
const proxyZone = 2

// Rule fragments, as iptables-save prints them.
const (
	// linkLocalPrefix is the IPv6 link-local prefix.
	linkLocalPrefix = "fe80::/10"
	// reset ends a rule that refuses a TCP connection with a reset.
	reset = " -j REJECT --reject-with tcp-reset"
	// established accepts the TCP packets of connections already let through.
	established = " -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
)

// restoreText builds the restore input for one family. Rules are written in
// the canonical form iptables-save prints, so they can be compared to it.
func restoreText(cfg Config, fam family) string {
	localhost := "127.0.0.1/32"
	probe := netip.PrefixFrom(cfg.ProbeSNATIP, 32).String()
	if fam == ipv6 {
		localhost = "::1/128"
		probe = netip.PrefixFrom(cfg.ProbeSNATIPv6, 128).String()
	}
	proxyMark := fmt.Sprintf("%#x/%#x", cfg.ProxyMark, markMask)
	connMark := fmt.Sprintf("%#x/%#x", cfg.ConnMark, markMask)

	var b strings.Builder
	table := func(name string, chains []string, rules ...string) { writeTable(&b, name, chains, rules) }
	both := []string{ChainPrerouting, ChainOutput}

	table("mangle", both,
		"-A PREROUTING -j "+ChainPrerouting,
		"-A OUTPUT -j "+ChainOutput,
		// Packets the proxy sends into the pod: remember on the connection.
		"-A "+ChainPrerouting+" -m mark --mark "+proxyMark+" -j CONNMARK --set-xmark "+connMark,
		// Replies of such connections get the mark back, so the ip rule routes them to lo.
		"-A "+ChainOutput+" -m connmark --mark "+connMark+" -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
	)

	natOut := []string{
		"-A OUTPUT -j " + ChainOutput,
		"-A PREROUTING -j " + ChainPrerouting,
		// Kubelet probes (SNATed by the node) go straight to the app, and so do their replies.
		"-A " + ChainPrerouting + " -s " + probe + " -p tcp -m tcp -j ACCEPT",
		"-A " + ChainOutput + " -d " + probe + " -p tcp -m tcp -j ACCEPT",
		// Plaintext inbound to any port but HBONE goes to the proxy.
		fmt.Sprintf("-A %s ! -d %s -p tcp -m tcp ! --dport %d -m mark ! --mark %s -j REDIRECT --to-ports %d",
			ChainPrerouting, localhost, cfg.HBONEPort, proxyMark, cfg.InboundPort),
	}
	if fam == ipv6 {
		// The app's socket to a link-local address is bound to its interface,
		// so a REDIRECT to ::1 could not be routed: such connections are
		// reset in the filter table instead.
		natOut = append(natOut, "-A "+ChainOutput+" -d "+linkLocalPrefix+" -p tcp -j RETURN")
	}
	if cfg.CaptureDNS {
		natOut = append(natOut,
			fmt.Sprintf("-A %s ! -o lo -p udp -m mark ! --mark %s -m udp --dport 53 -j REDIRECT --to-ports %d",
				ChainOutput, proxyMark, cfg.DNSPort),
			fmt.Sprintf("-A %s ! -d %s -p tcp -m tcp --dport 53 -m mark ! --mark %s -j REDIRECT --to-ports %d",
				ChainOutput, localhost, proxyMark, cfg.DNSPort),
		)
	}
	natOut = append(natOut,
		// Replies of connections the proxy made into the pod.
		"-A "+ChainOutput+" -p tcp -m mark --mark "+connMark+" -j ACCEPT",
		// The app calling itself by its pod address stays on lo, not through the proxy.
		"-A "+ChainOutput+" ! -d "+localhost+" -o lo -j ACCEPT",
		fmt.Sprintf("-A %s ! -d %s -p tcp -m mark ! --mark %s -j REDIRECT --to-ports %d",
			ChainOutput, localhost, proxyMark, cfg.OutboundPort),
	)
	table("nat", both, natOut...)
	if fam == ipv6 {
		table("filter", []string{ChainOutput},
			"-A OUTPUT -j "+ChainOutput,
			// Replies of connections let in (to the proxy) are not refused.
			"-A "+ChainOutput+established,
			"-A "+ChainOutput+" -d "+linkLocalPrefix+" ! -o lo -p tcp -m mark ! --mark "+proxyMark+reset,
		)
	}

	// The proxy's own TCP connections (marked) keep their original-direction
	// conntrack tuples in a zone of their own (replies stay in the default
	// zone, where they are looked up). Otherwise a proxy dial can pick the
	// source port of an app connection to the same address that the proxy
	// just reset: the lingering conntrack entry of that connection, closed by
	// a reply-side RST, is not reopened by a new SYN, so the dial joins it and
	// is redirected to the proxy's own 15001 (issue 10, "passthrough
	// self-loop"); and an app SYN could likewise join a proxy connection's
	// entry and skip the redirection.
	rawChains := []string{ChainOutput}
	raw := []string{
		"-A OUTPUT -j " + ChainOutput,
		"-A " + ChainOutput + " -p tcp -m mark --mark " + proxyMark + " -j CT --zone-orig " + strconv.Itoa(proxyZone),
	}
	if cfg.CaptureDNS {
		// Separate conntrack zone for proxy <-> upstream DNS, avoiding port
		// collisions with the app's own (redirected) DNS flows (istio/istio#33469).
		rawChains = both
		raw = append(raw,
			"-A PREROUTING -j "+ChainPrerouting,
			"-A "+ChainOutput+" -p udp -m mark --mark "+proxyMark+" -m udp --dport 53 -j CT --zone 1",
			"-A "+ChainPrerouting+" -p udp -m mark ! --mark "+proxyMark+" -m udp --sport 53 -j CT --zone 1",
		)
	}
	table("raw", rawChains, raw...)
	return b.String()
}

// refuseText builds the ip6tables-restore input of IPv6Refuse: in the
// filter table, TCP is reset unless it is on lo, part of a connection
// already let through (the proxy's own, or a probe), sent by the proxy
// (marked), or a kubelet probe.
func refuseText(cfg Config) string {
	proxyMark := fmt.Sprintf("%#x/%#x", cfg.ProxyMark, markMask)
	probe := netip.PrefixFrom(cfg.ProbeSNATIPv6, 128).String()
	var b strings.Builder
	writeTable(&b, "filter", []string{ChainInput, ChainOutput}, []string{
		"-A INPUT -j " + ChainInput,
		"-A OUTPUT -j " + ChainOutput,
		"-A " + ChainInput + " -i lo -j ACCEPT",
		"-A " + ChainInput + established,
		"-A " + ChainInput + " -s " + probe + " -p tcp -j ACCEPT",
		"-A " + ChainInput + " -p tcp" + reset,
		"-A " + ChainOutput + " -o lo -j ACCEPT",
		"-A " + ChainOutput + established,
		"-A " + ChainOutput + " -p tcp -m mark --mark " + proxyMark + " -j ACCEPT",
		"-A " + ChainOutput + " -p tcp" + reset,
	})
	return b.String()
}

// writeTable writes one table's block of restore input: the chains to
// declare (which flushes them), then the rules.
func writeTable(b *strings.Builder, name string, chains, rules []string) {
	fmt.Fprintf(b, "*%s\n", name)
	for _, c := range chains {
		fmt.Fprintf(b, ":%s - [0:0]\n", c)
	}
	for _, r := range rules {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	b.WriteString("COMMIT\n")
}
