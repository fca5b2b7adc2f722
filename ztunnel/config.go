package ztunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
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
	PoolMaxStreams     int
	PoolUnusedRelease  time.Duration
	StreamWindow       uint32
	ConnectionWindow   uint32
	FrameSize          uint32
	ConnectTimeout     time.Duration // 10s, upstream dial timeout
	SourceWorkloadWait time.Duration // 5s, how long a pod's connection waits for its workload to appear

	// TerminationDeadline bounds draining on shutdown (CONNECTION_TERMINATION_DEADLINE,
	// else TERMINATION_GRACE_PERIOD_SECONDS-5 if that is over 10, else 5s).
	TerminationDeadline time.Duration

	// Logger receives the proxy's logs, including one access-log line per connection.
	Logger *slog.Logger
}

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
	if c.TerminationDeadline == 0 {
		c.TerminationDeadline = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// FromEnv reads the configuration from environment variables (getenv is os.Getenv in
// production). Every malformed value is reported, each naming its variable.
func FromEnv(getenv func(string) string) (Config, error) {
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
	if mode := str("PROXY_MODE"); mode != "" && mode != "shared" {
		errs = append(errs, fmt.Errorf("PROXY_MODE=%q: only \"shared\" (in-pod) mode is implemented", mode))
	}
	c.CACertFile, c.CAKeyFile = str("CA_CERT"), str("CA_KEY")
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		errs = append(errs, errors.New("CA_CERT and CA_KEY must be set together"))
	}
	c.TrustDomain = str("TRUST_DOMAIN")
	dur("SECRET_TTL", &c.SecretTTL)
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
	dur("POOL_UNUSED_RELEASE_TIMEOUT", &c.PoolUnusedRelease)
	uint32v("HTTP2_STREAM_WINDOW_SIZE", &c.StreamWindow, 65535)
	uint32v("HTTP2_CONNECTION_WINDOW_SIZE", &c.ConnectionWindow, 65535)
	uint32v("HTTP2_FRAME_SIZE", &c.FrameSize, 16384)
	if c.FrameSize > 1<<24-1 {
		errs = append(errs, fmt.Errorf("HTTP2_FRAME_SIZE=%d: at most %d", c.FrameSize, 1<<24-1))
	}
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
	if xds := str("XDS_ADDRESS"); xds != "" && c.LocalXDSPath == "" && strings.TrimSpace(c.LocalXDS) == "" {
		errs = append(errs, fmt.Errorf("XDS_ADDRESS=%q: the xDS client is not implemented yet; set LOCAL_XDS_PATH or LOCAL_XDS", xds))
	}
	if c.LocalXDSPath == "" && strings.TrimSpace(c.LocalXDS) == "" && len(errs) == 0 {
		errs = append(errs, errors.New("no workload source: set LOCAL_XDS_PATH (or LOCAL_XDS)"))
	}
	return c, errors.Join(errs...)
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
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	switch f := strings.TrimSpace(getenv("LOG_FORMAT")); f {
	case "", "plain", "text":
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		err = errors.Join(err, fmt.Errorf("LOG_FORMAT=%q: want json or plain", f))
	}
	return slog.New(h), level, err
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
