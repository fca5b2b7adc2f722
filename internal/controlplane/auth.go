package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
)

// requestAuth is the per-RPC credentials of a control plane client: the bearer token,
// "clusterid" and the extra headers. It works over plaintext too (RequireTransportSecurity is
// false). Immutable; the token file, if any, is read on every request so that rotated tokens
// are picked up.
type requestAuth struct {
	tokenFile   string // re-read per request; "" when there is none
	staticToken string // used when tokenFile is ""; "" means no authorization header
	fixed       map[string]string
}

var _ credentials.PerRPCCredentials = (*requestAuth)(nil)

// newRequestAuth implements the TokenPath, ClusterID and Headers rules documented on
// DialConfig. An existing token file must be readable now; its content is only checked per
// request, so that a file that is momentarily empty while being rotated does not prevent
// start-up.
func newRequestAuth(cfg DialConfig, log *slog.Logger) (*requestAuth, error) {
	a := &requestAuth{fixed: map[string]string{"clusterid": cfg.ClusterID}}
	if err := checkHeaderValue(cfg.ClusterID); err != nil {
		return nil, fmt.Errorf("cluster ID %q: %w", cfg.ClusterID, err)
	}
	for k, v := range cfg.Headers {
		name := strings.ToLower(k)
		if err := checkHeaderName(name); err != nil {
			return nil, fmt.Errorf("header %q: %w", k, err)
		}
		if err := checkHeaderValue(v); err != nil {
			return nil, fmt.Errorf("header %q value: %w", k, err)
		}
		if _, dup := a.fixed[name]; dup {
			return nil, fmt.Errorf("header %q given twice (names are case-insensitive)", k)
		}
		a.fixed[name] = v
	}
	if cfg.TokenPath == "" {
		return a, nil
	}
	if st, err := os.Stat(cfg.TokenPath); err == nil {
		if st.IsDir() {
			return nil, fmt.Errorf("token file %q is a directory", cfg.TokenPath)
		}
		if _, err := os.ReadFile(cfg.TokenPath); err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
		a.tokenFile = cfg.TokenPath
		return a, nil
	} else if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(cfg.TokenPath)
	if err := checkToken(tok); err != nil {
		// Most likely a path to a file that does not exist; do not echo a possible secret.
		return nil, fmt.Errorf("token source is neither an existing file nor a valid token: %w", err)
	}
	if strings.HasPrefix(tok, "/") || strings.HasPrefix(tok, "./") || strings.HasPrefix(tok, "../") {
		log.Warn("control plane token looks like a path but no such file exists; using it as a static token",
			"value", tok)
	}
	a.staticToken = tok
	return a, nil
}

// sendsToken reports whether requests carry an authorization header.
func (a *requestAuth) sendsToken() bool { return a.tokenFile != "" || a.staticToken != "" }

// GetRequestMetadata returns the headers for one request (a unary call or a whole stream),
// re-reading the token file.
func (a *requestAuth) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	md := make(map[string]string, len(a.fixed)+1)
	maps.Copy(md, a.fixed)
	tok := a.staticToken
	if a.tokenFile != "" {
		data, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
		tok = string(bytes.TrimSpace(data))
		if tok == "" {
			return nil, fmt.Errorf("token file %q is empty", a.tokenFile)
		}
		if err := checkToken(tok); err != nil {
			return nil, fmt.Errorf("token file %q: %w", a.tokenFile, err)
		}
	}
	if tok != "" {
		md["authorization"] = "Bearer " + tok
	}
	return md, nil
}

// RequireTransportSecurity is false so that the credentials also work on http:// addresses.
func (a *requestAuth) RequireTransportSecurity() bool { return false }

// checkToken accepts a non-empty string of visible ASCII characters (no spaces or controls).
func checkToken(tok string) error {
	if tok == "" {
		return errors.New("token is empty")
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("token has a space, control or non-ASCII character at offset %d", i)
		}
	}
	return nil
}

// checkHeaderName rejects names that are not HTTP tokens or are set by HTTP/2, gRPC or this
// package.
func checkHeaderName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case strings.HasPrefix(name, ":"), strings.HasPrefix(name, "grpc-"):
		return errors.New("name reserved by HTTP/2 or gRPC")
	case strings.HasSuffix(name, "-bin"):
		return errors.New("binary (-bin) headers are not supported")
	}
	switch name {
	case "content-type", "te", "user-agent", "host", "connection", "authorization", "clusterid":
		return errors.New("name is set by the client itself")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid character %q in name", c)
		}
	}
	return nil
}

// checkHeaderValue accepts printable ASCII (spaces included), as gRPC requires for text metadata.
func checkHeaderValue(v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' || c > '~' {
			return fmt.Errorf("control or non-ASCII character at offset %d", i)
		}
	}
	return nil
}
