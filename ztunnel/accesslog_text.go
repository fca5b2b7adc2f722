package ztunnel

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// NewTextHandler returns a handler that writes what slog.NewTextHandler(w, opts) writes, and
// that also lets the access log build its lines itself (see logConn): the same bytes, without
// slog's generic per-attribute work (a record, value kinds, a handler state). Lines from both
// paths are written whole, one Write each, under one mutex. With opts.ReplaceAttr or
// opts.AddSource set, or after WithGroup, every line goes through slog.
func NewTextHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	out := &lockedWriter{w: w}
	return &textHandler{
		Handler: slog.NewTextHandler(out, opts),
		out:     out,
		direct:  opts.ReplaceAttr == nil && !opts.AddSource,
	}
}

// textHandler is slog's text handler plus the means to write a line built outside slog.
type textHandler struct {
	slog.Handler               // slog's text handler, with the same attributes and groups
	out          *lockedWriter // shared by every handler derived from the same NewTextHandler
	direct       bool          // lines may be built outside slog (see NewTextHandler)
	attrs        []slog.Attr   // added by WithAttrs, in order (kept only while direct)

	prefix atomic.Pointer[[]byte] // attrs as slog formats them; built on first use
}

var _ slog.Handler = (*textHandler)(nil)

func (h *textHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := &textHandler{Handler: h.Handler.WithAttrs(as), out: h.out, direct: h.direct}
	if c.direct {
		c.attrs = append(slices.Clip(h.attrs), as...)
	}
	return c
}

// Handle writes the record with slog's text handler; a warning or worse is flushed at once when
// the output is a LogBuffer.
func (h *textHandler) Handle(ctx context.Context, r slog.Record) error {
	return handleFlushingWarnings(ctx, h.Handler, r, h.out)
}

func (h *textHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &textHandler{Handler: h.Handler.WithGroup(name), out: h.out}
}

// attrPrefix is the handler's own attributes as slog's text handler writes them after the
// message (" k=v" each). slog formats them, once, so the two paths cannot differ.
func (h *textHandler) attrPrefix() []byte {
	if p := h.prefix.Load(); p != nil {
		return *p
	}
	var buf bytes.Buffer
	sh := slog.NewTextHandler(&buf, nil).WithAttrs(h.attrs)
	sh.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelInfo, "", 0)) //nolint:errcheck // a bytes.Buffer does not fail
	p := bytes.TrimSuffix(bytes.TrimPrefix(buf.Bytes(), []byte(`level=INFO msg=""`)), []byte("\n"))
	p = bytes.Clone(p)
	h.prefix.Store(&p)
	return p
}

// appendHeader starts a line as slog's text handler does: time, level, message, then the
// handler's attributes.
func (h *textHandler) appendHeader(b []byte, t time.Time, level slog.Level, msg string) []byte {
	b = append(b, "time="...)
	b = appendRFC3339Millis(b, t)
	b = append(b, " level="...)
	b = append(b, level.String()...)
	b = append(b, " msg="...)
	b = appendTextString(b, msg)
	return append(b, h.attrPrefix()...)
}

// writeLine ends the line b and writes it.
func (h *textHandler) writeLine(b []byte) {
	h.out.Write(append(b, '\n')) //nolint:errcheck // like slog: a failed log write has nowhere to go
}

// directText returns the text handler under h that accepts lines built outside slog, nil if
// there is none (another format, ReplaceAttr...). h's level filter is the caller's to apply.
func directText(h slog.Handler) *textHandler {
	if c, ok := h.(*componentHandler); ok {
		h = c.inner
	}
	if t, ok := h.(*textHandler); ok && t.direct {
		return t
	}
	return nil
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// handleFlushingWarnings has h handle r, then flushes out if r is a warning or worse, so that
// those are not held back by a LogBuffer.
func handleFlushingWarnings(ctx context.Context, h slog.Handler, r slog.Record, out *lockedWriter) error {
	err := h.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		out.flush()
	}
	return err
}

// flush flushes w if it buffers (a LogBuffer).
func (l *lockedWriter) flush() {
	if f, ok := l.w.(interface{ Flush() error }); ok {
		f.Flush() //nolint:errcheck // a failed log write has nowhere to go
	}
}

// linePool holds line buffers for directly written lines.
var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledLine = 16 << 10

// appendRFC3339Millis writes t as slog's text handler does: RFC 3339 with exactly three
// fractional digits (truncated).
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	return t.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
}

// appendTextString writes s as slog's text handler writes a string: as is, or quoted when
// it is empty or has spaces, '=', '"', control or non-printable characters or invalid UTF-8.
func appendTextString(b []byte, s string) []byte {
	start := len(b)
	return quoteFrom(append(b, s...), start)
}

// quoteFrom quotes b[start:], already appended, if slog's text handler would.
func quoteFrom(b []byte, start int) []byte {
	if !textNeedsQuoting(b[start:]) {
		return b
	}
	return strconv.AppendQuote(b[:start], string(b[start:]))
}

// textNeedsQuoting is the rule of slog's text handler (log/slog needsQuoting).
func textNeedsQuoting(s []byte) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == ' ' || c == '=' || c == '"' || c < 0x20 {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}
