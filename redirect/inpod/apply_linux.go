package inpod

import (
	"bytes"
	"errors"
	"fmt"
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
// are only added when missing, and the ip rule / local route are replaced.
// The iptables tools run as child processes forked from a thread inside ns.
func Apply(ns *redirect.NetNS, r Ruleset) error {
	if err := applyRoutes(ns, r.Routes); err != nil {
		return fmt.Errorf("apply in-pod rules in %s: %w", ns, err)
	}
	if err := applyTables(ns, "iptables", r.IPv4Restore); err != nil {
		return fmt.Errorf("apply in-pod rules in %s: %w", ns, err)
	}
	if r.IPv6Restore != "" {
		if err := applyTables(ns, "ip6tables", r.IPv6Restore); err != nil {
			return fmt.Errorf("apply in-pod rules in %s: %w", ns, err)
		}
	}
	return nil
}

// Remove deletes what Apply installed from ns: the jumps to our chains, the
// chains themselves (IPv4 and, when ip6tables exists, IPv6), the fwmark ip
// rules at our preference and the local routes in their tables. Missing
// pieces are not an error.
func Remove(ns *redirect.NetNS) error {
	var errs []error
	for _, prog := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(prog + "-save"); err != nil && prog == "ip6tables" {
			continue
		}
		if err := removeTables(ns, prog); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeRoutes(ns); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove in-pod rules in %s: %w", ns, err)
	}
	return nil
}

func applyTables(ns *redirect.NetNS, prog, restore string) error {
	save, err := runIn(ns, prog+"-save", "")
	if err != nil {
		return err
	}
	_, err = runIn(ns, prog+"-restore", withoutExistingJumps(restore, save), "--noflush")
	return err
}

func removeTables(ns *redirect.NetNS, prog string) error {
	save, err := runIn(ns, prog+"-save", "")
	if err != nil {
		return err
	}
	script := removalScript(save)
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

func removeRoutes(ns *redirect.NetNS) error {
	h, err := netlinkHandle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	def := DefaultConfig()
	var errs []error
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
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
