package state

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// EnvLockStats names a file to which every lock released appends one line,
// "PROGRAM LOCK WAIT_NS HOLD_NS": how long its caller waited in line and how
// long it held the lock. Benchmarks set it (tools/bench); unset, nothing is
// measured or written.
const EnvLockStats = "BROUTER_LOCK_STATS"

var lockStats = os.Getenv(EnvLockStats)

// noteLock appends the line for one lock, in one write(2) to a file opened
// O_APPEND, so lines of concurrent processes never interleave.
func noteLock(label string, asked, got time.Time) {
	if lockStats == "" {
		return
	}
	line := fmt.Sprintf("%s %s %d %d\n", filepath.Base(os.Args[0]), label, got.Sub(asked).Nanoseconds(), time.Since(got).Nanoseconds())
	f, err := os.OpenFile(lockStats, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return
	}
	f.WriteString(line)
	f.Close()
}
