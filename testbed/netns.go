package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// netnsDir is where `ip netns` keeps named network namespaces.
const netnsDir = "/run/netns"

// netnsPath is the bind-mount path of the named network namespace.
func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// ipRunner runs iproute2 commands. All namespace and link plumbing goes through the `ip` tool, so
// this package needs no netlink or setns code of its own.
type ipRunner struct {
	log *slog.Logger
}

// run executes `ip args...`; the error names the command and carries its output.
func (r ipRunner) run(ctx context.Context, args ...string) error {
	r.log.Debug("exec", "cmd", "ip "+strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "ip", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// addNetNS creates a named network namespace and brings its loopback up.
func (r ipRunner) addNetNS(ctx context.Context, name string) error {
	if err := r.run(ctx, "netns", "add", name); err != nil {
		return err
	}
	return r.run(ctx, "-n", name, "link", "set", "lo", "up")
}

// delNetNS removes a named network namespace; a missing one is not an error.
func (r ipRunner) delNetNS(ctx context.Context, name string) error {
	if _, err := os.Stat(netnsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return r.run(ctx, "netns", "del", name)
}

// sysctl sets a sysctl inside a namespace.
func (r ipRunner) sysctl(ctx context.Context, ns, key, value string) error {
	return r.run(ctx, "netns", "exec", ns, "sysctl", "-q", "-w", key+"="+value)
}

// addBridge creates an up bridge in ns, optionally with an address ("" for none).
func (r ipRunner) addBridge(ctx context.Context, ns, name, addr string) error {
	if err := r.run(ctx, "-n", ns, "link", "add", name, "type", "bridge"); err != nil {
		return err
	}
	if addr != "" {
		if err := r.run(ctx, "-n", ns, "addr", "add", addr, "dev", name); err != nil {
			return err
		}
	}
	return r.run(ctx, "-n", ns, "link", "set", name, "up")
}

// plug creates a veth pair whose end hostIf, in hostNS, is a port of bridge, and whose other end is
// eth0 in ns with address addr (CIDR form), up.
func (r ipRunner) plug(ctx context.Context, hostNS, hostIf, bridge, ns, addr string) error {
	steps := [][]string{
		{"-n", hostNS, "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", hostNS, "link", "set", hostIf, "master", bridge},
		{"-n", hostNS, "link", "set", hostIf, "up"},
		{"-n", ns, "addr", "add", addr, "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := r.run(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// delLink deletes an interface in ns; a missing interface or namespace is not an error.
func (r ipRunner) delLink(ctx context.Context, ns, name string) error {
	if _, err := os.Stat(netnsPath(ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	err := r.run(ctx, "-n", ns, "link", "del", name)
	if err != nil && strings.Contains(err.Error(), "Cannot find device") {
		return nil
	}
	return err
}

// listNetNS returns the names of the named network namespaces that start with prefix.
func listNetNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
