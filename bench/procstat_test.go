package bench

import (
	"os"
	"strings"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// Field 14 (utime) = 250, field 15 (stime) = 50; the command name holds ") (" and spaces.
	line := "4242 (we ird) (cmd) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 1000000 500 18446744073709551615\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got != 300 {
		t.Errorf("parseStatCPU = %d, want 300", got)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q): no error", bad)
		}
	}
}

// TestOwnProcess reads this test process's figures from /proc.
func TestOwnProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	pid := os.Getpid()
	// Burn a little CPU so the figure is positive.
	x := 0
	for i := range 50_000_000 {
		x += i % 7
	}
	_ = x
	cpu, err := cpuSeconds(pid)
	if err != nil || cpu <= 0 {
		t.Errorf("cpuSeconds(self) = %v, %v; want > 0", cpu, err)
	}
	rss, err := rssKiB(pid)
	if err != nil || rss < 1024 {
		t.Errorf("rssKiB(self) = %v, %v; want at least 1 MiB", rss, err)
	}
	if _, err := rssKiB(1 << 30); err == nil || !strings.Contains(err.Error(), "read rss") {
		t.Errorf("rssKiB(no such pid) = %v", err)
	}
}
