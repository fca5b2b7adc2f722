package hbone

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.5:8080", "[fd00::5]:80", "svc.ns.svc.cluster.local:80", "a@b:1", "[::1%lo]:1", ":", "[]:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		host, port, err := ParseAuthority(a)
		if err != nil {
			return
		}
		if host == "" || port == 0 {
			t.Fatalf("ParseAuthority(%q) = %q, %d without error", a, host, port)
		}
		if strings.ContainsAny(host, " @/?#%\x00") {
			t.Fatalf("ParseAuthority(%q) accepted host %q", a, host)
		}
		// The result formats back into an authority that parses the same.
		again := host + ":" + strconv.Itoa(int(port))
		if strings.Contains(host, ":") {
			again = "[" + host + "]:" + strconv.Itoa(int(port))
		}
		h2, p2, err := ParseAuthority(again)
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("re-parse of %q = %q, %d, %v", again, h2, p2, err)
		}
	})
}

func FuzzForwarded(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4}, uint16(5678), "svc.ns.svc.cluster.local", `for="1.2.3.4:5678";host=x`)
	f.Add([]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(80), `we"ird\host`, `host="a\"b"`)
	f.Fuzz(func(t *testing.T, ip []byte, port uint16, host, raw string) {
		_ = ForwardedHost(raw) // arbitrary input: must not panic
		addr, _ := netip.AddrFromSlice(ip)
		v := Forwarded(netip.AddrPortFrom(addr, port), host)
		var want []byte // Forwarded drops control bytes, which cannot appear in a header value
		for i := 0; i < len(host); i++ {
			if ch := host[i]; ch >= ' ' && ch != 0x7f || ch == '\t' {
				want = append(want, ch)
			}
		}
		if got := ForwardedHost(v); got != string(want) {
			t.Fatalf("ForwardedHost(Forwarded(%v, %q) = %q) = %q, want %q", addr, host, v, got, want)
		}
	})
}

func FuzzParseBaggage(f *testing.F) {
	f.Add("k8s.namespace.name=default,service.name=web", "key", "value")
	f.Add("a=%zz;p, =,b=%41", "cloud.region", "us east,1%")
	f.Fuzz(func(t *testing.T, raw, key, value string) {
		_ = ParseBaggage(raw) // arbitrary input: must not panic
		m := ParseBaggage(Baggage([]KV{{key, value}}))
		if !isToken(key) || value == "" {
			if len(m) != 0 {
				t.Fatalf("Baggage skipped nothing for key %q value %q: %v", key, value, m)
			}
			return
		}
		if got, ok := m[key]; !ok || got != value {
			t.Fatalf("round trip of %q=%q: got %v", key, value, m)
		}
	})
}

// fuzzSeedFrames returns frames a client might send after its preface, encoded with a framer.
func fuzzSeedFrames(f *testing.F) [][]byte {
	var seeds [][]byte
	build := func(write func(fr *http2.Framer, enc func(kv ...string) []byte)) {
		var buf, hbuf bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		henc := hpack.NewEncoder(&hbuf)
		enc := func(kv ...string) []byte {
			hbuf.Reset()
			for i := 0; i < len(kv); i += 2 {
				henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
			}
			return bytes.Clone(hbuf.Bytes())
		}
		write(fr, enc)
		seeds = append(seeds, bytes.Clone(buf.Bytes()))
	}
	build(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true,
			BlockFragment: enc(":method", "CONNECT", ":authority", "10.0.0.1:80", "baggage", "a=b")})
		fr.WriteData(1, false, []byte("hello"))
		fr.WriteWindowUpdate(1, 100)
		fr.WriteData(1, true, nil)
	})
	build(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":method", "CONNECT")})
		fr.WriteContinuation(3, true, enc(":authority", "[fd00::1]:80"))
		fr.WritePing(false, [8]byte{1})
		fr.WriteRSTStream(3, http2.ErrCodeCancel)
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	build(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, EndStream: true,
			BlockFragment: enc(":method", "GET", ":path", "/", ":scheme", "https", ":authority", "x:1")})
		fr.WriteRawFrame(0x99, 0, 0, []byte("unknown"))
		fr.WritePriority(5, http2.PriorityParam{StreamDep: 1, Weight: 3})
	})
	return seeds
}

// FuzzServerFrames feeds arbitrary bytes after a valid preface and SETTINGS into ServeConn over
// net.Pipe and checks that the server neither panics nor hangs.
func FuzzServerFrames(f *testing.F) {
	for _, s := range fuzzSeedFrames(f) {
		f.Add(s)
	}
	f.Add([]byte("garbage that is not a frame at all"))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}) // a SETTINGS frame header on its own
	var preface bytes.Buffer
	preface.WriteString(http2.ClientPreface)
	http2.NewFramer(&preface, nil).WriteSettings()

	f.Fuzz(func(t *testing.T, data []byte) {
		srv := &Server{
			Config:           Config{PingInterval: time.Hour, Logger: discardLogger},
			HandshakeTimeout: time.Second,
			Handler:          echoHandler,
		}
		cc, sc := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(context.Background(), sc)
		}()
		go io.Copy(io.Discard, cc) // drain the server's frames
		cc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		cc.Write(preface.Bytes())
		cc.Write(data)
		time.Sleep(time.Millisecond) // let the server act on the input before the hangup
		cc.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("ServeConn hung on input %q\n%s", data, hboneStacks(string(buf[:runtime.Stack(buf, true)])))
		}
	})
}
