package workload

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// readConfigFile reads the regular file at path (following symlinks), which must hold at most
// maxBytes bytes, and returns its content and the stat of the file it read. The limit holds
// for the bytes actually read, whatever the stat said before: a file growing while read is
// cut off at maxBytes+1 and refused.
func readConfigFile(path string, maxBytes int64) ([]byte, fs.FileInfo, error) {
	file, fi, err := openRegular(path)
	if err != nil {
		return nil, nil, err
	}
	defer file.Close()
	if fi.Size() > maxBytes {
		return nil, nil, tooLarge(path, maxBytes)
	}
	// Room for the whole file and one more byte, so that reaching the end needs no growth.
	data := make([]byte, 0, fi.Size()+1)
	r := io.LimitReader(file, maxBytes+1)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)] // let append grow it
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	if int64(len(data)) > maxBytes {
		return nil, nil, tooLarge(path, maxBytes)
	}
	return data, fi, nil
}

// openRegular opens path for reading and returns it with its stat, or an error if it is not a
// regular file. The open does not block on a FIFO (see openFlags) and the type is checked on
// the opened file, so a swap of the path between a stat and the open cannot slip through.
func openRegular(path string) (*os.File, fs.FileInfo, error) {
	file, err := os.OpenFile(path, openFlags, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := file.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = notRegular(path, fi)
	}
	if err != nil {
		file.Close()
		return nil, nil, err
	}
	return file, fi, nil
}

// notRegular is the error for a config path that is a directory, a device, a FIFO or a socket.
func notRegular(path string, fi fs.FileInfo) error {
	return fmt.Errorf("%s: not a regular file (mode %s)", path, fi.Mode().Type())
}

// tooLarge is the error for a config file over the size limit.
func tooLarge(path string, maxBytes int64) error {
	return fmt.Errorf("%s: file is larger than the limit of %d bytes; raise LOCAL_XDS_MAX_BYTES to load it", path, maxBytes)
}
