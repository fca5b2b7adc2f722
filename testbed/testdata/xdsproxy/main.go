package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/internal/controlplane"
	"github.com/ztunnel-go/ztunnel/workload"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "xdsproxy:", err)
		os.Exit(1)
	}
}

func run() error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	for _, k := range []string{"LOCAL_XDS_PATH", "CA_CERT", "CA_KEY"} {
		if v, ok := os.LookupEnv(k); ok {
			return fmt.Errorf("%s=%q is set; the control plane mode must not set it", k, v)
		}
	}
	env := map[string]string{}
	for _, k := range []string{"XDS_ADDRESS", "CA_ADDRESS", "AUTH_TOKEN", "POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "CLUSTER_ID"} {
		if env[k] = os.Getenv(k); env[k] == "" {
			return fmt.Errorf("%s is not set", k)
		}
	}
	ns := env["POD_NAMESPACE"]
	dial := controlplane.DialConfig{Address: env["XDS_ADDRESS"], TokenPath: env["AUTH_TOKEN"], ClusterID: env["CLUSTER_ID"], Logger: log}
	store := workload.NewStore()
	client, err := workload.NewXDSClient(workload.XDSConfig{
		Dial:   dial,
		NodeID: "ztunnel~" + env["INSTANCE_IP"] + "~" + env["POD_NAME"] + "." + ns + "~" + ns + ".svc.cluster.local",
		Store:  store, Logger: log,
	})
	if err != nil {
		return err
	}
	ca, err := certs.NewCAClient(certs.CAClientConfig{Address: env["CA_ADDRESS"], TokenPath: env["AUTH_TOKEN"],
		ClusterID: env["CLUSTER_ID"], Impersonate: true, Logger: log})
	if err != nil {
		return err
	}
	defer ca.Close()
	ictx, icancel := context.WithTimeout(ctx, 10*time.Second)
	wc, err := ca.Issue(ictx, certs.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: "ztunnel"})
	icancel()
	if err != nil {
		return err
	}
	log.Info("certificate issued", "identity", wc.Identity)
	go func() {
		for {
			select {
			case <-store.Changed():
			case <-ctx.Done():
				return
			}
			s := store.Load()
			log.Info("snapshot", "workloads", len(s.Workloads()), "services", len(s.Services()), "policies", len(s.Policies()))
		}
	}()
	return client.Run(ctx)
}
