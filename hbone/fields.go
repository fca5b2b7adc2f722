package hbone

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// requestFields builds the header block of a CONNECT request: exactly :method and :authority, then hdr.
func requestFields(authority string, hdr http.Header) ([]hpack.HeaderField, error) {
	if _, _, err := ParseAuthority(authority); err != nil {
		return nil, err
	}
	fields := []hpack.HeaderField{{Name: ":method", Value: "CONNECT"}, {Name: ":authority", Value: authority}}
	return appendHeaderFields(fields, hdr)
}

// responseFields builds the header block of a response with the given status and headers.
func responseFields(status int, hdr http.Header) ([]hpack.HeaderField, error) {
	fields := []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(status)}}
	return appendHeaderFields(fields, hdr)
}

// appendHeaderFields appends hdr as lower-case fields in sorted name order. Connection-specific headers
// (RFC 9113 §8.2.2) and Host are dropped; invalid names or values are an error.
func appendHeaderFields(fields []hpack.HeaderField, hdr http.Header) ([]hpack.HeaderField, error) {
	names := make([]string, 0, len(hdr))
	for k := range hdr {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		name := strings.ToLower(k)
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, fmt.Errorf("invalid header name %q", k)
		}
		switch name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host":
			continue
		}
		for _, v := range hdr[k] {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("invalid value for header %q", k)
			}
			fields = append(fields, hpack.HeaderField{Name: name, Value: v})
		}
	}
	return fields, nil
}

// headerListSize is the RFC 9113 §6.5.2 size of a header list.
func headerListSize(fields []hpack.HeaderField) uint32 {
	var n uint32
	for _, f := range fields {
		n += f.Size()
	}
	return n
}

// headerFromFields converts received regular fields to an http.Header with canonical keys.
func headerFromFields(fields []hpack.HeaderField) http.Header {
	h := make(http.Header, len(fields))
	for _, f := range fields {
		k := http.CanonicalHeaderKey(f.Name)
		h[k] = append(h[k], f.Value)
	}
	return h
}
