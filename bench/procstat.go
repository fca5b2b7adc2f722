package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ztunnel-go/ztunnel/testbed"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It is 100 on every
// Linux architecture Go supports (the kernel converts to it for /proc whatever its HZ).
const clockTicks = 100

// cpuSeconds returns the user+system CPU time of process pid, all threads, from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	ticks, err := parseStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("read cpu time of %d: %w", pid, err)
	}
	return float64(ticks) / clockTicks, nil
}

// parseStatCPU returns utime+stime (fields 14 and 15) of a /proc/<pid>/stat line. The command name
// (field 2) is in parentheses and may hold spaces and parentheses, so fields are counted from the
// last ')'.
func parseStatCPU(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	utime, err := strconv.ParseUint(f[14-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: utime %q: %w", f[14-3], err)
	}
	stime, err := strconv.ParseUint(f[15-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: stime %q: %w", f[15-3], err)
	}
	return utime + stime, nil
}

// rssKiB returns the resident set size of process pid (VmRSS in /proc/<pid>/status), in KiB.
func rssKiB(pid int) (float64, error) {
	kib, err := testbed.ReadRSS(pid)
	return float64(kib), err
}
