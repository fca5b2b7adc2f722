package ztunnel

import (
	"log/slog"
	"os"

	"github.com/ztunnel-go/ztunnel/redirect"
)

// allowListenerMigration turns on net.ipv4.tcp_migrate_req in the pod's namespace: when a
// proxy closes a listener that shares its port with a newer proxy (SO_REUSEPORT), the
// connections still waiting in its accept queue move to the newer listener instead of being
// reset. It narrows the window in which an upgrade can lose a connection attempt; the e2e
// upgrade test passes without it too (the window is small), so it is a safeguard, not what
// the handover rests on. Best effort: kernels before 5.14 do not have it.
func allowListenerMigration(ns *redirect.NetNS, log *slog.Logger) {
	err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte("1"), 0)
	})
	if err != nil {
		log.Debug("cannot enable accept-queue migration; a proxy handover may reset pending connections", "error", err)
	}
}
