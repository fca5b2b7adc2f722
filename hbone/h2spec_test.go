package hbone

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/summerwind/h2spec/config"
	"github.com/summerwind/h2spec/generic"
	"github.com/summerwind/h2spec/hpack"
	h2spechttp2 "github.com/summerwind/h2spec/http2"
	"github.com/summerwind/h2spec/spec"
)

// h2specSkips lists the h2spec cases that do not apply to a CONNECT-only tunnel server, or that
// h2spec cannot exercise against it, each with the reason. Every other case must pass.
//
// h2spec's requests are GET and POST requests to "/". The server answers every request that is not
// a CONNECT itself, with a 400 that ends the stream (and RST_STREAM(NO_ERROR) if the request was
// still open), without calling the handler. The cases that need a response body, or a request
// stream that stays open, cannot run against that.
var h2specSkips = map[string]string{
	"generic/2/2":     "needs a response body (DATA) after a WINDOW_UPDATE; the server answers GET with a bodiless 400",
	"generic/2/3":     "needs a response body (DATA) after a PRIORITY; the server answers GET with a bodiless 400",
	"http2/3.5/2":     "h2spec misreads the server's TCP reset (it left the rest of the bogus preface unread) as an error, not a close: it compares net.OpError.Err with ECONNRESET, which Go wraps in os.SyscallError; TestHostilePlaintextHTTP1 checks the close",
	"http2/5.1.2/1":   "needs 201 request streams open at once; the server ends each GET at once with its 400; TestHostileTooManyStreams exceeds the limit with CONNECT streams",
	"http2/6.5.3/1":   "needs a response body to watch the window; h2spec skips it itself (the 400 has none)",
	"http2/6.9.1/1":   "needs a response body to watch the window; h2spec skips it itself (the 400 has none)",
	"http2/6.9.1/3":   "the 400 and RST_STREAM(NO_ERROR) close the GET's stream before its WINDOW_UPDATEs arrive; TestHostileStreamWindowOverflow overflows the window of an open CONNECT stream",
	"http2/6.9.2/1":   "needs a response body to watch the window; h2spec skips it itself (the 400 has none)",
	"http2/6.9.2/2":   "needs a response body to watch the window; h2spec skips it itself (the 400 has none)",
	"http2/8.1.2.6/1": "content-length checks need a request body the server reads; it answers a POST with 400 and resets the stream before the DATA (CONNECT tunnels carry no message content)",
	"http2/8.1.2.6/2": "content-length checks need a request body the server reads; it answers a POST with 400 and resets the stream before the DATA (CONNECT tunnels carry no message content)",
}

// h2specKnownBugs lists cases known to fail because of a protocol bug not fixed yet, with the fix
// (none now). The test fails if one of them passes, so that the list shrinks as they are fixed;
// they are not skips: each is a real non-conformance.
var h2specKnownBugs = map[string]string{}

// h2specCase is one h2spec test case with its id ("http2/6.9.1/2").
type h2specCase struct {
	id string
	tc *spec.TestCase
}

// h2specCases lists every case of h2spec's suites, strict ones included, in suite order.
func h2specCases() []h2specCase {
	var out []h2specCase
	var walk func(g *spec.TestGroup)
	walk = func(g *spec.TestGroup) {
		for i, tc := range append(append([]*spec.TestCase(nil), g.Tests...), g.StrictTests...) {
			out = append(out, h2specCase{id: g.ID() + "/" + strconv.Itoa(i+1), tc: tc})
		}
		for _, sub := range g.Groups {
			walk(sub)
		}
	}
	for _, g := range []*spec.TestGroup{generic.Spec(), h2spechttp2.Spec(), hpack.Spec()} {
		walk(g)
	}
	return out
}

// TestH2Spec runs h2spec's conformance suites (generic, http2, hpack; strict cases too) against
// the server over h2c: h2spec cannot present the client certificate the server requires with TLS,
// so each connection is served with ServeConn on a plain loopback TCP connection, where h2spec
// sends the client preface directly. h2spec's requests are GETs, which the server answers itself
// (400, END_STREAM) without calling the handler.
func TestH2Spec(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// h2spec assumes the default SETTINGS_MAX_FRAME_SIZE (its frame-size cases send 20 KB frames).
	// The handler is never called: h2spec sends no CONNECT requests, and the server answers the
	// others itself.
	var handled atomic.Int32
	srv := &Server{
		Config: Config{MaxFrameSize: minFrameSize, Logger: discardLogger},
		Handler: HandlerFunc(func(ctx context.Context, r *Request) {
			handled.Add(1)
			r.Reject(http.StatusNotImplemented, "h2spec test")
		}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var served sync.WaitGroup
	served.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			served.Go(func() { srv.ServeConn(ctx, c) })
		}
	})
	defer func() {
		ln.Close()
		cancel()
		served.Wait()
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	cases := h2specCases()
	if len(cases) < 140 {
		t.Fatalf("h2spec lists %d cases, expected about 146", len(cases))
	}
	seen := make(map[string]bool)
	for _, c := range cases {
		seen[c.id] = true
	}
	for _, m := range []map[string]string{h2specSkips, h2specKnownBugs} {
		for id := range m {
			if !seen[id] {
				t.Errorf("%s is listed but h2spec has no such case", id)
			}
		}
	}

	// The cases run concurrently, each on its own connection: many of them wait for h2spec's
	// timeout (a stream the server must keep open, a frame it must ignore).
	type result struct {
		err error
		d   time.Duration
	}
	results := make([]result, len(cases))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, c := range cases {
		if _, skip := h2specSkips[c.id]; skip {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cfg := &config.Config{Host: "127.0.0.1", Port: port, Path: "/", Timeout: time.Second,
				MaxHeaderLen: 4000, Strict: true}
			start := time.Now()
			results[i].err = runH2specCase(cfg, c.tc)
			results[i].d = time.Since(start)
		})
	}
	wg.Wait()
	if n := handled.Load(); n != 0 {
		t.Errorf("the handler was called %d times; h2spec sends no CONNECT requests", n)
	}

	for i, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			if reason, skip := h2specSkips[c.id]; skip {
				t.Skipf("%s: %s", c.tc.Desc, reason)
			}
			err := results[i].err
			if bug, known := h2specKnownBugs[c.id]; known {
				if err == nil {
					t.Fatalf("%s passes now: remove it from h2specKnownBugs", c.id)
				}
				t.Skipf("KNOWN BUG, not a skip: %s\n  fix: %s\n  %s", c.tc.Desc, bug, strings.ReplaceAll(err.Error(), "\n", "\n  "))
			}
			if err != nil {
				t.Errorf("%s\n  requirement: %s\n  %s", c.tc.Desc, c.tc.Requirement, strings.ReplaceAll(err.Error(), "\n", "\n  "))
			}
		})
	}
}

// runH2specCase dials the server and runs one case, as h2spec's TestCase.Test does (without its
// printing, and without exiting the process when the dial fails).
func runH2specCase(cfg *config.Config, tc *spec.TestCase) error {
	conn, err := spec.Dial(cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := tc.Run(cfg, conn); err != nil {
		if errors.Is(err, spec.ErrSkipped) {
			return errors.New("h2spec skipped the case (unexpected: list it in h2specSkips)")
		}
		return err
	}
	return nil
}
