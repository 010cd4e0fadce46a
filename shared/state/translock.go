package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// AcquireTransient takes lock name exclusively, waiting at most timeout: a
// lock whose file exists only while someone holds or waits for it, for
// names that come and go (one per port), where a queue (Acquire) would
// leave its files behind. It is not FIFO: meant for locks that callers
// rarely wait for (two operations on one port at once).
//
// The holder flocks the file; Release unlinks it, then unlocks. A waiter
// that gets the flock checks that the name still leads to the file it
// holds, and starts again when it does not (the holder before it unlinked
// it), so two callers never hold one name at once. In lock statistics the
// lock is called by its directory's name (locks/port/NAME.lock: "port").
func (s *Store) AcquireTransient(name string, timeout time.Duration) (*Lock, error) {
	p := s.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	asked := time.Now()
	deadline := asked.Add(timeout)
	wait := 20 * time.Microsecond
	for {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("state: lock: %w", err)
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err == nil || !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
				break
			}
			if time.Now().After(deadline) {
				f.Close()
				return nil, timeoutError(p, timeout)
			}
			time.Sleep(wait)
			if wait < 2*time.Millisecond {
				wait *= 2
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("state: lock %s: %w", p, err)
		}
		if sameFile(f, p) {
			return &Lock{ticket: f, path: p, label: filepath.Base(filepath.Dir(p)), asked: asked, got: time.Now()}, nil
		}
		f.Close() // unlinked by the holder before us: take the new file
	}
}

// sameFile reports whether path names the file open as f.
func sameFile(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}
