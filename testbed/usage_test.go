package testbed

import "testing"

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tztunnel\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n"
	got, err := ParseVmRSS([]byte(status))
	if err != nil || got != 12345 {
		t.Errorf("ParseVmRSS = %d, %v; want 12345", got, err)
	}
	for _, bad := range []string{"Name: x\n", "VmRSS: 12 MB\n", "VmRSS: x kB\n"} {
		if _, err := ParseVmRSS([]byte(bad)); err == nil {
			t.Errorf("ParseVmRSS(%q): no error", bad)
		}
	}
}
