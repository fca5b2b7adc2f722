package hbone

import (
	"log/slog"
	"time"
)

// Defaults used for zero Config fields (reference: ztunnel's HTTP2_* settings).
const (
	DefaultStreamWindow = 4 << 20
	DefaultConnWindow   = 16 << 20
	DefaultMaxFrameSize = 1 << 20
	DefaultPingInterval = 10 * time.Second
	DefaultPingTimeout  = 20 * time.Second

	defaultClientMaxHeaderList = 16 << 10
	defaultServerMaxHeaderList = 64 << 10

	// initialWindow is the RFC 9113 §6.9.2 initial flow-control window that applies before SETTINGS.
	initialWindow = 65535
	// maxWindow is the largest legal flow-control window (RFC 9113 §6.9.1).
	maxWindow = 1<<31 - 1
	// minFrameSize and maxFrameSize bound SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2).
	minFrameSize = 16384
	maxFrameSize = 1<<24 - 1
)

// Config holds the HTTP/2 tuning shared by the client pool and the server. Zero values mean the defaults.
type Config struct {
	// StreamWindow is the receive window advertised for each stream (SETTINGS_INITIAL_WINDOW_SIZE).
	// Zero means 4 MiB. Values below 65535 are raised to 65535, values above 2^31-1 lowered to it.
	StreamWindow uint32
	// ConnWindow is the connection-level receive window. Zero means 16 MiB. It is raised to at least
	// StreamWindow (and 65535), since a smaller connection window would starve every stream.
	ConnWindow uint32
	// MaxFrameSize is the largest frame we accept (SETTINGS_MAX_FRAME_SIZE) and the largest DATA frame
	// we send (further capped by the peer's setting). Zero means 1 MiB; clamped to [16384, 2^24-1].
	MaxFrameSize uint32
	// PingInterval is how often a PING is sent. Zero means 10s.
	PingInterval time.Duration
	// PingTimeout is how long a connection may stay silent after a PING before it is closed. It also
	// bounds how long a single socket write may block. Zero means 20s.
	PingTimeout time.Duration
	// Logger receives debug-level connection events. Nil means slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with the zero fields filled in and out-of-range values clamped.
func (c Config) withDefaults() Config {
	if c.StreamWindow == 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	c.StreamWindow = min(max(c.StreamWindow, initialWindow), maxWindow)
	if c.ConnWindow == 0 {
		c.ConnWindow = DefaultConnWindow
	}
	c.ConnWindow = min(max(c.ConnWindow, c.StreamWindow), maxWindow)
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	c.MaxFrameSize = min(max(c.MaxFrameSize, minFrameSize), maxFrameSize)
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = DefaultPingTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
