package workload

import (
	"errors"
	"testing"
)

// A required key that is present but empty ("" or a bare tag, which YAML does not take for
// null) is refused where it is written, instead of passing the parser and failing the snapshot
// (found by FuzzParseLocalConfig: `hostname: !0`).
func TestParseLocalConfigEmptyKeys(t *testing.T) {
	tests := []struct {
		name, yaml, entry, field string
		line                     int
	}{
		{"empty uid", "workloads:\n- {uid: \"\", name: a, namespace: ns, workloadIps: []}\n", "workloads[0]", "uid", 2},
		{"tag-only uid", "workloads:\n- uid: !x\n  name: a\n  namespace: ns\n  workloadIps: []\n", "workloads[0]", "uid", 2},
		{"empty service hostname", "services:\n- name: a\n  namespace: ns\n  hostname: !0\n", "services[0]", "hostname", 4},
		{"empty service namespace", "services:\n- {name: a, namespace: \"\", hostname: h}\n", "services[0]", "namespace", 2},
		{"empty policy name", "policies:\n- name: ''\n  namespace: ns\n  scope: Namespace\n  action: Allow\n", "policies[0]", "name", 2},
		{"empty policy namespace", "policies:\n- name: p\n  namespace: !t\n  scope: Namespace\n  action: Allow\n", "policies[0]", "namespace", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLocalConfig("test.yaml", []byte(tc.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Entry != tc.entry || ce.Field != tc.field || ce.Line != tc.line || ce.Err.Error() != "empty value" {
				t.Errorf("error = %v; want %s: %s: empty value (line %d)", err, tc.entry, tc.field, tc.line)
			}
		})
	}
}
