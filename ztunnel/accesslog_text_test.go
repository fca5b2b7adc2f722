package ztunnel

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ztunnel-go/ztunnel/relay"
	"github.com/ztunnel-go/ztunnel/workload"
)

// accessLogCases are connections whose lines exercise slog's quoting rules.
func accessLogCases(t *testing.T) []struct {
	ci  *connInfo
	res relay.Result
	err error
} {
	p := newTestProxy(t, Config{})
	odd := &workload.Workload{Name: "wé ird=name", Namespace: "ns\t\"q\"\\"}
	cases := []struct {
		ci  *connInfo
		res relay.Result
		err error
	}{
		{outboundHBONEConn(t, p), relay.Result{Received: 2, Sent: 1}, nil},
		{&connInfo{Direction: "outbound", Src: netip.MustParseAddrPort("10.0.1.1:40000")}, relay.Result{}, errors.New("no route")},
		{&connInfo{Direction: "inbound", Protocol: "TCP", Src: netip.MustParseAddrPort("[fe80::1%eth0]:1"),
			Dst: netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"), SrcWorkload: odd, DstWorkload: odd,
			SrcIdentity: "spiffe://x/ns/a b/sa/c", DstService: "", DstIdentity: "\x00\u00a0\u2028\xff"},
			relay.Result{Received: 1 << 40, Err: errors.New(`reset "by" peer` + "\n")}, nil},
		{&connInfo{}, relay.Result{}, errors.New("")},
	}
	// One odd value at a time, so that no other character forces the quotes.
	for _, v := range []string{"a=b", "tab\tx", `q"x`, `back\slash`, "del\x7f", "é", "nb\u00a0sp", "ls\u2028", "bad\xff", "ctl\x01", "ok.-_/:@[]"} {
		cases = append(cases, struct {
			ci  *connInfo
			res relay.Result
			err error
		}{&connInfo{Direction: "outbound", SrcIdentity: v, HBONEAddr: v}, relay.Result{}, nil})
	}
	return cases
}

// The line built outside slog is byte for byte the one slog's text handler writes, also with
// the logger's own attributes (the pod).
func TestAccessLogDirectMatchesSlog(t *testing.T) {
	now := time.Date(2026, 11, 21, 21, 53, 26, 987654321, time.UTC)
	for _, loc := range []*time.Location{time.UTC, time.FixedZone("x", -(3*3600 + 30*60))} {
		for i, tc := range accessLogCases(t) {
			tc.ci.Start = now.Add(-1234567 * time.Nanosecond)
			err := tc.err
			if err == nil {
				err = tc.res.Err
			}
			level, msg := slog.LevelInfo, "connection complete"
			if err != nil {
				level, msg = slog.LevelWarn, "connection failed"
			}
			at := now.In(loc)

			var want bytes.Buffer
			sh := slog.NewTextHandler(&want, nil).WithAttrs([]slog.Attr{slog.String("pod", "ns 1/client"), slog.Int("n", 3)})
			logConnRecord(sh, tc.ci, tc.res, err, at, level, msg)

			var got bytes.Buffer
			th := directText(NewTextHandler(&got, nil).WithAttrs([]slog.Attr{slog.String("pod", "ns 1/client")}).WithAttrs([]slog.Attr{slog.Int("n", 3)}))
			if th == nil {
				t.Fatal("NewTextHandler: no direct path")
			}
			b := th.appendHeader(nil, at, level, msg)
			th.writeLine(appendConnAttrs(b, tc.ci, tc.res, err, at))

			if diff := cmp.Diff(want.String(), got.String()); diff != "" {
				t.Errorf("case %d (%s): direct line differs from slog's (-slog +direct):\n%s", i, loc, diff)
			}
		}
	}
}

// logConn takes the direct path under a LogControl over NewTextHandler, honours the levels,
// and falls back to slog for other handlers.
func TestLogConnDirect(t *testing.T) {
	ci := accessLogCases(t)[0].ci
	var buf bytes.Buffer
	ctl, err := NewLogControl(NewTextHandler(&buf, &slog.HandlerOptions{Level: LevelTrace}), "info")
	if err != nil {
		t.Fatal(err)
	}
	log := ctl.Logger().With("pod", "ns1/client")
	logConn(log, ci, relay.Result{Received: 2, Sent: 1}, nil)
	line := regexp.MustCompile(`^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d) level=INFO msg="connection complete" pod=ns1/client src.addr=10.0.1.1:40000 .* bytes_sent=1 bytes_recv=2 duration=\S+\n$`)
	if !line.Match(buf.Bytes()) {
		t.Errorf("access log line %q does not match %s", buf.String(), line)
	}

	buf.Reset()
	if err := ctl.Set("warn"); err != nil {
		t.Fatal(err)
	}
	logConn(log, ci, relay.Result{}, nil)
	if buf.Len() != 0 {
		t.Errorf("INFO line written at level warn: %q", buf.String())
	}
	logConn(log, ci, relay.Result{}, errors.New("boom"))
	if !strings.Contains(buf.String(), "level=WARN") || !strings.HasSuffix(buf.String(), " error=boom\n") {
		t.Errorf("failed connection line = %q", buf.String())
	}

	// ReplaceAttr (and JSON, and slog's own handlers) go through slog.
	buf.Reset()
	h := NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == "src.addr" {
			a.Value = slog.StringValue("X")
		}
		return a
	}})
	logConn(slog.New(h), ci, relay.Result{}, nil)
	if !strings.Contains(buf.String(), " src.addr=X ") {
		t.Errorf("ReplaceAttr not applied: %q", buf.String())
	}
	if directText(slog.NewJSONHandler(&buf, nil)) != nil || directText(h.WithGroup("g")) != nil {
		t.Error("direct path offered for JSON or a group")
	}
}

// BenchmarkConnLogDirect is the access-log line as the proxy writes it: through a LogControl
// over NewTextHandler (compare BenchmarkConnLog, slog's text handler).
func BenchmarkConnLogDirect(b *testing.B) {
	p, _ := benchProxy(b)
	ci := outboundHBONEConn(b, p)
	ctl, err := NewLogControl(NewTextHandler(io.Discard, &slog.HandlerOptions{Level: LevelTrace}), "info")
	if err != nil {
		b.Fatal(err)
	}
	log := ctl.Logger().With("pod", "ns1/client")
	b.ReportAllocs()
	for b.Loop() {
		logConn(log, ci, relay.Result{Received: 1, Sent: 1}, nil)
	}
}

// Other records pass through NewTextHandler as slog's text handler writes them, attributes and
// groups included.
func TestNewTextHandlerIsSlogText(t *testing.T) {
	noTime := &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}}
	var want, got bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&want, noTime), NewTextHandler(&got, noTime)} {
		log := slog.New(h).With("pod", "ns/p")
		log.Info("hello world", "k", "v w", "n", 3)
		log.WithGroup("g").Warn("grouped", "a", 1)
		log.Debug("hidden")
	}
	if diff := cmp.Diff(want.String(), got.String()); diff != "" {
		t.Errorf("NewTextHandler output (-slog +ours):\n%s", diff)
	}
}
