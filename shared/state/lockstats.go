package state

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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

// LockStat is one line of an EnvLockStats file: a lock one program held.
type LockStat struct {
	Program, Lock string
	Wait, Hold    time.Duration
}

// ReadLockStats reads an EnvLockStats file (lines it cannot read are skipped).
func ReadLockStats(path string) ([]LockStat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("state: lock statistics: %w", err)
	}
	var out []LockStat
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			continue
		}
		w, err1 := strconv.ParseInt(f[2], 10, 64)
		h, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 == nil && err2 == nil {
			out = append(out, LockStat{Program: f[0], Lock: f[1], Wait: time.Duration(w), Hold: time.Duration(h)})
		}
	}
	return out, nil
}

// LockSummary is the wait and hold p50 and p99 of one program's one lock.
type LockSummary struct {
	Program, Lock    string
	N                int
	WaitP50, WaitP99 time.Duration
	HoldP50, HoldP99 time.Duration
}

// SummarizeLocks groups stats by program and lock, sorted.
func SummarizeLocks(stats []LockStat) []LockSummary {
	type key struct{ p, l string }
	waits, holds := map[key][]time.Duration{}, map[key][]time.Duration{}
	for _, s := range stats {
		k := key{s.Program, s.Lock}
		waits[k] = append(waits[k], s.Wait)
		holds[k] = append(holds[k], s.Hold)
	}
	var out []LockSummary
	for k, w := range waits {
		h := holds[k]
		out = append(out, LockSummary{Program: k.p, Lock: k.l, N: len(w),
			WaitP50: Quantile(w, 0.5), WaitP99: Quantile(w, 0.99), HoldP50: Quantile(h, 0.5), HoldP99: Quantile(h, 0.99)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Program != out[j].Program {
			return out[i].Program < out[j].Program
		}
		return out[i].Lock < out[j].Lock
	})
	return out
}

// String is the summary on one line.
func (s LockSummary) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("%-40s %9v %9v %9v %9v %5d", s.Program+" "+s.Lock, r(s.WaitP50), r(s.WaitP99), r(s.HoldP50), r(s.HoldP99), s.N)
}

// LockSummaryHeader heads a table of LockSummary lines.
const LockSummaryHeader = "lock (program, lock)                      wait p50  wait p99  hold p50  hold p99     n"

// Quantile is the q-quantile of ds (which it sorts); 0 for none.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(q*float64(len(ds)-1)+0.5)]
}
