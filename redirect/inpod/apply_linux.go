package inpod

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// Apply installs r in the network namespace ns. It is idempotent: our
// chains are declared (created or flushed) and refilled in one
// iptables-restore --noflush per family, the jumps from the built-in chains
// are only added when missing, our chains r does not declare (left by a
// ruleset of another IPv6 mode) are removed, and the ip rule / local route
// are replaced. The iptables tools run as child processes forked from
// a thread inside ns.
//
// The IPv6 part is skipped when ns has no IPv6 at all: the kernel has no
// IPv6, or IPv6 is disabled on every interface and ip6tables is not
// installed. IPv6 disabled only by sysctl still gets the rules, since it can
// be enabled again. When ns has IPv6 but ip6tables is missing, Apply fails
// (after installing the IPv4 part) rather than leave IPv6 open.
func Apply(ns *redirect.NetNS, r Ruleset) error {
	v6, err := ipv6In(ns)
	if err != nil {
		return fmt.Errorf("apply in-pod rules in %s: %w", ns, err)
	}
	routes := r.Routes
	if !v6.rules() {
		routes = routesOf(routes, 4)
	} else if len(routesOf(routes, 6)) == 0 {
		// IPv6 is refused: drop the IPv6 route of an earlier capture.
		if err := removeRoutes(ns, unix.AF_INET6); err != nil {
			return fmt.Errorf("apply in-pod rules in %s: %w", ns, err)
		}
	}
	if err := applyRoutes(ns, routes); err != nil {
		return fmt.Errorf("apply in-pod rules in %s: %w", ns, err)
	}
	if err := applyTables(ns, "iptables", r.IPv4Restore); err != nil {
		return fmt.Errorf("apply in-pod rules in %s: %w", ns, err)
	}
	if v6.stack && v6.enabled && v6.missing != nil {
		return fmt.Errorf("apply in-pod rules in %s: the namespace has IPv6 but its traffic cannot be captured or refused: %w", ns, v6.missing)
	}
	if v6.rules() && r.IPv6Restore != "" {
		if err := applyTables(ns, "ip6tables", r.IPv6Restore); err != nil {
			return fmt.Errorf("apply in-pod rules in %s: %w", ns, err)
		}
	}
	return nil
}

// Remove deletes what Apply installed from ns: the jumps to our chains, the
// chains themselves (IPv4 and, when ns has IPv6 and ip6tables exists, IPv6),
// the fwmark ip rules at our preference and the local routes in their
// tables. Missing pieces are not an error.
func Remove(ns *redirect.NetNS) error {
	v6, err := ipv6In(ns)
	if err != nil {
		return fmt.Errorf("remove in-pod rules in %s: %w", ns, err)
	}
	var errs []error
	progs := []string{"iptables"}
	if v6.rules() {
		progs = append(progs, "ip6tables")
	}
	for _, prog := range progs {
		if err := removeTables(ns, prog); err != nil {
			errs = append(errs, err)
		}
	}
	fams := []int{unix.AF_INET}
	if v6.stack {
		fams = append(fams, unix.AF_INET6)
	}
	if err := removeRoutes(ns, fams...); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove in-pod rules in %s: %w", ns, err)
	}
	return nil
}

// ipv6Support describes IPv6 in a namespace, for Apply and Remove.
type ipv6Support struct {
	stack   bool  // the kernel has IPv6 in the namespace
	enabled bool  // IPv6 is enabled on some interface, or for new ones
	missing error // why ip6tables cannot be run, or nil
}

// rules reports whether the namespace gets (or may have) IPv6 rules.
func (s ipv6Support) rules() bool { return s.stack && s.missing == nil }

// ip6tablesProgs are the programs the IPv6 rules need.
var ip6tablesProgs = []string{"ip6tables-save", "ip6tables-restore"}

// ipv6In finds out about IPv6 in ns.
func ipv6In(ns *redirect.NetNS) (ipv6Support, error) {
	var s ipv6Support
	if err := ns.Do(func() error {
		s.stack, s.enabled = ipv6Enabled()
		return nil
	}); err != nil {
		return s, fmt.Errorf("check IPv6: %w", err)
	}
	for _, p := range ip6tablesProgs {
		if _, err := exec.LookPath(p); err != nil {
			s.missing = err
			break
		}
	}
	return s, nil
}

// ipv6Enabled reports, for the calling thread's network namespace, whether
// the kernel has IPv6 there (stack) and whether it is enabled on some
// interface or for new ones (enabled). What cannot be read counts as IPv6.
func ipv6Enabled() (stack, enabled bool) {
	ents, err := os.ReadDir("/proc/sys/net/ipv6/conf")
	if errors.Is(err, fs.ErrNotExist) {
		return false, false
	}
	if err != nil {
		return true, true
	}
	for _, e := range ents {
		v, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + e.Name() + "/disable_ipv6")
		if err != nil || strings.TrimSpace(string(v)) != "1" {
			return true, true
		}
	}
	return true, false
}

// routesOf returns the routes of one family.
func routesOf(routes []RouteRule, family int) []RouteRule {
	var out []RouteRule
	for _, r := range routes {
		if r.Family == family {
			out = append(out, r)
		}
	}
	return out
}

func applyTables(ns *redirect.NetNS, prog, restore string) error {
	save, err := runIn(ns, prog+"-save", "")
	if err != nil {
		return err
	}
	_, err = runIn(ns, prog+"-restore", applyScript(restore, save), "--noflush")
	return err
}

func removeTables(ns *redirect.NetNS, prog string) error {
	save, err := runIn(ns, prog+"-save", "")
	if err != nil {
		return err
	}
	script := removalScript(save, func(string, string) bool { return true })
	if script == "" {
		return nil
	}
	_, err = runIn(ns, prog+"-restore", script, "--noflush")
	return err
}

// runIn runs name with args inside ns, stdin as input, and returns stdout.
// The child is forked from the locked thread inside ns, so it starts there.
func runIn(ns *redirect.NetNS, name, stdin string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := ns.Do(cmd.Start); err != nil {
		return "", fmt.Errorf("run %s: %w", name, err)
	}
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if stdin != "" {
			msg += "\ninput:\n" + stdin
		}
		return "", fmt.Errorf("run %s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

func netlinkHandle(ns *redirect.NetNS) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return h, nil
}

func applyRoutes(ns *redirect.NetNS, routes []RouteRule) error {
	if len(routes) == 0 {
		return nil
	}
	h, err := netlinkHandle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	v6ok := loIPv6Enabled(ns)
	for _, rr := range routes {
		fam := unix.AF_INET
		if rr.Family == 6 {
			fam = unix.AF_INET6
		}
		rule := netlink.NewRule()
		rule.Family = fam
		rule.Priority = rr.Priority
		rule.Table = rr.Table
		rule.Mark = rr.Mark
		mask := rr.Mask
		rule.Mask = &mask
		if err := h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add ip rule fwmark %#x/%#x lookup %d: %w", rr.Mark, rr.Mask, rr.Table, err)
		}
		if fam == unix.AF_INET6 && !v6ok {
			continue // like istio-cni: no v6 local route when lo has IPv6 disabled
		}
		route := &netlink.Route{
			Dst:       prefixNet(rr),
			Scope:     netlink.SCOPE_HOST,
			Type:      unix.RTN_LOCAL,
			Table:     rr.Table,
			LinkIndex: lo.Attrs().Index,
		}
		if err := h.RouteReplace(route); err != nil {
			return fmt.Errorf("replace route local %s dev lo table %d: %w", rr.Dst, rr.Table, err)
		}
	}
	return nil
}

func prefixNet(rr RouteRule) *net.IPNet {
	return &net.IPNet{IP: rr.Dst.Addr().AsSlice(), Mask: net.CIDRMask(rr.Dst.Bits(), rr.Dst.Addr().BitLen())}
}

// loIPv6Enabled reports whether lo in ns accepts IPv6 (per-namespace sysctl).
func loIPv6Enabled(ns *redirect.NetNS) bool {
	var v []byte
	err := ns.Do(func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
		return err
	})
	return err == nil && strings.TrimSpace(string(v)) != "1"
}

// removeRoutes deletes our ip rules and local routes of the address
// families fams (unix.AF_INET, unix.AF_INET6).
func removeRoutes(ns *redirect.NetNS, fams ...int) error {
	h, err := netlinkHandle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	def := DefaultConfig()
	var errs []error
	for _, fam := range fams {
		tables := map[int]bool{def.RouteTable: true}
		rules, err := h.RuleList(fam)
		if err != nil {
			errs = append(errs, fmt.Errorf("list ip rules: %w", err))
			continue
		}
		for _, r := range rules {
			if r.Priority != rulePriority || r.Mark == 0 || r.Mask == nil || *r.Mask != markMask {
				continue
			}
			tables[r.Table] = true
			if err := h.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete ip rule fwmark %#x lookup %d: %w", r.Mark, r.Table, err))
			}
		}
		for table := range tables {
			filter := &netlink.Route{Table: table}
			routes, err := h.RouteListFiltered(fam, filter, netlink.RT_FILTER_TABLE)
			if err != nil {
				errs = append(errs, fmt.Errorf("list routes in table %d: %w", table, err))
				continue
			}
			for _, rt := range routes {
				if rt.Type != unix.RTN_LOCAL || (rt.Dst != nil && !isDefault(rt.Dst)) {
					continue
				}
				if err := h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("delete local route in table %d: %w", table, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}
