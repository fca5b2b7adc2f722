package testbed

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

func TestMergeLocalConfig(t *testing.T) {
	base := []byte(`workloads:
  - name: a
    services:
      default/a.default.svc.cluster.local: {80: 8080}
services:
  - name: a
    ports: {80: 8080}
`)
	extra := []byte(`workloads:
  - name: b
  - name: c
services:
  - name: s
policies:
  - name: p
`)
	out, err := mergeLocalConfig(base, extra)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Workloads []struct {
			Name     string                       `yaml:"name"`
			Services map[string]map[uint16]uint16 `yaml:"services"`
		} `yaml:"workloads"`
		Services []struct {
			Name  string            `yaml:"name"`
			Ports map[uint16]uint16 `yaml:"ports"`
		} `yaml:"services"`
		Policies []struct {
			Name string `yaml:"name"`
		} `yaml:"policies"`
	}
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("merged config does not parse: %v\n%s", err, out)
	}
	var names []string
	for _, w := range got.Workloads {
		names = append(names, w.Name)
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, names); diff != "" {
		t.Errorf("workloads (-want +got):\n%s", diff)
	}
	if got.Workloads[0].Services["default/a.default.svc.cluster.local"][80] != 8080 {
		t.Errorf("base workload's services map lost: %s", out)
	}
	if len(got.Services) != 2 || got.Services[0].Ports[80] != 8080 || got.Services[1].Name != "s" {
		t.Errorf("services = %+v", got.Services)
	}
	if len(got.Policies) != 1 || got.Policies[0].Name != "p" {
		t.Errorf("policies = %+v", got.Policies)
	}
}

func TestMergeLocalConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, extra, want string }{
		{"unknown key", "nodes: []\n", `top-level key "nodes"`},
		{"not a list", "workloads: {a: 1}\n", "want a list"},
		{"bad yaml", "workloads: [\n", "parse extra config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mergeLocalConfig([]byte("workloads: []\n"), []byte(tc.extra))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
