package certs

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// x509VerifyOpts verifies wc's leaf through its chain to its roots.
func x509VerifyOpts(wc *WorkloadCert) x509.VerifyOptions {
	inter := x509.NewCertPool()
	for _, c := range wc.Chain[1:] {
		inter.AddCert(c)
	}
	return x509.VerifyOptions{Roots: wc.RootPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}

func TestCAClientIntermediateAndSeveralRoots(t *testing.T) {
	f := newFakeCA(t, false)
	interKey, inter := f.newIntermediate()
	_, otherRoot := mkCert(t, nil, nil, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	f.setRespond(func(_ int, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
		pub, uris, err := decodeCSR(req.Csr)
		if err != nil {
			return nil, err
		}
		leaf := f.leaf(pub, uris, time.Hour, interKey, inter, true)
		// The last element concatenates two roots; only the second signed the intermediate.
		return &pb.IstioCertificateResponse{CertChain: []string{pemOf(leaf), pemOf(inter), pemOf(otherRoot, f.root)}}, nil
	})
	c := newTestCAClient(t, CAClientConfig{Address: "http://" + f.addr})
	wc, err := c.Issue(issueCtx(t), caID)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if len(wc.Chain) != 2 || !wc.Chain[1].Equal(inter) {
		t.Errorf("Chain has %d certificates, want leaf + intermediate", len(wc.Chain))
	}
	if len(wc.Roots) != 2 || !wc.Roots[0].Equal(otherRoot) || !wc.Roots[1].Equal(f.root) {
		t.Errorf("Roots = %d certificates, want both roots of the last element in order", len(wc.Roots))
	}
	if len(wc.TLS.Certificate) != 2 {
		t.Errorf("TLS chain has %d certificates, want 2 (roots excluded)", len(wc.TLS.Certificate))
	}
	if _, err := wc.TLS.Leaf.Verify(x509VerifyOpts(wc)); err != nil {
		t.Errorf("leaf does not verify against its own roots: %v", err)
	}
}

func TestCAClientRejectsBadResponses(t *testing.T) {
	f := newFakeCA(t, false)
	otherKey, otherRoot := mkCert(t, nil, nil, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	otherID := Identity{"cluster.local", "ns1", "intruder"}
	strangerKey := newP256(t)

	type answer func(req *pb.IstioCertificateRequest, pub any, uris []*url.URL) (*pb.IstioCertificateResponse, error)
	chain := func(s ...string) (*pb.IstioCertificateResponse, error) {
		return &pb.IstioCertificateResponse{CertChain: s}, nil
	}
	for _, tc := range []struct {
		name     string
		answer   answer
		wantErr  []string
		wantCode codes.Code // for errors from the server
	}{
		{
			name: "other identity",
			answer: func(_ *pb.IstioCertificateRequest, pub any, _ []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain(pemOf(f.leaf(pub, []*url.URL{mustURL(t, otherID.String())}, time.Hour, f.rootKey, f.root, true)), pemOf(f.root))
			},
			wantErr: []string{"CA returned certificate for " + otherID.String() + ", want " + caID.String()},
		},
		{
			name: "no SPIFFE identity",
			answer: func(_ *pb.IstioCertificateRequest, pub any, _ []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain(pemOf(f.leaf(pub, []*url.URL{mustURL(t, "https://example.com/x")}, time.Hour, f.rootKey, f.root, true)), pemOf(f.root))
			},
			wantErr: []string{"CA-issued certificate URI SAN is not a SPIFFE identity", "https://example.com/x"},
		},
		{
			name: "a second URI SAN",
			answer: func(_ *pb.IstioCertificateRequest, pub any, uris []*url.URL) (*pb.IstioCertificateResponse, error) {
				two := append(uris[:len(uris):len(uris)], mustURL(t, otherID.String()))
				return chain(pemOf(f.leaf(pub, two, time.Hour, f.rootKey, f.root, true)), pemOf(f.root))
			},
			wantErr: []string{"CA-issued certificate has 2 URI SANs", otherID.String(), "exactly one"},
		},
		{
			name: "chain does not verify to the returned root",
			answer: func(_ *pb.IstioCertificateRequest, pub any, uris []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain(pemOf(f.leaf(pub, uris, time.Hour, otherKey, otherRoot, true)), pemOf(f.root))
			},
			wantErr: []string{"verify returned chain", "unknown authority"},
		},
		{
			name: "leaf lacks clientAuth",
			answer: func(_ *pb.IstioCertificateRequest, pub any, uris []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain(pemOf(f.leaf(pub, uris, time.Hour, f.rootKey, f.root, false)), pemOf(f.root))
			},
			wantErr: []string{"client authentication"},
		},
		{
			name: "expired leaf",
			answer: func(_ *pb.IstioCertificateRequest, pub any, uris []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain(pemOf(f.leaf(pub, uris, -time.Minute, f.rootKey, f.root, true)), pemOf(f.root))
			},
			wantErr: []string{"expired"},
		},
		{
			name: "not our key",
			answer: func(_ *pb.IstioCertificateRequest, _ any, uris []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain(pemOf(f.leaf(strangerKey.Public(), uris, time.Hour, f.rootKey, f.root, true)), pemOf(f.root))
			},
			wantErr: []string{"different public key"},
		},
		{
			name: "empty chain",
			answer: func(*pb.IstioCertificateRequest, any, []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain()
			},
			wantErr: []string{"empty certificate chain"},
		},
		{
			name: "leaf without roots",
			answer: func(_ *pb.IstioCertificateRequest, pub any, uris []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain(pemOf(f.leaf(pub, uris, time.Hour, f.rootKey, f.root, true)))
			},
			wantErr: []string{"1 element"},
		},
		{
			name: "garbage leaf",
			answer: func(*pb.IstioCertificateRequest, any, []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain("not PEM at all", pemOf(f.root))
			},
			wantErr: []string{"cert_chain[0]"},
		},
		{
			name: "garbage root",
			answer: func(_ *pb.IstioCertificateRequest, pub any, uris []*url.URL) (*pb.IstioCertificateResponse, error) {
				return chain(pemOf(f.leaf(pub, uris, time.Hour, f.rootKey, f.root, true)), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
			},
			wantErr: []string{"cert_chain[1] (roots)"},
		},
		{
			name: "server error",
			answer: func(*pb.IstioCertificateRequest, any, []*url.URL) (*pb.IstioCertificateResponse, error) {
				return nil, status.Error(codes.PermissionDenied, "identity not on this node")
			},
			wantErr:  []string{"CreateCertificate", "PermissionDenied", "identity not on this node"},
			wantCode: codes.PermissionDenied,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.setRespond(func(_ int, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
				pub, uris, err := decodeCSR(req.Csr)
				if err != nil {
					return nil, err
				}
				return tc.answer(req, pub, uris)
			})
			c := newTestCAClient(t, CAClientConfig{Address: "http://" + f.addr})
			wc, err := c.Issue(issueCtx(t), caID)
			if wc != nil {
				t.Errorf("Issue returned a certificate for %s", wc.Identity)
			}
			t.Logf("Issue error: %v", err)
			wantErr(t, "Issue", err, append(tc.wantErr, caID.String(), f.addr)...)
			if err == nil {
				return
			}
			if tc.wantCode != codes.OK {
				if got := status.Code(err); got != tc.wantCode {
					t.Errorf("status code %s, want %s", got, tc.wantCode)
				}
			} else if strings.Contains(err.Error(), "rpc error") {
				t.Errorf("error %q looks like an RPC failure, want a response check", err)
			}
		})
	}
}
