package workload

import (
	"errors"
	"strings"
	"testing"
)

// wl is a valid workload entry (uid u1) followed by extra YAML lines for it.
func wl(extra string) string {
	return "workloads:\n- uid: u1\n  name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n" + extra
}

// svc is a valid service entry (ns/a.example.com) followed by extra YAML lines for it.
func svc(extra string) string {
	return "services:\n- name: a\n  namespace: ns\n  hostname: a.example.com\n" + extra
}

// pol is a valid policy entry (ns/p) followed by extra YAML lines for it.
func pol(extra string) string {
	return "policies:\n- name: p\n  namespace: ns\n  scope: Namespace\n  action: Allow\n" + extra
}

const (
	wlEntry  = `workloads[0] (uid "u1")`
	svcEntry = `services[0] (service "ns/a.example.com")`
	polEntry = `policies[0] (policy "ns/p")`
)

func TestParseLocalConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml   string
		entry, field string
		msg          string // substring of the underlying error
	}{
		// Document level.
		{"yaml syntax", "workloads: [", "", "", "parse YAML"},
		{"unknown top-level field", "workload: []", "", "workload", "unknown field"},
		{"top level is a list", "- uid: a", "", "", "want a mapping"},
		{"two documents", "workloads: []\n---\nservices: []\n", "", "", "more than one YAML document"},
		{"workloads not a list", "workloads: {a: 1}", "", "workloads", "want a list"},

		// Workloads.
		{"the brief's example", "workloads:\n" +
			"- {uid: w0, name: a, namespace: ns, workloadIps: []}\n- {uid: w1, name: a, namespace: ns, workloadIps: []}\n" +
			"- uid: c1//v1/Pod/ns/a\n  name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\", \"10.0.0.300\"]\n",
			`workloads[2] (uid "c1//v1/Pod/ns/a")`, "workloadIps[1]", `invalid IP "10.0.0.300"`},
		{"field set twice", wl("  uid: u2\n"), wlEntry, "uid", "field set twice"},
		{"field set twice, once null", wl("  node: a\n  node:\n"), wlEntry, "node", "field set twice"},
		{"service listed twice", wl("  services: {ns/a: {80: 1}, \"ns/a\": {}}\n"), wlEntry, `services["ns/a"]`, "listed twice"},
		{"port listed twice", wl("  services: {ns/a: {80: 1, \"80\": 2}}\n"), wlEntry, `services["ns/a"][80]`, "duplicate port"},
		{"unknown workload field", wl("  workloadIPs: []\n"), wlEntry, "workloadIPs", `did you mean "workloadIps"`},
		{"IP with zone", wl("  waypoint: {destination: \"/fe80::1%eth0\", hboneMtlsPort: 15008}\n"), wlEntry, "waypoint.destination", "invalid gateway destination"},
		{"missing uid", "workloads:\n- {name: a, namespace: ns, workloadIps: []}\n", "workloads[0]", "uid", "missing required field"},
		{"missing name", "workloads:\n- {uid: u1, namespace: ns, workloadIps: []}\n", wlEntry, "name", "missing required field"},
		{"missing namespace", "workloads:\n- {uid: u1, name: a, workloadIps: []}\n", wlEntry, "namespace", "missing required field"},
		{"missing workloadIps", "workloads:\n- {uid: u1, name: a, namespace: ns}\n", wlEntry, "workloadIps", "missing required field"},
		{"workloadIps not a list", "workloads:\n- {uid: u1, name: a, namespace: ns, workloadIps: 10.0.0.1}\n", wlEntry, "workloadIps", "want a list"},
		{"bad protocol", wl("  protocol: UDP\n"), wlEntry, "protocol", `invalid protocol "UDP"`},
		{"bad status", wl("  status: Dead\n"), wlEntry, "status", `invalid status "Dead"`},
		{"bad network mode", wl("  networkMode: host\n"), wlEntry, "networkMode", `invalid network mode "host"`},
		{"negative capacity", wl("  capacity: -1\n"), wlEntry, "capacity", "out of range"},
		{"capacity not a number", wl("  capacity: lots\n"), wlEntry, "capacity", "want an integer"},
		{"bool not a bool", wl("  nativeTunnel: maybe\n"), wlEntry, "nativeTunnel", "want true or false"},
		{"string is a list", wl("  node: [a]\n"), wlEntry, "node", "want a string"},
		{"unknown locality field", wl("  locality: {region: r, city: c}\n"), wlEntry, "locality.city", "unknown field"},
		{"gateway without port", wl("  waypoint: {destination: \"/10.0.0.9\"}\n"), wlEntry, "waypoint.hboneMtlsPort", "missing required field"},
		{"gateway port out of range", wl("  networkGateway: {destination: \"/10.0.0.9\", hboneMtlsPort: 70000}\n"), wlEntry, "networkGateway.hboneMtlsPort", "out of range"},
		{"gateway bad destination", wl("  waypoint: {destination: nothing, hboneMtlsPort: 15008}\n"), wlEntry, "waypoint.destination", "invalid gateway destination"},
		{"app tunnel bad protocol", wl("  applicationTunnel: {protocol: SOCKS}\n"), wlEntry, "applicationTunnel.protocol", "invalid application tunnel protocol"},
		{"app tunnel without protocol", wl("  applicationTunnel: {port: 1}\n"), wlEntry, "applicationTunnel.protocol", "missing required field"},
		{"services key without slash", wl("  services: {a.example.com: {80: 8080}}\n"), wlEntry, `services["a.example.com"]`, "invalid namespaced hostname"},
		{"service port out of range", wl("  services: {ns/a: {70000: 8080}}\n"), wlEntry, `services["ns/a"]`, "70000 out of range"},
		{"service port zero", wl("  services: {ns/a: {0: 8080}}\n"), wlEntry, `services["ns/a"]`, "0 out of range"},
		{"target port out of range", wl("  services: {ns/a: {80: 65536}}\n"), wlEntry, `services["ns/a"][80]`, "65536 out of range"},
		{"duplicate uid", "workloads:\n- {uid: u1, name: a, namespace: ns, workloadIps: []}\n- {uid: u1, name: b, namespace: ns, workloadIps: []}\n",
			`workloads[1] (uid "u1")`, "uid", "duplicate uid"},

		// Services.
		{"missing hostname", "services:\n- {name: a, namespace: ns}\n", "services[0]", "hostname", "missing required field"},
		{"missing service name", "services:\n- {namespace: ns, hostname: h}\n", `services[0] (service "ns/h")`, "name", "missing required field"},
		{"VIP without network", svc("  vips: [\"10.0.0.1\"]\n"), svcEntry, "vips[0]", "want network/IP"},
		{"bad VIP", svc("  vips: [\"/10.0.0.300\"]\n"), svcEntry, "vips[0]", `invalid IP "10.0.0.300"`},
		{"bad CIDR VIP", svc("  cidrVips: [{network: \"\", cidr: 10.0.0.0/40}]\n"), svcEntry, "cidrVips[0].cidr", "invalid CIDR"},
		{"bad ports", svc("  ports: {http: 80}\n"), svcEntry, "ports", "want an integer"},
		{"bad mode", svc("  loadBalancer: {mode: RoundRobin}\n"), svcEntry, "loadBalancer.mode", `invalid load balancer mode "RoundRobin"`},
		{"bad health policy", svc("  loadBalancer: {healthPolicy: Some}\n"), svcEntry, "loadBalancer.healthPolicy", "invalid health policy"},
		{"bad routing preference", svc("  loadBalancer: {routingPreferences: [Region, Planet]}\n"), svcEntry, "loadBalancer.routingPreferences[1]", `invalid routing preference "Planet"`},
		{"bad ip families", svc("  ipFamilies: IPv5\n"), svcEntry, "ipFamilies", "invalid IP families"},
		{"bad visibility", svc("  visibility: Private\n"), svcEntry, "visibility", "invalid visibility"},
		{"endpoint uid mismatch", svc("  endpoints: {u1: {workloadUid: u2}}\n"), svcEntry, `endpoints["u1"].workloadUid`, "does not match"},
		{"endpoint listed twice", svc("  endpoints: {u1: {}, \"u1\": {}}\n"), svcEntry, `endpoints["u1"]`, "listed twice"},
		{"endpoint bad status", svc("  endpoints: {u1: {status: Meh}}\n"), svcEntry, `endpoints["u1"].status`, "invalid status"},
		{"endpoint unknown field", svc("  endpoints: {u1: {ports: {}}}\n"), svcEntry, `endpoints["u1"].ports`, "unknown field"},
		{"weighted waypoint without weight", svc("  weightedWaypoints: [{destination: {destination: \"/1.1.1.1\", hboneMtlsPort: 15008}}]\n"), svcEntry, "weightedWaypoints[0].weight", "missing required field"},
		{"duplicate service", svc("- {name: b, namespace: ns, hostname: a.example.com}\n"), `services[1] (service "ns/a.example.com")`, "hostname", "duplicate hostname"},

		// Policies.
		{"missing policy name", "policies:\n- {namespace: ns, scope: Global, action: Allow}\n", "policies[0]", "name", "missing required field"},
		{"missing policy namespace", "policies:\n- {name: p, scope: Global, action: Allow}\n", "policies[0]", "namespace", "missing required field"},
		{"missing scope", "policies:\n- {name: p, namespace: ns, action: Allow}\n", polEntry, "scope", "missing required field"},
		{"bad scope", "policies:\n- {name: p, namespace: ns, scope: Cluster, action: Allow}\n", polEntry, "scope", `invalid policy scope "Cluster"`},
		{"bad action", "policies:\n- {name: p, namespace: ns, scope: Global, action: Audit}\n", polEntry, "action", `invalid policy action "Audit"`},
		{"rules not nested", pol("  rules: [{destinationPorts: [80]}]\n"), polEntry, "rules[0]", "want a list"},
		{"bad CIDR", pol("  rules: [[[{sourceIps: [10.0.0.0/33]}]]]\n"), polEntry, "rules[0][0][0].sourceIps[0]", `invalid CIDR "10.0.0.0/33"`},
		{"bad IP in CIDR list", pol("  rules: [[[{notDestinationIps: [nope]}]]]\n"), polEntry, "rules[0][0][0].notDestinationIps[0]", "invalid CIDR"},
		{"port zero", pol("  rules: [[[{notDestinationPorts: [0]}]]]\n"), polEntry, "rules[0][0][0].notDestinationPorts[0]", "out of range"},
		{"unknown match field", pol("  rules: [[[{sourceIPs: []}]]]\n"), polEntry, "rules[0][0][0].sourceIPs", `did you mean "sourceIps"`},
		{"unknown string match", pol("  rules: [[[{principals: [{Regex: a}]}]]]\n"), polEntry, "rules[0][0][0].principals[0].Regex", "unknown string match"},
		{"two string matches", pol("  rules: [[[{namespaces: [{Exact: a, Prefix: b}]}]]]\n"), polEntry, "rules[0][0][0].namespaces[0]", "exactly one"},
		{"presence with value", pol("  rules: [[[{namespaces: [{Presence: x}]}]]]\n"), polEntry, "rules[0][0][0].namespaces[0].Presence", "want an empty value"},
		{"service account missing", pol("  rules: [[[{serviceAccounts: [{namespace: ns}]}]]]\n"), polEntry, "rules[0][0][0].serviceAccounts[0].serviceAccount", "missing required field"},
		{"duplicate policy", pol("- {name: p, namespace: ns, scope: Global, action: Deny}\n"), `policies[1] (policy "ns/p")`, "name", "duplicate name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseLocalConfig("/etc/zt/config.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("ParseLocalConfig succeeded (%d workloads), want an error", len(cfg.Workloads))
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *ConfigError", err, err)
			}
			if ce.Source != "/etc/zt/config.yaml" || ce.Entry != tt.entry || ce.Field != tt.field {
				t.Errorf("error at (source %q, entry %q, field %q), want (%q, %q, %q); error: %v",
					ce.Source, ce.Entry, ce.Field, "/etc/zt/config.yaml", tt.entry, tt.field, err)
			}
			msg := err.Error()
			for _, want := range []string{"/etc/zt/config.yaml: ", tt.entry, tt.field, tt.msg} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if ce.Line == 0 && tt.name != "two documents" && tt.name != "yaml syntax" {
				t.Errorf("error %q has no line number", msg)
			}
		})
	}
}

func TestConfigErrorFormat(t *testing.T) {
	_, err := ParseLocalConfig("/etc/zt/config.yaml", []byte("workloads:\n"+
		"- {uid: w0, name: a, namespace: ns, workloadIps: []}\n"+
		"- {uid: w1, name: a, namespace: ns, workloadIps: []}\n"+
		"- uid: c1//v1/Pod/ns/a\n  name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.300\"]\n"))
	want := `/etc/zt/config.yaml: workloads[2] (uid "c1//v1/Pod/ns/a"): workloadIps[0]: invalid IP "10.0.0.300" (line 7)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
}
