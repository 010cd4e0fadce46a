// Package lockstats prints what brouter's programs write to
// BROUTER_LOCK_STATS (see state.EnvLockStats), for the benchmarks.
package lockstats

import (
	"fmt"
	"time"

	"github.com/brouter/brouter/shared/state"
)

// Print prints lock wait and hold p50/p99 per program and lock from the
// statistics file path.
func Print(path string) error {
	stats, err := state.ReadLockStats(path)
	if err != nil {
		return err
	}
	fmt.Println("  " + state.LockSummaryHeader)
	for _, s := range state.SummarizeLocks(stats) {
		fmt.Println("  " + s.String())
	}
	return nil
}

// Pct is the q-quantile of ds (which it sorts).
func Pct(ds []time.Duration, q float64) time.Duration { return state.Quantile(ds, q) }
