package ztunnel

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// newTestLogControl returns a control over a text handler that writes to buf and lets every
// level through.
func newTestLogControl(t *testing.T, spec string, buf *bytes.Buffer) *LogControl {
	t.Helper()
	ctl, err := NewLogControl(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: LevelTrace}), spec)
	if err != nil {
		t.Fatalf("NewLogControl(%q): %v", spec, err)
	}
	return ctl
}

func TestLogControlSpecs(t *testing.T) {
	tests := []struct {
		start string
		set   []string // applied in order with Set
		want  string
	}{
		{"", nil, "info"},
		{"debug", nil, "debug"},
		{"info,xds=debug", nil, "xds=debug,info"},
		{"ztunnel::xds=trace,hickory_server::server=off,warn", nil, "server=off,xds=trace,warn"},
		{"info", []string{"error"}, "error"},
		{"info", []string{"xds=debug,certs=warn"}, "certs=warn,xds=debug,info"},
		{"info", []string{"xds:debug"}, "xds=debug,info"},
		{"info", []string{"access:debug,info"}, "access=debug,info"},
		{"info", []string{"xds=debug", "xds=off", "WARNING"}, "xds=off,warn"},
		{"info", []string{"critical"}, "error"},
	}
	for _, tt := range tests {
		ctl := newTestLogControl(t, tt.start, new(bytes.Buffer))
		for _, s := range tt.set {
			if err := ctl.Set(s); err != nil {
				t.Fatalf("start %q: Set(%q): %v", tt.start, s, err)
			}
		}
		if got := ctl.String(); got != tt.want {
			t.Errorf("start %q, set %q: levels %q, want %q", tt.start, tt.set, got, tt.want)
		}
	}

	ctl := newTestLogControl(t, "info,xds=debug", new(bytes.Buffer))
	for _, bad := range []string{"loud", "xds=loud", "=debug", "xds", "ztunnel::xds", "xds=debug,nope"} {
		if err := ctl.Set(bad); err == nil {
			t.Errorf("Set(%q) = nil, want an error", bad)
		}
	}
	if got := ctl.String(); got != "xds=debug,info" {
		t.Errorf("after invalid specs: %q, want unchanged %q", got, "xds=debug,info")
	}
	if _, err := NewLogControl(slog.DiscardHandler, "xds=loud"); err == nil {
		t.Error("NewLogControl with an invalid spec: want an error")
	}

	ctl.Set("certs=error,debug")
	if err := ctl.Reset(""); err != nil || ctl.String() != "xds=debug,info" {
		t.Errorf("Reset(\"\") = %v, levels %q, want the start-up %q", err, ctl.String(), "xds=debug,info")
	}
	if err := ctl.Reset("warn"); err != nil || ctl.String() != "xds=debug,warn" {
		t.Errorf("Reset(\"warn\") = %v, levels %q, want %q", err, ctl.String(), "xds=debug,warn")
	}
}

func TestLogControlFiltersByComponent(t *testing.T) {
	var buf bytes.Buffer
	ctl := newTestLogControl(t, "info,xds=debug,certs=off", &buf)
	root := ctl.Logger()
	xds := root.With("component", "xds")
	certs := root.With("component", "certs")
	pod := root.With("pod", "default/a").With("component", "hbone")
	grouped := root.WithGroup("g").With("component", "xds") // inside a group: not the logger's component

	root.Debug("root-debug")
	root.Info("root-info")
	xds.Debug("xds-debug")
	xds.Log(context.Background(), LevelTrace, "xds-trace")
	certs.Error("certs-error")
	pod.Debug("hbone-debug")
	pod.Info("hbone-info")
	grouped.Debug("grouped-debug")

	ctl.Set("hbone=trace,certs=error")
	pod.Log(context.Background(), LevelTrace, "hbone-trace")
	certs.Error("certs-error-2")
	certs.Warn("certs-warn")

	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		for _, f := range strings.Fields(line) {
			if msg, ok := strings.CutPrefix(f, "msg="); ok {
				got = append(got, msg)
			}
		}
	}
	want := []string{"root-info", "xds-debug", "hbone-info", "hbone-trace", "certs-error-2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("logged messages (-want +got):\n%s\nlog:\n%s", diff, buf.String())
	}
	if !strings.Contains(buf.String(), "component=hbone") {
		t.Errorf("the component attribute is not in the output:\n%s", buf.String())
	}
}

func TestLogSpecFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if got := LogSpecFromEnv(env(nil)); got != "info" {
		t.Errorf("no env: %q, want info", got)
	}
	if got := LogSpecFromEnv(env(map[string]string{"RUST_LOG": "xds=debug,warn"})); got != "xds=debug,warn" {
		t.Errorf("RUST_LOG: %q", got)
	}
	if got := LogSpecFromEnv(env(map[string]string{"RUST_LOG": "warn", "LOG_LEVEL": "debug"})); got != "debug" {
		t.Errorf("LOG_LEVEL wins: %q", got)
	}
}

// TestAdminLogging covers /logging as istioctl ztunnel-config log uses it.
func TestAdminLogging(t *testing.T) {
	ctl := newTestLogControl(t, "info", new(bytes.Buffer))
	p := newAdminProxy(t, Config{LogControl: ctl})
	h := p.admin.handler()
	steps := []struct {
		method, target string
		status         int
		body           string // exact, or a prefix when it ends in "..."
	}{
		{"POST", "/logging", 200, "current log level is info\n"},
		{"GET", "/logging", 405, "Invalid HTTP method\n..."},
		{"GET", "/logging?level=debug", 405, "Invalid HTTP method\n..."},
		{"POST", "/logging?level=debug", 200, "current log level is debug\n"},
		{"POST", "/logging?level=xds=trace,certs=warn", 200, "current log level is certs=warn,xds=trace,debug\n"},
		{"POST", "/logging?level=access:debug,info", 200, "current log level is access=debug,certs=warn,xds=trace,info\n"},
		{"POST", "/logging?level=loud", 400, "Invalid level provided: loud..."},
		{"POST", "/logging?level=xds", 400, "Invalid level provided: xds..."},
		{"POST", "/logging", 200, "current log level is access=debug,certs=warn,xds=trace,info\n"},
		{"POST", "/logging?level=", 200, "current log level is access=debug,certs=warn,xds=trace,info\n"},
		{"POST", "/logging?level=info&reset", 200, "current log level is info\n"},
		{"POST", "/logging?level=xds=debug", 200, "current log level is xds=debug,info\n"},
		{"POST", "/logging?reset", 200, "current log level is info\n"},
		{"POST", "/logging?level=off", 200, "current log level is off\n"},
	}
	for _, s := range steps {
		rec := do(t, h, s.method, s.target)
		body := rec.Body.String()
		ok := body == s.body
		if prefix, isPrefix := strings.CutSuffix(s.body, "..."); isPrefix {
			ok = strings.HasPrefix(body, prefix)
		}
		if rec.Code != s.status || !ok {
			t.Errorf("%s %s: %d %q, want %d %q", s.method, s.target, rec.Code, body, s.status, s.body)
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s %s: Content-Type %q", s.method, s.target, ct)
		}
	}

	// Without a control the levels cannot be read or changed.
	p2 := newAdminProxy(t, Config{})
	if rec := do(t, p2.admin.handler(), "POST", "/logging?level=debug"); rec.Code != 500 {
		t.Errorf("without LogControl: %d %q, want 500", rec.Code, rec.Body.String())
	}
}

// FuzzLogSpec: any spec is accepted or rejected without panicking, and an accepted one
// prints as a spec that parses back to the same levels.
func FuzzLogSpec(f *testing.F) {
	for _, s := range []string{"info", "xds=debug,warn", "a:trace,b=off", "ztunnel::x=error", "=", ",,", "x=y=z", "::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ctl, err := NewLogControl(slog.DiscardHandler, spec)
		if err != nil {
			return
		}
		printed := ctl.String()
		again, err := NewLogControl(slog.DiscardHandler, printed)
		if err != nil {
			t.Fatalf("spec %q printed as %q, which does not parse: %v", spec, printed, err)
		}
		if again.String() != printed {
			t.Fatalf("spec %q printed as %q, which prints as %q", spec, printed, again.String())
		}
	})
}
