package certs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

func TestNewCAClientConfigErrors(t *testing.T) {
	dir := t.TempDir()
	garbageRoot := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbageRoot, []byte("not a certificate"))
	missingRoot := filepath.Join(dir, "missing-root.pem")
	tokenDir := filepath.Join(dir, "tokendir")
	if err := os.Mkdir(tokenDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     CAClientConfig
		wantErr []string
	}{
		{"no address", CAClientConfig{}, []string{"no CA address"}},
		{"bad scheme", CAClientConfig{Address: "ftp://istiod:15012"}, []string{`scheme "ftp"`, "ftp://istiod:15012"}},
		{"unix scheme", CAClientConfig{Address: "unix:///run/ca.sock"}, []string{`scheme "unix"`}},
		{"path", CAClientConfig{Address: "https://istiod:15012/ca"}, []string{"no user, path"}},
		{"no host", CAClientConfig{Address: "https://:15012"}, []string{"no host"}},
		{"empty port", CAClientConfig{Address: "https://istiod:"}, []string{"empty port"}},
		{"bad port", CAClientConfig{Address: "https://istiod:port"}, []string{"istiod:port"}},
		{"missing root file", CAClientConfig{Address: "https://istiod:15012", RootCAFile: missingRoot}, []string{missingRoot, "no such file"}},
		{"default root file missing", CAClientConfig{Address: "istiod:15012"}, []string{DefaultCARootFile}},
		{"garbage root file", CAClientConfig{Address: "https://istiod:15012", RootCAFile: garbageRoot}, []string{garbageRoot, "not PEM"}},
		{"garbage inline root", CAClientConfig{Address: "https://istiod:15012", RootCAFile: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, []string{"inline CA root PEM"}},
		{"token path is a directory", CAClientConfig{Address: "http://istiod:15010", TokenPath: tokenDir}, []string{tokenDir, "directory"}},
		{"missing token file with space", CAClientConfig{Address: "http://istiod:15010", TokenPath: "/no such/token"}, []string{"neither an existing file nor a valid token"}},
		{"reserved header", CAClientConfig{Address: "http://istiod:15010", Headers: map[string]string{"grpc-timeout": "1S"}}, []string{"grpc-timeout", "reserved"}},
		{"authorization header", CAClientConfig{Address: "http://istiod:15010", Headers: map[string]string{"Authorization": "x"}}, []string{"Authorization", "set by the client"}},
		{"bad header name", CAClientConfig{Address: "http://istiod:15010", Headers: map[string]string{"a b": "x"}}, []string{`"a b"`, "invalid character"}},
		{"bad header value", CAClientConfig{Address: "http://istiod:15010", Headers: map[string]string{"x-a": "line\nbreak"}}, []string{"x-a", "control"}},
		{"duplicate header", CAClientConfig{Address: "http://istiod:15010", Headers: map[string]string{"x-a": "1", "X-A": "2"}}, []string{"given twice"}},
		{"bad cluster ID", CAClientConfig{Address: "http://istiod:15010", ClusterID: "c\x00"}, []string{"cluster ID"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = testLogger(t)
			c, err := NewCAClient(tc.cfg)
			if c != nil {
				_ = c.Close()
			}
			t.Logf("NewCAClient error: %v", err)
			wantErr(t, "NewCAClient", err, tc.wantErr...)
		})
	}
}

func TestNewCAClientUnreadableTokenFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can read a mode 000 file; the directory case covers unreadable token paths")
	}
	tokenFile := filepath.Join(t.TempDir(), "istio-token")
	writeFile(t, tokenFile, []byte("tok"))
	if err := os.Chmod(tokenFile, 0); err != nil {
		t.Fatal(err)
	}
	_, err := NewCAClient(CAClientConfig{Address: "http://istiod:15010", TokenPath: tokenFile, Logger: testLogger(t)})
	wantErr(t, "NewCAClient", err, tokenFile, "permission denied")
}

func TestNewCAClientSystemRoots(t *testing.T) {
	c, err := NewCAClient(CAClientConfig{Address: "https://istiod:15012", RootCAFile: "SYSTEM", Logger: testLogger(t)})
	if err != nil {
		t.Skipf("no OS roots on this machine: %v", err)
	}
	_ = c.Close()
}

// TestCAClientBehindManager runs the client as the Manager's issuer with short-lived certificates:
// the first renewal fails, the old certificate keeps being served, and the retry replaces it.
func TestCAClientBehindManager(t *testing.T) {
	f := newFakeCA(t, false)
	release := make(chan struct{})
	f.setRespond(func(n int, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
		switch n {
		case 1:
			return nil, status.Error(codes.Unavailable, "istiod restarting")
		case 2:
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		return f.sign(req)
	})
	c := newTestCAClient(t, CAClientConfig{Address: "http://" + f.addr, TTL: 6 * time.Second})
	m := NewManager(ManagerConfig{Issuer: c, Logger: testLogger(t)})
	startRun(t, m)

	first, err := m.Get(issueCtx(t), caID)
	if err != nil {
		t.Fatalf("first Get: %v", err)
	}
	f.waitCall(2) // the renewal at half-life failed and the backoff retry is at the CA now
	got, err := m.Get(issueCtx(t), caID)
	if err != nil {
		t.Fatalf("Get after failed renewal: %v", err)
	}
	if !got.TLS.Leaf.Equal(first.TLS.Leaf) {
		t.Fatal("Get after failed renewal returned a new certificate, want the old one")
	}
	close(release)

	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := m.Get(issueCtx(t), caID)
		if err != nil {
			t.Fatalf("Get after retry: %v", err)
		}
		if !got.TLS.Leaf.Equal(first.TLS.Leaf) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("certificate not replaced within 5s of the retry being answered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(f.callsSnapshot()); n != 3 {
		t.Errorf("CA saw %d calls, want 3 (issue, failed renewal, retry)", n)
	}
}
