package state

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// AcquireKey takes the lock of key in lock file name, exclusively, waiting
// at most timeout: for locks of names that come and go (one per port),
// where a queue of their own (Acquire) would leave files behind. The lock
// is one byte of the file, at an offset hashed from key, held with an open
// file description lock (fcntl F_OFD_SETLK): every key shares the file, no
// file is made or removed per key, and a holder that dies releases it. Two
// keys whose hashes collide (one chance in 2^62) share a lock. It is not
// FIFO: meant for locks that callers rarely wait for (two operations on one
// port at once). In lock statistics the lock is called by the file's name.
func (s *Store) AcquireKey(name, key string, timeout time.Duration) (*Lock, error) {
	p := s.path(name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, os.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: int64(h.Sum64() >> 2), Len: 1}
	asked := time.Now()
	deadline := asked.Add(timeout)
	for wait := 20 * time.Microsecond; ; {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("state: lock %s (%s): %w", p, key, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, timeoutError(p+" ("+key+")", timeout)
		}
		time.Sleep(wait)
		if wait < 2*time.Millisecond {
			wait *= 2
		}
	}
	label := strings.TrimSuffix(filepath.Base(p), ".lock")
	return &Lock{ticket: f, label: label, asked: asked, got: time.Now()}, nil
}

// sameFile reports whether path names the file open as f.
func sameFile(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}
