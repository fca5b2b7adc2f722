//go:build !unix

package workload

import (
	"io/fs"
	"os"
)

// openFlags open a config file for reading.
const openFlags = os.O_RDONLY

// fileID is not available here; size, mtime and the content hash still detect changes.
func fileID(fs.FileInfo) (dev, ino uint64) { return 0, 0 }
