package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ztunnel-go/ztunnel/internal/controlplane"
)

// The resource types ztunnel watches over delta ADS, in subscription order
// (ztunnel-behavior.md §3.3).
const (
	TypeAddress       = "type.googleapis.com/istio.workload.Address"
	TypeAuthorization = "type.googleapis.com/istio.security.Authorization"
)

// Reconnect backoff and message limits of the reference client (ztunnel-behavior.md §3.3).
const (
	xdsInitialBackoff = 10 * time.Millisecond
	xdsMaxBackoff     = 15 * time.Second
	xdsMaxMessageSize = 200 << 20
)

// ErrOnDemandDisabled is returned by Demand when XDSConfig.OnDemand is false.
var ErrOnDemandDisabled = errors.New("xds: on-demand discovery is disabled (XDS_ON_DEMAND)")

// XDSConfig configures an XDSClient.
type XDSConfig struct {
	// Dial says how to reach istiod's XDS endpoint (XDS_ADDRESS, XDS_ROOT_CA, ALT_XDS_HOSTNAME,
	// AUTH_TOKEN, cluster id, XDS_HEADER_*). Its Logger defaults to Logger below. Required: an
	// empty Address is an error.
	Dial controlplane.DialConfig
	// NodeID is the node's id, "ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local", built by the
	// caller. Required.
	NodeID string
	// Metadata is the node metadata, string values only (NAME, NAMESPACE, INSTANCE_IPS,
	// NODE_NAME, CLUSTER_ID, proxy metadata...). Zero means none.
	Metadata map[string]string
	// OnDemand (XDS_ON_DEMAND) subscribes the Address type to nothing; names are then fetched
	// with Demand. Authorization is always a wildcard subscription. Zero means wildcard for both.
	OnDemand bool
	// Store receives a new Snapshot after every push that changed something. Required.
	Store *Store
	// Logger receives connection and NACK events. Nil means slog.Default().
	Logger *slog.Logger
}

func (c XDSConfig) withDefaults() XDSConfig {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Dial.Logger == nil {
		c.Dial.Logger = c.Logger
	}
	return c
}

// XDSClient is a delta-ADS client for ztunnel's workload discovery types (Address and
// Authorization). It keeps one stream to istiod at a time, ACKs or NACKs every response, and
// publishes the resulting state as whole Snapshots in its Store. While disconnected, the Store
// keeps serving the last good state; on reconnect the client sends the versions it holds
// (initial_resource_versions) so that unchanged resources are not sent again.
//
// # Concurrency
//
// Run must be called once; it owns the resource state and the stream. Synced, Demand and
// Stats may be called from any goroutine, before, during or after Run.
type XDSClient struct {
	cfg    XDSConfig // immutable after NewXDSClient
	log    *slog.Logger
	node   *corev3.Node // immutable; sent in each stream's initial requests
	synced chan struct{}
	ran    atomic.Bool

	// Owned by the Run goroutine.
	state      *xdsState
	waitSynced map[string]bool // types whose first push has not been applied and ACKed yet

	kick chan struct{} // capacity 1: Demand tells the Run loop that names await subscription

	mu      sync.Mutex         // guards demands and stats
	demands map[string]*demand // name -> callers waiting for a response that carries it
	stats   XDSStats

	// onBackoff, if set (tests), is called by Run with each reconnect delay before sleeping.
	onBackoff func(time.Duration)
}

// demand is one demanded name and the callers waiting for it.
type demand struct {
	waiters []chan struct{}
	sentOn  uint64 // stream generation the subscription was sent on; 0 = not yet sent
}

// NewXDSClient validates cfg (including the dial settings) and returns a client; it does not
// connect until Run.
func NewXDSClient(cfg XDSConfig) (*XDSClient, error) {
	cfg = cfg.withDefaults()
	if cfg.Store == nil {
		return nil, errors.New("xds client: no Store")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("xds client: no node id")
	}
	if cfg.Dial.Address == "" {
		return nil, errors.New("xds client: no XDS address configured (XDS_ADDRESS)")
	}
	conn, err := controlplane.Dial(cfg.Dial) // validates now; Run dials again per connection
	if err != nil {
		return nil, fmt.Errorf("xds client: %w", err)
	}
	_ = conn.Close() // never connected: nothing to report
	// Configuration warnings (plaintext token, token-like path) were logged just now; the dial
	// of every reconnect would repeat them.
	cfg.Dial.Logger = slog.New(slog.DiscardHandler)
	md := make(map[string]*structpb.Value, len(cfg.Metadata))
	for k, v := range cfg.Metadata {
		md[k] = structpb.NewStringValue(v)
	}
	c := &XDSClient{
		cfg:        cfg,
		log:        cfg.Logger,
		node:       &corev3.Node{Id: cfg.NodeID, Metadata: &structpb.Struct{Fields: md}},
		synced:     make(chan struct{}),
		state:      newXDSState(cfg.Store),
		waitSynced: map[string]bool{TypeAuthorization: true},
		kick:       make(chan struct{}, 1),
		demands:    make(map[string]*demand),
		stats:      newXDSStats(),
	}
	if !cfg.OnDemand {
		c.waitSynced[TypeAddress] = true
	}
	return c, nil
}

// Synced returns a channel that is closed once every type that is not on-demand has had its
// first response applied and ACKed (the reference's readiness condition).
func (c *XDSClient) Synced() <-chan struct{} { return c.synced }

// Run connects, follows the stream and reconnects with backoff (10ms doubling to 15s; reset
// after a graceful close or a server-side recycle) until ctx is done, then returns nil. It
// returns an error only if called a second time.
func (c *XDSClient) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("xds client: Run called twice")
	}
	backoff := xdsInitialBackoff
	for gen := uint64(1); ; gen++ {
		err := c.runStream(ctx, gen)
		if ctx.Err() != nil {
			return nil
		}
		var reason string
		reason, backoff = nextBackoff(err, backoff)
		c.countTermination(reason)
		if reason == TerminationReconnect || reason == TerminationComplete {
			c.log.Debug("xds stream ended; reconnecting", "reason", reason, "error", err, "retry_in", backoff)
		} else {
			c.log.Warn("xds stream failed; reconnecting", "reason", reason, "error", err, "retry_in", backoff)
		}
		if c.onBackoff != nil {
			c.onBackoff(backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Demand subscribes the Address resource name ("network/ip", "namespace/hostname" or a
// workload uid) and returns once a response carried it, as a resource, an alias of one, or a
// removal (the server does not know it), or when ctx is done (its error is returned). The
// Store has been updated by then. It needs OnDemand and a running Run; while disconnected the
// subscription is sent on the next stream.
func (c *XDSClient) Demand(ctx context.Context, name string) error {
	if !c.cfg.OnDemand {
		return ErrOnDemandDisabled
	}
	if name == "" {
		return errors.New("xds: demand of an empty name")
	}
	ch := make(chan struct{})
	c.mu.Lock()
	d := c.demands[name]
	if d == nil {
		d = &demand{}
		c.demands[name] = d
	}
	d.waiters = append(d.waiters, ch)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default: // a kick is already pending
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		if d := c.demands[name]; d != nil {
			for i, w := range d.waiters {
				if w == ch {
					d.waiters = append(d.waiters[:i], d.waiters[i+1:]...)
					break
				}
			}
			if len(d.waiters) == 0 {
				delete(c.demands, name)
			}
		}
		c.mu.Unlock()
		return fmt.Errorf("xds: demand %q: %w", name, ctx.Err())
	}
}

// takeUnsentDemands returns the demanded names not yet subscribed on stream gen and marks
// them sent.
func (c *XDSClient) takeUnsentDemands(gen uint64) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for name, d := range c.demands {
		if d.sentOn != gen {
			d.sentOn = gen
			names = append(names, name)
		}
	}
	return names
}

// notifyDemands releases the callers waiting for any of names.
func (c *XDSClient) notifyDemands(names []string) {
	if len(names) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, name := range names {
		d := c.demands[name]
		if d == nil {
			continue
		}
		for _, w := range d.waiters {
			close(w)
		}
		delete(c.demands, name)
	}
}

// markSynced records an ACKed response of typeURL and closes Synced once all types have one.
// Called by the Run goroutine only.
func (c *XDSClient) markSynced(typeURL string) {
	if !c.waitSynced[typeURL] {
		return
	}
	delete(c.waitSynced, typeURL)
	if len(c.waitSynced) == 0 {
		close(c.synced)
		c.log.Info("xds synced: every watched type applied and ACKed")
	}
}
