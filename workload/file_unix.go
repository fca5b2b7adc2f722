//go:build unix

package workload

import (
	"io/fs"
	"os"
	"syscall"
)

// openFlags open a config file without blocking if the path is a FIFO; the type check
// that follows refuses it.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK

// fileID returns the device and inode of the file fi describes.
func fileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // the field types differ between platforms
	}
	return 0, 0
}
