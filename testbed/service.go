package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// ServiceSpec describes a service. Its hostname is <Name>.<Namespace>.svc.cluster.local; its
// endpoints are the pods whose PodSpec.Services name it.
type ServiceSpec struct {
	// Name and Namespace name the service. Required.
	Name, Namespace string
	// VIP is the service's virtual IP, e.g. from 10.96.0.0/16 (routed nowhere). Required. It is
	// published on every node network (with several networks, each network's config file has it
	// on that network).
	VIP netip.Addr
	// Ports maps service port -> target port. At least one.
	Ports map[uint16]uint16
	// RoutingPreference is the load balancer's routing preference, scopes from "Network", "Region",
	// "Zone", "Subzone", "Node", "Cluster". Nil: no locality preference.
	RoutingPreference []string
	// Mode is the load balancer mode: "Failover", "Strict", "Standard" or "Passthrough". Empty:
	// "Failover" if RoutingPreference is set, else no load balancer section at all.
	Mode string
}

// Hostname returns the service's cluster hostname, <name>.<namespace>.svc.cluster.local.
func (s ServiceSpec) Hostname() string {
	return serviceRecord{Name: s.Name, Namespace: s.Namespace}.Hostname()
}

// ConfigKey returns the key that names this service in PodSpec.Services: "<namespace>/<hostname>".
func (s ServiceSpec) ConfigKey() string { return s.Namespace + "/" + s.Hostname() }

// AddService adds (or replaces, by namespace and name) a service, rewrites the local config and
// waits for the proxies to load it.
func (c *Cluster) AddService(ctx context.Context, s ServiceSpec) error {
	rec, err := newServiceRecord(s)
	if err != nil {
		return fmt.Errorf("add service: %w", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("add service: cluster is closed")
	}
	key := rec.Namespace + "/" + rec.Name
	for k, o := range c.services {
		if k != key && o.VIP == rec.VIP {
			c.mu.Unlock()
			return fmt.Errorf("add service %s: VIP %s is taken by %s", key, rec.VIP, k)
		}
	}
	c.services[key] = rec
	c.mu.Unlock()
	c.log.Info("adding service", "service", rec.Hostname(), "vip", rec.VIP,
		"routingPreference", rec.RoutingPreferences, "mode", rec.Mode)
	if err := c.WriteConfig(); err != nil {
		return fmt.Errorf("add service %s: %w", key, err)
	}
	if err := c.WaitConfigApplied(ctx); err != nil {
		return fmt.Errorf("add service %s: %w", key, err)
	}
	return nil
}
