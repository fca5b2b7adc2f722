// Command ztunnel is the node proxy of an Istio ambient mesh. It is configured by the
// reference ztunnel's environment variables (see ztunnel.FromEnv and the README).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ztunnel-go/ztunnel/ztunnel"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(1)
	}
}

func run() error {
	logger, _, err := ztunnel.NewLogger(os.Getenv)
	if err != nil {
		return err
	}
	cfg, err := ztunnel.FromEnv(os.Environ())
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	cfg.Logger = logger
	proxy, err := ztunnel.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return proxy.Run(ctx)
}
