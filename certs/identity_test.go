package certs

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseIdentity(t *testing.T) {
	good := []struct {
		in   string
		want Identity
	}{
		{"spiffe://cluster.local/ns/default/sa/default", Identity{"cluster.local", "default", "default"}},
		{"spiffe://td/ns/a/sa/b", Identity{"td", "a", "b"}},
		{"spiffe://my-td_1.example/ns/kube-system/sa/my.sa-1", Identity{"my-td_1.example", "kube-system", "my.sa-1"}},
		{"spiffe://cluster.local/ns/ns/sa/sa", Identity{"cluster.local", "ns", "sa"}},
	}
	for _, tc := range good {
		got, err := ParseIdentity(tc.in)
		if err != nil {
			t.Errorf("ParseIdentity(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseIdentity(%q) (-want +got):\n%s", tc.in, diff)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}

	bad := []struct{ in, errPart string }{
		{"", "must start with"},
		{"http://cluster.local/ns/a/sa/b", "must start with"},
		{"SPIFFE://cluster.local/ns/a/sa/b", "must start with"},
		{"spiffe:/cluster.local/ns/a/sa/b", "must start with"},
		{"cluster.local/ns/a/sa/b", "must start with"},
		{"spiffe://cluster.local", "0 path segments"},
		{"spiffe://cluster.local/ns/a", "2 path segments"},
		{"spiffe://cluster.local/ns/a/sa", "3 path segments"},
		{"spiffe://cluster.local/ns/a/sa/b/", "5 path segments"},
		{"spiffe://cluster.local/ns/a/sa/b/c", "5 path segments"},
		{"spiffe://cluster.local/ns/a/b/sa/c", "5 path segments"},
		{"spiffe://cluster.local//ns/a/sa/b", "5 path segments"},
		{"spiffe://cluster.local/nss/a/sa/b", `want "ns"`},
		{"spiffe://cluster.local/NS/a/sa/b", `want "ns"`},
		{"spiffe://cluster.local/ns/a/as/b", `want "sa"`},
		{"spiffe://cluster.local/sa/a/ns/b", `want "ns"`},
		{"spiffe:///ns/a/sa/b", "trust domain \"\": empty"},
		{"spiffe://cluster.local/ns//sa/b", "namespace \"\": empty"},
		{"spiffe://cluster.local/ns/a/sa/", "service account \"\": empty"},
		{"spiffe://cluster.local/ns/../sa/b", "dot segment"},
		{"spiffe://cluster.local/ns/a/sa/.", "dot segment"},
		{"spiffe://cluster local/ns/a/sa/b", "invalid character"},
		{"spiffe://cluster.local/ns/a b/sa/b", "invalid character"},
		{"spiffe://cluster.local/ns/a/sa/b?x=1", "invalid character"},
		{"spiffe://cluster.local/ns/a/sa/b#frag", "invalid character"},
		{"spiffe://cluster.local/ns/a%2F/sa/b", "invalid character"},
		{"spiffe://user@cluster.local/ns/a/sa/b", "invalid character"},
		{"spiffe://cluster.local:8080/ns/a/sa/b", "invalid character"},
		{"spiffe://cluster.local/ns/ä/sa/b", "invalid character"},
		{"spiffe://cluster.local/ns/a/sa/b\n", "invalid character"},
	}
	for _, tc := range bad {
		got, err := ParseIdentity(tc.in)
		if err == nil {
			t.Errorf("ParseIdentity(%q) = %+v, want error", tc.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("ParseIdentity(%q) error %q, want it to contain %q", tc.in, err, tc.errPart)
		}
		if got != (Identity{}) {
			t.Errorf("ParseIdentity(%q) returned non-zero identity %+v with error", tc.in, got)
		}
	}
}

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/default/sa/default",
		"spiffe://td/ns/a/sa/b",
		"spiffe://cluster.local/ns/a/sa/b/c",
		"spiffe:///ns//sa/",
		"http://x/ns/a/sa/b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("ParseIdentity(%q).String() = %q", s, id.String())
		}
		again, err := ParseIdentity(id.String())
		if err != nil || again != id {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		if err := id.validate(); err != nil {
			t.Fatalf("parsed identity %+v does not validate: %v", id, err)
		}
	})
}
