package redirect

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// OpenFileLimit returns the process's limit on open file descriptors (RLIMIT_NOFILE, the soft
// limit: Go raises it to the hard limit at start-up). The proxy sizes its connection caps from it,
// so that a flood of connections cannot take the descriptors its established connections, its
// control plane and its listeners need.
func OpenFileLimit() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	return rl.Cur, nil
}
