// Package state keeps the small records that must outlive one invocation
// (who created a bridge, what a port was given) and the locks that serialise
// invocations acting on the same network.
//
// Records are JSON files written atomically (temp file, fsync, rename), so a
// reader sees either the old or the new record, never a torn one, even if the
// writer is killed. Locks (lock.go) are fair queues of flock(2)ed tickets
// with a deadline: a hotplug script that cannot get the lock in time fails
// with a clear error instead of hanging until Xen kills it.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Store is a directory of records.
type Store struct {
	Dir string
	// Volatile: the records describe kernel state that a reboot or a kernel
	// crash wipes anyway (run_dir), so writes are atomic (temp file and
	// rename, safe against a killed process) but not synced to disk: a
	// record that did not survive a crash describes nothing that did.
	Volatile bool
}

// New returns a store rooted at dir (created on first write) whose writes
// are synced to disk.
func New(dir string) *Store { return &Store{Dir: dir} }

// NewVolatile returns a store for run-time records (see Volatile).
func NewVolatile(dir string) *Store { return &Store{Dir: dir, Volatile: true} }

func (s *Store) path(name string) string { return filepath.Join(s.Dir, name) }

// Read decodes record name into v. It returns false (and no error) when the
// record does not exist.
func (s *Store) Read(name string, v any) (bool, error) {
	data, err := os.ReadFile(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("state: record %s is corrupt (%v); remove it if the network is down", s.path(name), err)
	}
	return true, nil
}

// tmpPath is the one temp file a record is written through. It is fixed, so
// a writer killed before its rename leaves a file that Remove and the next
// Write clean up. Writers of one record take turns on it (see Write).
func tmpPath(dst string) string {
	return filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
}

// Write stores v as record name atomically. Concurrent writers of one
// record (processes that share a record, such as a firewall backend's note
// that a network's records are complete) take turns on its temp file: each
// flocks it for its write and rename, and starts again when the file it
// locked was renamed meanwhile by the writer before it.
func (s *Store) Write(name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("state: encode %s: %w", name, err)
	}
	dst := s.path(name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	for {
		tmp, err := lockedTemp(tmpPath(dst))
		if err != nil {
			return err
		}
		if tmp == nil {
			continue // renamed by the writer before us
		}
		err = s.writeTemp(tmp, dst, append(data, '\n'))
		tmp.Close()
		return err
	}
}

// lockedTemp opens and flocks the temp file at path; nil when the file it
// locked is no longer the one at path.
func lockedTemp(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("state: lock %s: %w", path, err)
	}
	if !sameFile(f, path) {
		f.Close()
		return nil, nil
	}
	return f, nil
}

// writeTemp fills the locked temp file and renames it to dst.
func (s *Store) writeTemp(tmp *os.File, dst string, data []byte) error {
	if err := tmp.Truncate(0); err != nil {
		return fmt.Errorf("state: write %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("state: write %s: %w", tmp.Name(), err)
	}
	if !s.Volatile {
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("state: sync %s: %w", tmp.Name(), err)
		}
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// Remove deletes record name (and the temp file of a write that died
// before its rename); a missing record is not an error.
func (s *Store) Remove(name string) error {
	for _, p := range []string{tmpPath(s.path(name)), s.path(name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("state: %w", err)
		}
	}
	return nil
}

// List returns the names of the records in subdirectory sub ("" for the top),
// without temp files.
func (s *Store) List(sub string) ([]string, error) {
	return ListDir(s.path(sub), Regular)
}

// Regular is a ListDir filter that keeps regular files.
func Regular(e fs.DirEntry) bool { return e.Type().IsRegular() }

// ListDir returns the names of dir's entries that keep accepts (nil: all),
// leaving out hidden ones (temp files, dot-prefixed); a missing dir has none.
func ListDir(dir string, keep func(fs.DirEntry) bool) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") && (keep == nil || keep(e)) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
