package ztunnel

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// LevelTrace is the "trace" level of RUST_LOG-style specs, below slog.LevelDebug. A handler
// wrapped by a LogControl should let it through (set its own minimum level to LevelTrace or
// lower): the LogControl does the filtering.
const LevelTrace = slog.LevelDebug - 4

// levelOff is above every level a logger uses: nothing passes it.
const levelOff = slog.Level(1 << 30)

// LogControl filters log records by level per component and lets the admin /logging endpoint
// change those levels while the proxy runs (ztunnel-behavior.md §7.1).
//
// A logger names its component with the "component" attribute, as in
// logger.With("component", "xds"); records of a component without its own level use the
// default level. Levels are given as RUST_LOG-style specs: comma-separated clauses, each a
// level ("info", which sets the default) or component=level ("xds=debug"; component:level is
// accepted too). Levels are off, error, warn, info, debug and trace ("warning" means warn,
// "critical" error). A module path in a component ("ztunnel::xds") is reduced to its last
// segment ("xds").
//
// # Concurrency
//
// All methods are safe for concurrent use. Logging reads the current filter with one atomic
// load; mu only serializes Set and Reset, which read, merge and publish a new filter.
type LogControl struct {
	inner   slog.Handler
	initial *logFilter // the start-up levels, restored by Reset

	mu  sync.Mutex // serializes Set and Reset
	cur atomic.Pointer[logFilter]
}

// logFilter is one immutable set of levels.
type logFilter struct {
	def   namedLevel
	comps map[string]namedLevel // component -> level
}

type namedLevel struct {
	name  string // canonical spelling, for String
	level slog.Level
}

// NewLogControl wraps inner with per-component levels, starting with spec ("" means "info").
func NewLogControl(inner slog.Handler, spec string) (*LogControl, error) {
	base := &logFilter{def: namedLevel{"info", slog.LevelInfo}}
	f, err := base.with(spec)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", spec, err)
	}
	c := &LogControl{inner: inner, initial: f}
	c.cur.Store(f)
	return c, nil
}

// LogSpecFromEnv returns the start-up level spec: LOG_LEVEL, else RUST_LOG, else "info".
func LogSpecFromEnv(getenv func(string) string) string {
	for _, name := range []string{"LOG_LEVEL", "RUST_LOG"} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
	}
	return "info"
}

// Logger returns a logger whose records pass through the control.
func (c *LogControl) Logger() *slog.Logger { return slog.New(c.Handler()) }

// Handler returns the filtering handler.
func (c *LogControl) Handler() slog.Handler { return &componentHandler{ctl: c, inner: c.inner} }

// String returns the current levels as a spec, components sorted, the default last:
// "certs=warn,xds=debug,info".
func (c *LogControl) String() string { return c.cur.Load().String() }

// Set adds the levels of spec to the current ones (a later clause wins over an earlier one).
// An invalid spec changes nothing.
func (c *LogControl) Set(spec string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := c.cur.Load().with(spec)
	if err != nil {
		return err
	}
	c.cur.Store(f)
	return nil
}

// Reset restores the start-up levels, then adds those of spec ("" adds nothing).
func (c *LogControl) Reset(spec string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := c.initial.with(spec)
	if err != nil {
		return err
	}
	c.cur.Store(f)
	return nil
}

// levelFor is the minimum level of component's records.
func (f *logFilter) levelFor(component string) slog.Level {
	if l, ok := f.comps[component]; ok {
		return l.level
	}
	return f.def.level
}

func (f *logFilter) String() string {
	names := make([]string, 0, len(f.comps))
	for name := range f.comps {
		names = append(names, name)
	}
	slices.Sort(names)
	parts := make([]string, 0, len(names)+1)
	for _, name := range names {
		parts = append(parts, name+"="+f.comps[name].name)
	}
	return strings.Join(append(parts, f.def.name), ",")
}

// with returns a copy of f with the clauses of spec applied in order.
func (f *logFilter) with(spec string) (*logFilter, error) {
	out := &logFilter{def: f.def, comps: make(map[string]namedLevel, len(f.comps))}
	for k, v := range f.comps {
		out.comps[k] = v
	}
	for _, clause := range strings.Split(spec, ",") {
		clause = strings.TrimSpace(clause)
		if clause == "" {
			continue
		}
		sep := strings.Index(clause, "=")
		if sep < 0 {
			sep = strings.LastIndex(clause, ":")
		}
		if sep < 0 {
			level, err := parseLogLevel(clause)
			if err != nil {
				return nil, err
			}
			out.def = level
			continue
		}
		comp, lvl := clause[:sep], clause[sep+1:]
		level, err := parseLogLevel(lvl)
		if err != nil {
			return nil, fmt.Errorf("clause %q: %w", clause, err)
		}
		comp = strings.TrimSpace(comp)
		if i := strings.LastIndex(comp, "::"); i >= 0 {
			comp = comp[i+2:]
		}
		if comp == "" {
			return nil, fmt.Errorf("clause %q: empty component name", clause)
		}
		out.comps[comp] = level
	}
	return out, nil
}

func parseLogLevel(s string) (namedLevel, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "off":
		return namedLevel{"off", levelOff}, nil
	case "error", "critical":
		return namedLevel{"error", slog.LevelError}, nil
	case "warn", "warning":
		return namedLevel{"warn", slog.LevelWarn}, nil
	case "info":
		return namedLevel{"info", slog.LevelInfo}, nil
	case "debug":
		return namedLevel{"debug", slog.LevelDebug}, nil
	case "trace":
		return namedLevel{"trace", LevelTrace}, nil
	}
	return namedLevel{}, fmt.Errorf("invalid level %q (want off, error, warn, info, debug or trace)", s)
}

// componentHandler is the handler of a LogControl. It remembers the last "component"
// attribute added with WithAttrs outside any group.
type componentHandler struct {
	ctl       *LogControl
	inner     slog.Handler
	component string
	grouped   bool // a group was opened: later attributes are not the logger's component
}

var _ slog.Handler = (*componentHandler)(nil)

func (h *componentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.ctl.cur.Load().levelFor(h.component) && h.inner.Enabled(ctx, l)
}

func (h *componentHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.ctl.cur.Load().levelFor(h.component) {
		return nil // a caller that skipped Enabled
	}
	return h.inner.Handle(ctx, r)
}

func (h *componentHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	if !h.grouped {
		for _, a := range attrs {
			if a.Key == "component" {
				c.component = a.Value.String()
			}
		}
	}
	return &c
}

func (h *componentHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.inner = h.inner.WithGroup(name)
	c.grouped = true
	return &c
}

// loggingHelp is appended to the /logging error answers.
const loggingHelp = `
POST /logging                            show the current levels
POST /logging?level=<level>              set the default level
POST /logging?level=<comp>=<level>,...   set the level of components (comp:level works too)
POST /logging?reset[&level=...]          back to the start-up levels (then apply level)

levels:     off, error, warn, info, debug, trace
components: the "component" of a log line, e.g. xds, certs, ca, zds, hbone
`

// serveLogging is the admin /logging endpoint: POST only (anything else is 405 with the
// help). Without a query it answers "current log level is <spec>\n"; with level and/or
// reset it changes the levels first (400 with the help for an invalid level). ctl nil
// means the levels cannot be read or changed (500).
func serveLogging(ctl *LogControl, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			plainText(w, http.StatusMethodNotAllowed, "Invalid HTTP method\n"+loggingHelp)
			return
		}
		if ctl == nil {
			plainText(w, http.StatusInternalServerError, "cannot read the log level: log levels are not adjustable in this process\n"+loggingHelp)
			return
		}
		q := r.URL.Query()
		level, reset := q.Get("level"), q.Has("reset")
		if reset || level != "" {
			var err error
			if reset {
				err = ctl.Reset(level)
			} else {
				err = ctl.Set(level)
			}
			if err != nil {
				plainText(w, http.StatusBadRequest, fmt.Sprintf("Invalid level provided: %s (%v)\n%s", level, err, loggingHelp))
				return
			}
			log.Info("log level changed", "level", ctl.String(), "reset", reset)
		}
		plainText(w, http.StatusOK, "current log level is "+ctl.String()+"\n")
	}
}

// plainText writes a text/plain answer.
func plainText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, body)
}
