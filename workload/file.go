package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// FileSource feeds a Store from a local config file (LOCAL_XDS_PATH) and reloads it when it
// changes. Changes are found by polling: every Interval the file is stat'ed (following
// symlinks) and, if its identity (device, inode), size or mtime changed, read and hashed;
// only new content is parsed. This catches in-place writes, atomic renames and the symlink
// swaps Kubernetes uses for ConfigMap volumes.
//
// A bad reload is logged with the full error and counted (ReloadFailures); the last good
// snapshot stays in the Store. The same bad content is reported once, not on every poll.
// Bad includes: not a regular file (a FIFO, a device such as /dev/zero), larger than
// MaxBytes, too costly to parse within the limits MaxBytes sets (see localconfig_limits.go),
// and, on reload only, no YAML document at all (empty, or only comments), which would
// otherwise silently drop every workload. A config that lists nothing explicitly
// ("workloads: []") is applied; if it drops every workload or service, that is logged at WARN.
//
// Load and Run must not be called concurrently with each other; Last and ReloadFailures may
// be called from any goroutine.
type FileSource struct {
	Path  string // required
	Store *Store // required; receives every good snapshot
	// Interval between polls. Zero means 1 s.
	Interval time.Duration
	// Logger for reloads and reload failures. Nil means slog.Default().
	Logger *slog.Logger
	// MaxBytes is the size limit of the file (LOCAL_XDS_MAX_BYTES); a larger file is an error.
	// Zero means DefaultLocalConfigMaxBytes. Parsing any content under it takes at most a few
	// times MaxBytes of memory.
	MaxBytes int64

	last     atomic.Pointer[LocalConfig] // last good config
	failures atomic.Uint64

	// Owned by the goroutine calling Load/Run.
	seen     fileStamp         // stat of the last file version read (good or bad)
	hash     [sha256.Size]byte // of the last content parsed (good or bad)
	hashLen  int64             // length of that content
	hasHash  bool              // hash is valid
	goodHash [sha256.Size]byte // of the content of last
	lastErr  string            // text of the last reported failure, to report each one once
}

// fileStamp identifies one version of a file without reading it.
type fileStamp struct {
	dev, ino uint64
	size     int64
	mtime    int64 // Unix nanoseconds
}

func stampOf(fi fs.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	s.dev, s.ino = fileID(fi)
	return s
}

func (f *FileSource) withDefaults() {
	if f.Interval <= 0 {
		f.Interval = time.Second
	}
	if f.Logger == nil {
		f.Logger = slog.Default()
	}
	if f.MaxBytes <= 0 {
		f.MaxBytes = DefaultLocalConfigMaxBytes
	}
}

// Load reads, parses and publishes the file once. An error means nothing was published; the
// caller should exit non-zero. A file with no YAML document (empty, or only comments) loads as
// an empty config, with a warning: the proxy then starts with no workloads until the file is
// written.
func (f *FileSource) Load() error {
	f.withDefaults()
	if f.Store == nil {
		return errors.New("load local config: FileSource.Store is nil")
	}
	data, fi, err := readConfigFile(f.Path, f.MaxBytes)
	if err != nil {
		return fmt.Errorf("load local config: %w", err)
	}
	f.remember(stampOf(fi))
	if err := f.apply(data, sha256.Sum256(data), false); err != nil {
		return fmt.Errorf("load local config: %w", err)
	}
	f.logLoaded()
	return nil
}

// Run polls the file until ctx is done, then returns nil. Call Load first; if it was not
// called, the first poll loads the file.
func (f *FileSource) Run(ctx context.Context) error {
	f.withDefaults()
	if f.Store == nil {
		return errors.New("watch local config: FileSource.Store is nil")
	}
	t := time.NewTicker(f.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f.poll()
		}
	}
}

// Last returns the last good config, or nil before the first successful load. Its Raw is
// nil: the source keeps only the parsed entries (what the admin dump's staticConfig shows),
// not a second copy of the file.
func (f *FileSource) Last() *LocalConfig { return f.last.Load() }

// ReloadFailures returns how many reloads failed: the file could not be read, parsed or
// indexed. A failure that persists across polls is counted once.
func (f *FileSource) ReloadFailures() uint64 { return f.failures.Load() }

// poll reloads the file if it changed.
func (f *FileSource) poll() {
	fi, err := os.Stat(f.Path)
	if err == nil && !fi.Mode().IsRegular() {
		err = notRegular(f.Path, fi)
	}
	if err != nil {
		f.seen = fileStamp{}
		f.reportFailure(fmt.Errorf("reload local config: %w", err))
		return
	}
	stamp := stampOf(fi)
	if stamp == f.seen {
		return
	}
	// A file of the size last parsed may only have been touched (or be re-checked in the racy
	// window, see remember): hash it first without holding all of it, which costs a 16 KiB
	// buffer instead of its size in garbage. A new size means new content: read it just once.
	if f.hasHash && stamp.size == f.hashLen {
		if sum, err := hashFile(f.Path, f.MaxBytes); err == nil && f.sameContent(sum) {
			f.remember(stamp)
			return
		}
	}
	data, fi, err := readConfigFile(f.Path, f.MaxBytes)
	if err != nil {
		f.reportFailure(fmt.Errorf("reload local config: %w", err))
		return
	}
	f.remember(stampOf(fi))
	sum := sha256.Sum256(data)
	if f.sameContent(sum) {
		return // touched after all (the stat was stale), or changed back since the hash
	}
	if err := f.apply(data, sum, true); err != nil {
		f.reportFailure(fmt.Errorf("reload local config: %w", err))
		return
	}
	f.lastErr = ""
	f.logLoaded()
}

// logLoaded logs the config now in force. The sha256 attribute (hex of the file content) lets
// tools that rewrite the file see when this process has applied their version.
func (f *FileSource) logLoaded() {
	cfg := f.last.Load()
	f.Logger.Info("local config loaded", "path", f.Path, "sha256", hex.EncodeToString(f.goodHash[:]),
		"workloads", len(cfg.Workloads), "services", len(cfg.Services), "policies", len(cfg.Policies),
		"destinationRules", len(cfg.DestinationRules), "virtualServices", len(cfg.VirtualServices))
}

// hashFile returns the sha256 of the file at path, read in small pieces; a file that is not
// regular or grew beyond maxBytes is an error.
func hashFile(path string, maxBytes int64) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	file, _, err := openRegular(path)
	if err != nil {
		return sum, err
	}
	defer file.Close()
	h := sha256.New()
	buf := make([]byte, 16<<10)
	// Hide File.WriteTo, which would ignore buf and allocate its own.
	n, err := io.CopyBuffer(h, struct{ io.Reader }{io.LimitReader(file, maxBytes+1)}, buf)
	if err != nil {
		return sum, err
	}
	if n > maxBytes {
		return sum, tooLarge(path, maxBytes)
	}
	h.Sum(sum[:0])
	return sum, nil
}

// racyWindow: a file modified this recently may change again without its stat changing
// (coarse mtime), so its stamp is not trusted and the next poll re-reads and re-hashes it.
const racyWindow = 2 * time.Second

func (f *FileSource) remember(stamp fileStamp) {
	f.seen = stamp
	if time.Since(time.Unix(0, stamp.mtime)) < racyWindow {
		f.seen = fileStamp{}
	}
}

// sameContent reports whether sum is the content applied or rejected last: then there is nothing
// to do (the file was touched, re-linked, or still has the same bad content). Back at the good
// content, a read failure reported meanwhile is over.
func (f *FileSource) sameContent(sum [sha256.Size]byte) bool {
	if !f.hasHash || sum != f.hash {
		return false
	}
	if sum == f.goodHash {
		f.lastErr = ""
	}
	return true
}

// apply parses data, whose sha256 is sum, and publishes it; reload says whether a config was
// loaded before. The hash is recorded either way, so the same bad content is not parsed again.
func (f *FileSource) apply(data []byte, sum [sha256.Size]byte, reload bool) error {
	f.hash, f.hashLen, f.hasHash = sum, int64(len(data)), true
	// Without Raw: the admin dump needs only the entries.
	cfg, noDoc, err := parseLocalConfig(f.Path, data, limitsFor(f.MaxBytes))
	if err != nil {
		return err
	}
	if noDoc && reload {
		return &ConfigError{Source: f.Path, Err: errors.New("no YAML document (the file is empty or only comments); " +
			"keeping the last good config: to remove every entry, write an empty config such as \"workloads: []\"")}
	}
	snap, err := cfg.Snapshot()
	if err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	prev := f.last.Load()
	f.goodHash = f.hash
	f.last.Store(cfg)
	f.Store.ReplaceAll(snap) // the file's traffic policy too: none if it has none
	switch {
	case noDoc:
		f.Logger.Warn("local config has no YAML document (empty or only comments): no workloads, services or policies",
			"path", f.Path)
	case prev != nil && (len(cfg.Workloads) == 0 && len(prev.Workloads) > 0 || len(cfg.Services) == 0 && len(prev.Services) > 0):
		f.Logger.Warn("local config reload lists no workloads or no services: applied, dropping the previous ones",
			"path", f.Path, "workloads_dropped", max(len(prev.Workloads)-len(cfg.Workloads), 0),
			"services_dropped", max(len(prev.Services)-len(cfg.Services), 0), "workloads", len(cfg.Workloads),
			"services", len(cfg.Services))
	}
	return nil
}

// reportFailure counts and logs a failed reload, unless it repeats the previous failure
// (a file that stays missing or bad is one failure, not one per poll).
func (f *FileSource) reportFailure(err error) {
	msg := err.Error()
	if msg == f.lastErr {
		return
	}
	f.lastErr = msg
	f.failures.Add(1)
	f.Logger.Error("local config reload failed; keeping the last good config", "path", f.Path, "error", err)
}
