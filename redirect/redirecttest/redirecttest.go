package redirecttest

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// SkipUnlessRoot skips t unless the test runs as root. what names the
// feature that needs it.
func SkipUnlessRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + what)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip tool: " + what)
	}
}

// NetNS is a named network namespace created for one test.
type NetNS struct {
	Name string          // name as in `ip netns list`
	Path string          // /var/run/netns/<Name>
	NS   *redirect.NetNS // open handle, closed at cleanup
}

// NewNetNS creates a uniquely named network namespace with lo up, and
// registers its deletion with t.Cleanup.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random netns name: %v", err)
	}
	name := "zt-test-" + hex.EncodeToString(b[:])
	Run(t, "ip", "netns", "add", name)
	n := &NetNS{Name: name, Path: "/var/run/netns/" + name}
	t.Cleanup(func() {
		if _, err := os.Stat(n.Path); err != nil {
			return // deleted by the test
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	n.IP(t, "link", "set", "lo", "up")
	ns, err := redirect.OpenNetNS(n.Path)
	if err != nil {
		t.Fatalf("open netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	n.NS = ns
	return n
}

// Delete removes the namespace's name now (as when a pod goes away); the
// NS handle stays open until cleanup.
func (n *NetNS) Delete(t testing.TB) {
	t.Helper()
	Run(t, "ip", "netns", "del", n.Name)
}

// IP runs `ip -n <name> args...` and fails the test on error.
func (n *NetNS) IP(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Exec runs a command inside the namespace (`ip netns exec`) and fails the
// test on error.
func (n *NetNS) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command and fails the test on error, returning its stdout.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// Veth connects a and b with a veth pair and assigns the addresses
// (prefixes, e.g. 10.66.0.1/24) to the a and b ends, bringing both up.
// The pair disappears with the namespaces.
func Veth(t testing.TB, a, b *NetNS, aAddr, bAddr netip.Prefix) {
	t.Helper()
	// Interface names are per namespace, so fixed names are fine.
	a.IP(t, "link", "add", "vtest0", "type", "veth", "peer", "name", "vtest1", "netns", b.Name)
	a.IP(t, addrArgs(aAddr, "vtest0")...)
	b.IP(t, addrArgs(bAddr, "vtest1")...)
	a.IP(t, "link", "set", "vtest0", "up")
	b.IP(t, "link", "set", "vtest1", "up")
}

func addrArgs(p netip.Prefix, dev string) []string {
	args := []string{"addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad") // usable at once, no duplicate address detection
	}
	return args
}
