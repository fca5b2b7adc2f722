package testbed

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/ztunnel-go/ztunnel/certs"
	"github.com/ztunnel-go/ztunnel/certs/catest"
	"github.com/ztunnel-go/ztunnel/redirect"
	"github.com/ztunnel-go/ztunnel/workload/xdstest"
)

// IstiodPort is the port of the fake istiod (istiod's XDS/CA port).
const IstiodPort = 15012

// Istiod is the fake istiod of a cluster built with Config.ControlPlane: one plaintext gRPC server,
// in the fabric namespace on an address every node reaches, serving delta ADS (the workload and
// authorization resources) and the Istio CA (signing with the run's CA).
type Istiod struct {
	// Addr is where the server listens: the last host address of Config.NodeSubnet (e.g.
	// 172.30.255.254), port IstiodPort.
	Addr netip.AddrPort
	// XDS serves the resources. The cluster pushes its topology through it. Tests may set other
	// resources on it (names the cluster does not use); WaitConfigApplied ignores them.
	XDS *xdstest.Server
	// CA issues the proxies' certificates; its Requests record the calls.
	CA *catest.Server

	srv     *grpc.Server
	tracker *ackTracker
	served  chan struct{} // closed when Serve returned (after serve started it)

	mu     sync.Mutex   // guards pushed, owned and serving
	pushed xdsResources // what the cluster pushed last; nil before the first push
	// owned holds, per type, every name the cluster ever pushed. Replaced, never modified, so
	// that a copy of the reference may be read without mu.
	owned   map[string]map[string]bool
	serving bool // serve was called
}

// newIstiod builds the fake istiod (not yet listening) with the CA in caCert/caKey.
func newIstiod(caCert, caKey string, log *slog.Logger) (*Istiod, error) {
	ca, err := certs.NewLocalCA(certs.LocalCAConfig{CertFile: caCert, KeyFile: caKey, TrustDomain: TrustDomain})
	if err != nil {
		return nil, fmt.Errorf("fake istiod: %w", err)
	}
	log = log.With("component", "istiod")
	d := &Istiod{
		XDS:     xdstest.NewServer(log),
		CA:      catest.NewServer(ca, log),
		tracker: newACKTracker(),
		served:  make(chan struct{}),
	}
	d.srv = grpc.NewServer(
		grpc.StreamInterceptor(d.tracker.intercept),
		// ztunnel pings every 30 s; allow that, as istiod does.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	)
	d.XDS.Register(d.srv)
	d.CA.Register(d.srv)
	return d, nil
}

// istiodAddr is the fake istiod's address in subnet: its last host address.
func istiodAddr(subnet netip.Prefix) netip.AddrPort {
	b := subnet.Masked().Addr().As4()
	host := ^uint32(0) >> subnet.Bits()
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	v-- // not the broadcast address
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), IstiodPort)
}

// serve listens on d.Addr inside the network namespace at nsPath and serves in the background.
func (d *Istiod) serve(ctx context.Context, nsPath string) error {
	ns, err := redirect.OpenNetNS(nsPath)
	if err != nil {
		return fmt.Errorf("fake istiod: %w", err)
	}
	ln, err := ns.Listen(ctx, "tcp", d.Addr.String(), redirect.SocketOptions{})
	if cerr := ns.Close(); err == nil && cerr != nil {
		ln.Close()
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fake istiod: listen on %s: %w", d.Addr, err)
	}
	d.serveListener(ln)
	return nil
}

// serveListener serves on ln in the background until stop.
func (d *Istiod) serveListener(ln net.Listener) {
	d.mu.Lock()
	d.serving = true
	d.mu.Unlock()
	go func() {
		defer close(d.served)
		_ = d.srv.Serve(ln) // returns when stopped
	}()
}

// stop ends every stream and call and closes the listener.
func (d *Istiod) stop() {
	d.srv.Stop()
	d.mu.Lock()
	serving := d.serving
	d.mu.Unlock()
	if serving {
		<-d.served
	}
}

// push sends the changes from the last push to res in one batch (nothing if nothing changed).
// Callers serialize pushes (Cluster.cfgMu).
func (d *Istiod) push(res xdsResources) {
	owned := map[string]map[string]bool{}
	d.mu.Lock()
	prev := d.pushed
	for typ, names := range d.owned {
		owned[typ] = maps.Clone(names)
	}
	for typ, set := range res {
		if owned[typ] == nil {
			owned[typ] = map[string]bool{}
		}
		for name := range set {
			owned[typ][name] = true
		}
	}
	d.pushed, d.owned = res, owned
	d.mu.Unlock()
	type change struct {
		typeURL, name string
		res           proto.Message // nil: delete
	}
	var changes []change
	for _, typ := range []string{typeAddress, typeAuthorization} {
		for _, name := range res.sortedNames(typ) {
			if old, ok := prev[typ][name]; !ok || !proto.Equal(old, res[typ][name]) {
				changes = append(changes, change{typ, name, res[typ][name]})
			}
		}
		for _, name := range prev.sortedNames(typ) {
			if _, ok := res[typ][name]; !ok {
				changes = append(changes, change{typ, name, nil})
			}
		}
	}
	if len(changes) == 0 {
		return
	}
	d.XDS.Batch(func(b *xdstest.Batch) {
		for _, c := range changes {
			if c.res == nil {
				b.Delete(c.typeURL, c.name)
			} else {
				b.Set(c.typeURL, c.name, c.res)
			}
		}
	})
}

// applied reports whether the proxy connecting from addr has ACKed the last push (see
// ackTracker.check).
func (d *Istiod) applied(addr netip.Addr) (behind string, err error) {
	d.mu.Lock()
	want, owned := d.pushed, d.owned
	d.mu.Unlock()
	return d.tracker.check(addr, want, owned)
}

// nodeEnv returns the environment that points a proxy on node n at the fake istiod, with tokenPath
// as its AUTH_TOKEN.
func (d *Istiod) nodeEnv(n *node, tokenPath string) []string {
	url := "http://" + d.Addr.String()
	return []string{
		"XDS_ADDRESS=" + url,
		"CA_ADDRESS=" + url,
		"AUTH_TOKEN=" + tokenPath,
		"POD_NAME=ztunnel-" + n.spec.Name,
		"POD_NAMESPACE=istio-system",
		"INSTANCE_IP=" + n.ip.String(),
	}
}

// Istiod returns the cluster's fake istiod, or nil unless Config.ControlPlane is set.
func (c *Cluster) Istiod() *Istiod { return c.istiod }

// nodeToken is the bearer token of node n's proxy.
func (c *Cluster) nodeToken(n *node) string {
	return "testbed-" + c.runID + "-" + n.spec.Name + "-" + strconv.Itoa(n.index)
}
