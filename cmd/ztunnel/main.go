// Command ztunnel is the node proxy of an Istio ambient mesh. It is configured by the
// reference ztunnel's environment variables (see ztunnel.FromEnv and the README).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/ztunnel-go/ztunnel/ztunnel"
)

// init keeps the main goroutine on the main thread for good, so that no other goroutine ever runs
// there: a thread that redirect.NetNS.Do could not switch back out of a pod's namespace is
// discarded, and the runtime cannot end the main thread, whose namespace /proc/self/ns/net shows.
func init() { runtime.LockOSThread() }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(1)
	}
}

func run() error {
	// Log lines are written in batches (one write per batch, not per access-log line); warnings
	// and errors at once, and the rest on the way out.
	out := ztunnel.NewLogBuffer(os.Stderr, 0, 0)
	defer out.Close()
	logger, minLevel, err := ztunnel.NewLoggerTo(out, os.Getenv)
	if err != nil {
		return err
	}
	// Levels per component, adjustable at run time (admin /logging): the control filters,
	// the handler underneath lets everything through.
	minLevel.Set(ztunnel.LevelTrace)
	logs, err := ztunnel.NewLogControl(logger.Handler(), ztunnel.LogSpecFromEnv(os.Getenv))
	if err != nil {
		return err
	}
	logger = logs.Logger()
	cfg, err := ztunnel.FromEnv(os.Environ())
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	cfg.Logger, cfg.LogControl = logger, logs
	proxy, err := ztunnel.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return proxy.Run(ctx)
}
