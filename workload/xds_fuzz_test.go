package workload

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// FuzzConvertAddress checks that any decodable Address converts without panicking and that
// whatever converts is accepted by NewSnapshot (the converter validates everything the
// snapshot needs, so a good resource never fails a whole push).
func FuzzConvertAddress(f *testing.F) {
	for _, a := range []*workloadapi.Address{
		{Type: &workloadapi.Address_Workload{Workload: fullWorkloadProto()}},
		{Type: &workloadapi.Address_Workload{Workload: pbWorkload("u1", "ns", "10.0.0.1", "ns/h")}},
		{Type: &workloadapi.Address_Service{Service: pbService("ns", "h", "10.96.0.1")}},
	} {
		b, err := proto.Marshal(a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a workloadapi.Address
		if proto.Unmarshal(data, &a) != nil {
			return
		}
		w, s, err := convertAddress(&a, newInterner())
		if err != nil {
			return
		}
		var ws []*Workload
		var ss []*Service
		if w != nil {
			ws = append(ws, w)
		}
		if s != nil {
			ss = append(ss, s)
		}
		if _, err := NewSnapshot(ws, ss, nil); err != nil {
			t.Fatalf("converted address rejected by NewSnapshot: %v", err)
		}
	})
}

// FuzzConvertAuthorization is FuzzConvertAddress for Authorization resources.
func FuzzConvertAuthorization(f *testing.F) {
	b, err := proto.Marshal(pbPolicy("ns", "p"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var x security.Authorization
		if proto.Unmarshal(data, &x) != nil {
			return
		}
		p, err := convertAuthorization(&x)
		if err != nil {
			return
		}
		if _, err := NewSnapshot(nil, nil, []*Policy{p}); err != nil {
			t.Fatalf("converted policy rejected by NewSnapshot: %v", err)
		}
	})
}
