package testbed

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A run's state directory (<StateRoot>/<run ID>/) holds:
//
//	owner           "<pid> <start time>" of the process that owns the run
//	workdir         the temporary work directory to remove (absent when Config.Dir was given)
//	proxy-<node>    "<pid> <start time>" of each proxy process
//
// Names of the run's network namespaces start with "<run ID>-".
const (
	ownerFile   = "owner"
	workdirFile = "workdir"
	proxyPrefix = "proxy-"
)

var runIDRE = regexp.MustCompile(`^ztb[0-9a-f]{4}$`)

// newRunID returns a fresh run ID, e.g. "ztb1a2b", short enough to prefix interface names.
func newRunID() (string, error) {
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate run ID: %w", err)
	}
	return "ztb" + hex.EncodeToString(b[:]), nil
}

// procIdent identifies a process across PID reuse by its start time (clock ticks since boot).
type procIdent struct {
	pid   int
	start uint64
}

// identify returns the identity of a running process.
func identify(pid int) (procIdent, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procIdent{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	// Fields after the command name (which may contain spaces) start at state (field 3);
	// starttime is field 22.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procIdent{}, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return procIdent{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procIdent{}, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return procIdent{pid: pid, start: start}, nil
}

func (p procIdent) String() string { return fmt.Sprintf("%d %d", p.pid, p.start) }

// alive reports whether the identified process still runs (and is not a zombie).
func (p procIdent) alive() bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.pid), "stat"))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
		if f := strings.Fields(string(b[i+1:])); len(f) > 0 && f[0] == "Z" {
			return false
		}
	}
	cur, err := identify(p.pid)
	return err == nil && cur == p
}

func writeIdent(path string, p procIdent) error {
	if err := os.WriteFile(path, []byte(p.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("record process %d: %w", p.pid, err)
	}
	return nil
}

func readIdent(path string) (procIdent, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return procIdent{}, err
	}
	var p procIdent
	if _, err := fmt.Sscanf(string(b), "%d %d", &p.pid, &p.start); err != nil {
		return procIdent{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return p, nil
}

// Cleanup removes the leftovers of every run under stateRoot ("" = DefaultStateRoot) whose owning
// process is gone: it kills the run's proxies, deletes its network namespaces, removes its temporary
// work directory and its state directory. Runs whose owner is alive are left alone. It returns the
// IDs of the runs it removed; the error joins every failure.
func Cleanup(ctx context.Context, stateRoot string, logger *slog.Logger) ([]string, error) {
	stateRoot = cmp.Or(stateRoot, DefaultStateRoot)
	logger = cmp.Or(logger, slog.Default())
	ents, err := os.ReadDir(stateRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cleanup: read %s: %w", stateRoot, err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !runIDRE.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(stateRoot, e.Name())
		owner, err := readIdent(filepath.Join(dir, ownerFile))
		switch {
		case err == nil && owner.alive():
			continue
		case err != nil && recentlyModified(dir):
			continue // being created right now
		}
		logger.Info("removing leftovers of a dead run", "run", e.Name())
		if err := removeRun(ctx, e.Name(), dir, ipRunner{log: logger}); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

func recentlyModified(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && time.Since(fi.ModTime()) < time.Minute
}

// removeRun kills the recorded proxies of a dead run, deletes its namespaces (pods first) and
// removes its directories.
func removeRun(ctx context.Context, runID, dir string, ip ipRunner) error {
	var errs []error
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), proxyPrefix) {
			continue
		}
		p, err := readIdent(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if err := killIdent(p); err != nil {
			errs = append(errs, fmt.Errorf("run %s: %w", runID, err))
		}
	}
	names, err := listNetNS(runID + "-")
	if err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, delRunNetNS(ctx, ip, runID, names)...)
	if b, err := os.ReadFile(filepath.Join(dir, workdirFile)); err == nil {
		if wd := strings.TrimSpace(string(b)); wd != "" && filepath.IsAbs(wd) && wd != "/" {
			if err := os.RemoveAll(wd); err != nil {
				errs = append(errs, fmt.Errorf("run %s: remove work dir: %w", runID, err))
			}
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("run %s: remove state dir: %w", runID, err))
		}
	}
	return errors.Join(errs...)
}

// delRunNetNS deletes the network namespaces names of run runID, pods before nodes: pod
// namespaces ("<id>-n1p2") have longer names than node ones ("<id>-n1"). It sorts names.
func delRunNetNS(ctx context.Context, ip ipRunner, runID string, names []string) []error {
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	var errs []error
	for _, n := range names {
		if err := ip.delNetNS(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("run %s: %w", runID, err))
		}
	}
	return errs
}

// killIdent SIGKILLs the identified process if it still runs and waits briefly for it to go.
func killIdent(p procIdent) error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process %d: %w", p.pid, err)
	}
	for range 100 {
		if !p.alive() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("kill process %d: still running", p.pid)
}

// SweepUnrecorded removes the network namespaces of runs that Cleanup cannot see because their
// state directory is gone (a test killed by a timeout, whose state root was a temporary
// directory): every namespace named like a run's ("ztb<id>-…") whose run has no state directory
// under stateRoot, no process inside any of its namespaces, and namespaces older than a minute.
// A run started without proxies elsewhere looks the same, so this is for `testbed down -all`,
// not for automatic use. It returns the run IDs it removed.
func SweepUnrecorded(ctx context.Context, stateRoot string, logger *slog.Logger) ([]string, error) {
	return sweepUnrecorded(ctx, stateRoot, logger, time.Minute)
}

func sweepUnrecorded(ctx context.Context, stateRoot string, logger *slog.Logger, minAge time.Duration) ([]string, error) {
	stateRoot = cmp.Or(stateRoot, DefaultStateRoot)
	logger = cmp.Or(logger, slog.Default())
	names, err := listNetNS("ztb")
	if err != nil {
		return nil, err
	}
	runs := map[string][]string{}
	for _, n := range names {
		id, _, ok := strings.Cut(n, "-")
		if ok && runIDRE.MatchString(id) {
			runs[id] = append(runs[id], n)
		}
	}
	ip := ipRunner{log: logger}
	var removed []string
	var errs []error
	for id, nss := range runs {
		if _, err := os.Stat(filepath.Join(stateRoot, id)); err == nil {
			continue // recorded: Cleanup's business
		}
		if inUse(ctx, nss, minAge) {
			continue
		}
		logger.Info("removing namespaces of an unrecorded run", "run", id, "namespaces", len(nss))
		runErrs := delRunNetNS(ctx, ip, id, nss)
		if len(runErrs) == 0 {
			removed = append(removed, id)
		}
		errs = append(errs, runErrs...)
	}
	slices.Sort(removed)
	return removed, errors.Join(errs...)
}

// inUse reports whether a process runs inside any of the namespaces, or one of them was created
// less than minAge ago (a run being built).
func inUse(ctx context.Context, nss []string, minAge time.Duration) bool {
	for _, n := range nss {
		if fi, err := os.Stat(netnsPath(n)); err != nil || time.Since(fi.ModTime()) < minAge {
			return true
		}
		out, err := exec.CommandContext(ctx, "ip", "netns", "pids", n).Output()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			return true // cannot tell, or busy: keep it
		}
	}
	return false
}
