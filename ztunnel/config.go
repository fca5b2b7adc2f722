package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ztunnel-go/ztunnel/redirect/zds"
)

// Config is the proxy's configuration. The zero value of each field means the default named
// in its comment, which is the reference ztunnel's default (ztunnel-behavior.md §11).
// FromEnv fills it from the reference's environment variables.
type Config struct {
	// LocalXDSPath is a local workload/service/policy file (LOCAL_XDS_PATH), reloaded when
	// it changes. LocalXDS is the same content inline (LOCAL_XDS). Exactly one is required
	// until the xDS client exists.
	LocalXDSPath string
	LocalXDS     string
	// LocalXDSMaxBytes is the size limit of the LocalXDSPath file (LOCAL_XDS_MAX_BYTES; 64 MiB,
	// workload.DefaultLocalConfigMaxBytes); parsing budgets derive from it. Zero means the default.
	LocalXDSMaxBytes int64

	// XDS is the istiod connection for workload discovery (XDS_ADDRESS, XDS_ROOT_CA,
	// ALT_XDS_HOSTNAME, XDS_HEADER_*). XDS.Address empty: no xDS (local config only).
	// Unset XDS_ADDRESS without a local config means the reference default:
	// https://istiod.istio-system.svc:15012 in Kubernetes, else https://localhost:15012.
	XDS ControlPlane
	// XDSOnDemand fetches addresses from istiod only when a connection needs them (XDS_ON_DEMAND).
	XDSOnDemand bool
	// CA is the Istio CA (CA_ADDRESS, CA_ROOT_CA, ALT_CA_HOSTNAME, CA_HEADER_*). CA.Address
	// empty: the built-in CA issues certificates (local mode).
	CA ControlPlane
	// AuthToken is the bearer token file sent to istiod, re-read on every request (AUTH_TOKEN;
	// ./var/run/secrets/tokens/istio-token when that file exists).
	AuthToken string
	// PodName, PodNamespace and InstanceIP identify this proxy to istiod (POD_NAME,
	// POD_NAMESPACE, INSTANCE_IP); Meta is its node metadata (ISTIO_META_*).
	PodName, PodNamespace, InstanceIP string
	Meta                              map[string]string

	// CACertFile and CAKeyFile hold the root of the built-in CA used in local mode
	// (CA_CERT, CA_KEY). Both empty: a root is generated in memory.
	CACertFile, CAKeyFile string
	// TrustDomain of the built-in CA (TRUST_DOMAIN; "cluster.local").
	TrustDomain string
	// SecretTTL is the lifetime of workload certificates (SECRET_TTL; 24h).
	SecretTTL time.Duration

	// NodeName is the Kubernetes node this proxy serves (NODE_NAME).
	NodeName string
	// ClusterID is the local cluster (CLUSTER_ID; "Kubernetes").
	ClusterID string
	// Network is the local network (NETWORK; "").
	Network string

	// InPodUDS is the node agent's ZDS socket (INPOD_UDS; /var/run/ztunnel/ztunnel.sock).
	InPodUDS string
	// PacketMark is set on every socket the proxy opens in a pod (PACKET_MARK; 1337).
	PacketMark uint32
	// PortReuse sets SO_REUSEPORT on pod listeners so a new proxy can take over
	// (INPOD_PORT_REUSE; true).
	PortReuse *bool
	// OrigSrc preserves the client's source IP on inbound connections to the pod
	// (ENABLE_ORIG_SRC; nil = best effort).
	OrigSrc *bool
	// IPv6 enables dual-stack [::] listeners (IPV6_ENABLED; true).
	IPv6 *bool

	// Pool and HTTP/2 settings (POOL_MAX_STREAMS_PER_CONNECTION 100,
	// POOL_UNUSED_RELEASE_TIMEOUT 5m, HTTP2_STREAM_WINDOW_SIZE 4 MiB,
	// HTTP2_CONNECTION_WINDOW_SIZE 16 MiB, HTTP2_FRAME_SIZE 1 MiB).
	PoolMaxStreams int
	// PoolSpreadConns is how many HBONE connections per destination the pool may open to spread
	// busy streams over, so that their encryption runs on several cores
	// (POOL_SPREAD_CONNECTIONS; 1, off, as in the reference; see hbone.PoolConfig.SpreadConns).
	PoolSpreadConns    int
	PoolUnusedRelease  time.Duration
	StreamWindow       uint32
	ConnectionWindow   uint32
	FrameSize          uint32
	ConnectTimeout     time.Duration // 10s, upstream dial timeout
	SourceWorkloadWait time.Duration // 5s, how long a pod's connection waits for its workload to appear

	// Mode is what the proxy is (PROXY_MODE): ModeShared, the node proxy of in-pod mode (the
	// default), or ModeEastWestGateway, the gateway of a network for double-HBONE tunnels from other
	// networks (gateway.go). WorkloadInfo is the gateway's own workload (PROXY_WORKLOAD_INFO,
	// "namespace/name/serviceAccount"): its identity is the one the gateway presents.
	Mode         string
	WorkloadInfo zds.WorkloadInfo
	// GatewayAddr is where the east-west gateway listens: empty is port 15008 on every address,
	// dual-stack where IPv6 is available (no environment variable: for tests).
	GatewayAddr string

	// CertUnusedRelease is how long the certificate of an identity no enrolled pod or node-local
	// workload holds is kept after its last use (CERT_UNUSED_RELEASE_TIMEOUT; 1h): then it is
	// dropped instead of renewed.
	CertUnusedRelease time.Duration

	// MaxConnections caps the connections the proxy carries at once, over all pods
	// (MAX_CONNECTIONS); MaxConnectionsPerPod caps those of one pod (MAX_CONNECTIONS_PER_POD).
	// Zero derives them from the descriptor limit (see connLimitsFor): what is left after a
	// headroom of an eighth of it (at least 512), at two descriptors a connection, and three
	// quarters of that per pod. Negative means no cap.
	MaxConnections, MaxConnectionsPerPod int
	// MaxHandshakes and MaxHandshakesPerSource cap the HBONE connections still in their TLS
	// handshake or HTTP/2 preface, over all pods and from one source address
	// (HBONE_MAX_HANDSHAKES 1024, HBONE_MAX_HANDSHAKES_PER_SOURCE 64; negative: no cap).
	// HandshakeTimeout closes one that has not sent its first SETTINGS frame by then
	// (HBONE_HANDSHAKE_TIMEOUT; 10s).
	MaxHandshakes, MaxHandshakesPerSource int
	HandshakeTimeout                      time.Duration

	// TerminationDeadline bounds draining on shutdown (CONNECTION_TERMINATION_DEADLINE,
	// else TERMINATION_GRACE_PERIOD_SECONDS-5 if that is over 10, else 5s).
	TerminationDeadline time.Duration

	// Logger receives the proxy's logs, including one access-log line per connection.
	Logger *slog.Logger
	// LogControl, when set, is what Logger's records pass through (see LogControl): the admin
	// /logging endpoint reads and changes its levels. Nil: /logging cannot (it answers 500).
	LogControl *LogControl
	// AdminAddr is where the admin endpoint listens ("localhost:15000": 127.0.0.1 and ::1).
	// It must be localhost or a loopback IP.
	AdminAddr string

	// MetricsAddr is where Prometheus metrics are served, at /metrics and /stats/prometheus
	// (":15020", the reference's statsPort).
	MetricsAddr string
	// ReadinessAddr is where /healthz/ready is served (":15021").
	ReadinessAddr string
}

// Proxy modes (Config.Mode, PROXY_MODE).
const (
	ModeShared          = "shared"
	ModeEastWestGateway = "east-west-gateway"
)

// Ports of the in-pod listeners (ztunnel-behavior.md §1). They are not configurable in the
// reference either: the node agent's redirection rules name them.
const (
	OutboundPort  = 15001
	InboundPort   = 15006 // plaintext inbound
	HBONEPort     = 15008
	DefaultMark   = 1337
	defaultUDS    = "/var/run/ztunnel/ztunnel.sock"
	defaultDomain = "cluster.local"
)

// illegalPorts are proxy ports that no proxied connection may target: a connection to them
// would loop through the proxy again.
func illegalPort(p uint16) bool {
	return p == OutboundPort || p == InboundPort || p == HBONEPort
}

func (c Config) withDefaults() Config {
	if c.TrustDomain == "" {
		c.TrustDomain = defaultDomain
	}
	if c.SecretTTL == 0 {
		c.SecretTTL = 24 * time.Hour
	}
	if c.ClusterID == "" {
		c.ClusterID = "Kubernetes"
	}
	if c.InPodUDS == "" {
		c.InPodUDS = defaultUDS
	}
	if c.PacketMark == 0 {
		c.PacketMark = DefaultMark
	}
	if c.PortReuse == nil {
		c.PortReuse = ptr(true)
	}
	if c.IPv6 == nil {
		c.IPv6 = ptr(true)
	}
	if c.PoolMaxStreams == 0 {
		c.PoolMaxStreams = 100
	}
	if c.PoolSpreadConns == 0 {
		c.PoolSpreadConns = 1
	}
	if c.PoolUnusedRelease == 0 {
		c.PoolUnusedRelease = 5 * time.Minute
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = 4 << 20
	}
	if c.ConnectionWindow == 0 {
		c.ConnectionWindow = 16 << 20
	}
	if c.FrameSize == 0 {
		c.FrameSize = 1 << 20
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.SourceWorkloadWait == 0 {
		c.SourceWorkloadWait = 5 * time.Second
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.TerminationDeadline == 0 {
		c.TerminationDeadline = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.AdminAddr == "" {
		c.AdminAddr = "localhost:15000"
	}
	if c.MetricsAddr == "" {
		c.MetricsAddr = ":15020"
	}
	if c.ReadinessAddr == "" {
		c.ReadinessAddr = ":15021"
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// ControlPlane is how to reach one istiod service (xDS or CA).
type ControlPlane struct {
	Address     string            // "https://host:port", "http://host:port" (plaintext) or "host:port"
	RootCA      string            // PEM file path, "SYSTEM", or inline PEM
	AltHostname string            // name to verify instead of the address's host
	Headers     map[string]string // extra request metadata
}

const (
	defaultRootCA    = "./var/run/secrets/istio/root-cert.pem"
	defaultAuthToken = "./var/run/secrets/tokens/istio-token"
)

// FromEnv reads the configuration from an environment (os.Environ() in production). Every
// malformed value is reported, each naming its variable.
func FromEnv(environ []string) (Config, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	getenv := func(name string) string { return env[name] }
	var c Config
	var errs []error
	str := func(name string) string { return strings.TrimSpace(getenv(name)) }
	dur := func(name string, into *time.Duration) {
		if v := str(name); v != "" {
			d, err := parseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
				return
			}
			*into = d
		}
	}
	uint32v := func(name string, into *uint32, min uint64) {
		if v := str(name); v != "" {
			n, err := strconv.ParseUint(v, 0, 32)
			if err != nil || n < min {
				errs = append(errs, fmt.Errorf("%s=%q: want an integer >= %d", name, v, min))
				return
			}
			*into = uint32(n)
		}
	}
	intv := func(name string, into *int) {
		if v := str(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want an integer (0: the default, negative: no cap)", name, v))
				return
			}
			*into = n
		}
	}
	boolv := func(name string) *bool {
		v := str(name)
		if v == "" {
			return nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, v))
			return nil
		}
		return &b
	}

	c.LocalXDSPath = str("LOCAL_XDS_PATH")
	c.LocalXDS = getenv("LOCAL_XDS")
	if c.LocalXDSPath != "" && strings.TrimSpace(c.LocalXDS) != "" {
		errs = append(errs, errors.New("LOCAL_XDS_PATH and LOCAL_XDS are mutually exclusive"))
	}
	if v := str("LOCAL_XDS_MAX_BYTES"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("LOCAL_XDS_MAX_BYTES=%q: want a whole number of bytes >= 1", v))
		} else {
			c.LocalXDSMaxBytes = n
		}
	}
	switch mode := str("PROXY_MODE"); mode {
	case "", ModeShared:
	case ModeEastWestGateway:
		c.Mode = mode
		info := str("PROXY_WORKLOAD_INFO")
		parts := strings.Split(info, "/")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			errs = append(errs, fmt.Errorf("PROXY_WORKLOAD_INFO=%q: PROXY_MODE=%s needs the gateway's own workload as namespace/name/serviceAccount", info, mode))
		} else {
			c.WorkloadInfo = zds.WorkloadInfo{Namespace: parts[0], Name: parts[1], ServiceAccount: parts[2]}
		}
	default:
		errs = append(errs, fmt.Errorf("PROXY_MODE=%q: want %q (the in-pod node proxy) or %q", mode, ModeShared, ModeEastWestGateway))
	}
	c.CACertFile, c.CAKeyFile = str("CA_CERT"), str("CA_KEY")
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		errs = append(errs, errors.New("CA_CERT and CA_KEY must be set together"))
	}
	c.TrustDomain = str("TRUST_DOMAIN")
	dur("SECRET_TTL", &c.SecretTTL)
	dur("CERT_UNUSED_RELEASE_TIMEOUT", &c.CertUnusedRelease)
	c.NodeName = str("NODE_NAME")
	c.ClusterID = str("ISTIO_META_CLUSTER_ID")
	if c.ClusterID == "" {
		c.ClusterID = str("CLUSTER_ID")
	}
	c.Network = str("NETWORK")
	c.InPodUDS = str("INPOD_UDS")
	uint32v("PACKET_MARK", &c.PacketMark, 1)
	c.PortReuse = boolv("INPOD_PORT_REUSE")
	c.OrigSrc = boolv("ENABLE_ORIG_SRC")
	c.IPv6 = boolv("IPV6_ENABLED")
	var maxStreams uint32
	uint32v("POOL_MAX_STREAMS_PER_CONNECTION", &maxStreams, 1)
	c.PoolMaxStreams = int(maxStreams)
	var spread uint32
	uint32v("POOL_SPREAD_CONNECTIONS", &spread, 1)
	c.PoolSpreadConns = int(spread)
	dur("POOL_UNUSED_RELEASE_TIMEOUT", &c.PoolUnusedRelease)
	uint32v("HTTP2_STREAM_WINDOW_SIZE", &c.StreamWindow, 65535)
	uint32v("HTTP2_CONNECTION_WINDOW_SIZE", &c.ConnectionWindow, 65535)
	uint32v("HTTP2_FRAME_SIZE", &c.FrameSize, 16384)
	if c.FrameSize > 1<<24-1 {
		errs = append(errs, fmt.Errorf("HTTP2_FRAME_SIZE=%d: at most %d", c.FrameSize, 1<<24-1))
	}
	intv("MAX_CONNECTIONS", &c.MaxConnections)
	intv("MAX_CONNECTIONS_PER_POD", &c.MaxConnectionsPerPod)
	intv("HBONE_MAX_HANDSHAKES", &c.MaxHandshakes)
	intv("HBONE_MAX_HANDSHAKES_PER_SOURCE", &c.MaxHandshakesPerSource)
	dur("HBONE_HANDSHAKE_TIMEOUT", &c.HandshakeTimeout)
	dur("CONNECTION_TERMINATION_DEADLINE", &c.TerminationDeadline)
	if c.TerminationDeadline == 0 {
		if v := str("TERMINATION_GRACE_PERIOD_SECONDS"); v != "" {
			secs, err := strconv.Atoi(v)
			switch {
			case err != nil || secs < 0:
				errs = append(errs, fmt.Errorf("TERMINATION_GRACE_PERIOD_SECONDS=%q: want a whole number of seconds", v))
			case secs > 10:
				c.TerminationDeadline = time.Duration(secs-5) * time.Second
			default:
				c.TerminationDeadline = time.Second
			}
		}
	}
	local := c.LocalXDSPath != "" || strings.TrimSpace(c.LocalXDS) != ""
	xdsAddr, xdsSet := env["XDS_ADDRESS"]
	xdsAddr = strings.TrimSpace(xdsAddr)
	switch {
	case xdsSet && xdsAddr != "" && local:
		errs = append(errs, fmt.Errorf("XDS_ADDRESS=%q and a local config (LOCAL_XDS_PATH/LOCAL_XDS) are both set: use one workload source (XDS_ADDRESS= disables xDS)", xdsAddr))
	case !xdsSet && !local:
		xdsAddr = defaultIstiod(env)
	case !xdsSet:
		xdsAddr = ""
	}
	c.XDS = ControlPlane{Address: xdsAddr, RootCA: orDefault(str("XDS_ROOT_CA"), defaultRootCA),
		AltHostname: str("ALT_XDS_HOSTNAME"), Headers: prefixed(env, "XDS_HEADER_")}
	if b := boolv("XDS_ON_DEMAND"); b != nil {
		c.XDSOnDemand = *b
	}
	caAddr, caSet := env["CA_ADDRESS"]
	caAddr = strings.TrimSpace(caAddr)
	switch {
	case c.CACertFile != "" && caAddr != "":
		errs = append(errs, fmt.Errorf("CA_ADDRESS=%q and CA_CERT/CA_KEY are both set: use the Istio CA or the built-in one", caAddr))
	case c.CACertFile != "" || local && !caSet:
		caAddr = "" // built-in CA
	case !caSet:
		caAddr = defaultIstiod(env)
	}
	c.CA = ControlPlane{Address: caAddr, RootCA: orDefault(str("CA_ROOT_CA"), defaultRootCA),
		AltHostname: str("ALT_CA_HOSTNAME"), Headers: prefixed(env, "CA_HEADER_")}
	if t, ok := env["AUTH_TOKEN"]; ok {
		c.AuthToken = strings.TrimSpace(t)
	} else if _, err := os.Stat(defaultAuthToken); err == nil {
		c.AuthToken = defaultAuthToken
	}
	c.PodName, c.PodNamespace, c.InstanceIP = str("POD_NAME"), str("POD_NAMESPACE"), str("INSTANCE_IP")
	c.Meta = prefixed(env, "ISTIO_META_")
	if c.XDS.Address == "" && !local {
		errs = append(errs, errors.New("no workload source: set LOCAL_XDS_PATH (or LOCAL_XDS) or XDS_ADDRESS"))
	}
	return c, errors.Join(errs...)
}

// defaultIstiod is the reference's default control-plane address.
func defaultIstiod(env map[string]string) string {
	if env["KUBERNETES_SERVICE_HOST"] != "" {
		return "https://istiod.istio-system.svc:15012"
	}
	return "https://localhost:15012"
}

// prefixed collects the variables that start with prefix, keyed by the rest of the name
// (XDS_HEADER_X_FOO=bar => "X_FOO": "bar"); nil when there are none.
func prefixed(env map[string]string, prefix string) map[string]string {
	var out map[string]string
	for k, v := range env {
		if name, ok := strings.CutPrefix(k, prefix); ok && name != "" {
			if out == nil {
				out = map[string]string{}
			}
			out[name] = v
		}
	}
	return out
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// parseDuration accepts Go durations ("5m", "1h30m") and a plain number of seconds.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("want a duration such as 30s, 5m or 1h")
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, nil
}

// NewLogger builds the process logger: text or JSON (LOG_FORMAT=json) at the level of
// LOG_LEVEL, or of RUST_LOG's global level for compatibility ("info" by default).
func NewLogger(getenv func(string) string) (*slog.Logger, *slog.LevelVar, error) {
	return NewLoggerTo(os.Stderr, getenv)
}

// NewLoggerTo is NewLogger writing to w. If w is a LogBuffer, warnings and errors are flushed
// as soon as they are written.
func NewLoggerTo(w io.Writer, getenv func(string) string) (*slog.Logger, *slog.LevelVar, error) {
	level := new(slog.LevelVar)
	spec := strings.TrimSpace(getenv("LOG_LEVEL"))
	if spec == "" {
		spec = globalRustLevel(getenv("RUST_LOG"))
	}
	var err error
	if spec != "" {
		var l slog.Level
		if uerr := l.UnmarshalText([]byte(normalizeLevel(spec))); uerr != nil {
			err = fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", spec)
		} else {
			level.Set(l)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = NewTextHandler(w, opts)
	switch f := strings.TrimSpace(getenv("LOG_FORMAT")); f {
	case "", "plain", "text":
	case "json":
		lw := &lockedWriter{w: w}
		h = flushOnWarn{slog.NewJSONHandler(lw, opts), lw}
	default:
		err = errors.Join(err, fmt.Errorf("LOG_FORMAT=%q: want json or plain", f))
	}
	return slog.New(h), level, err
}

// flushOnWarn flushes out after every warning or error its handler writes (see LogBuffer).
type flushOnWarn struct {
	slog.Handler
	out *lockedWriter
}

func (h flushOnWarn) Handle(ctx context.Context, r slog.Record) error {
	return handleFlushingWarnings(ctx, h.Handler, r, h.out)
}

func (h flushOnWarn) WithAttrs(as []slog.Attr) slog.Handler {
	return flushOnWarn{h.Handler.WithAttrs(as), h.out}
}

func (h flushOnWarn) WithGroup(name string) slog.Handler {
	return flushOnWarn{h.Handler.WithGroup(name), h.out}
}

func normalizeLevel(s string) string {
	switch strings.ToLower(s) {
	case "trace":
		return "debug"
	case "warning":
		return "warn"
	}
	return s
}

// globalRustLevel extracts the global level of a RUST_LOG filter such as "info,access=debug".
func globalRustLevel(s string) string {
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part != "" && !strings.Contains(part, "=") {
			return part
		}
	}
	return ""
}
