// Package benchkit is what the benchmark programs under tools/ share: running
// themselves again inside a network namespace of their own, timing commands
// and printing quantiles. Absolute numbers on a shared machine are noisy:
// the programs print rows measured in one run, to be compared with each other.
package benchkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/state"
)

// InNamespace runs this program again, with args, inside a new network
// namespace named prefix-PID with lo up, and deletes the namespace when it
// ends. The inner run's output is this one's.
func InNamespace(prefix string, args ...string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (it creates a network namespace)")
	}
	ns := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up: %v: %s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, self}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

// TimeCmd runs a command to its end and returns how long it took.
func TimeCmd(name string, args ...string) (time.Duration, error) {
	t0 := time.Now()
	out, err := exec.Command(name, args...).CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return d, nil
}

// Header prints the column titles of Report's rows.
func Header() { fmt.Printf("%-52s %10s %10s %6s\n", "operation", "p50", "p90", "runs") }

// Report prints one row: what, and the p50 and p90 of ds.
func Report(what string, ds []time.Duration) {
	fmt.Printf("%-52s %10s %10s %6d\n", what, Pct(ds, 0.5).Round(10*time.Microsecond), Pct(ds, 0.9).Round(10*time.Microsecond), len(ds))
}

// Pct is the q-quantile of ds (which it sorts).
func Pct(ds []time.Duration, q float64) time.Duration { return state.Quantile(ds, q) }

// PrintLocks prints lock wait and hold p50/p99 per program and lock from
// what brouter's programs wrote to the statistics file path
// (BROUTER_LOCK_STATS, see state.EnvLockStats).
func PrintLocks(path string) error {
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

// PrivateHost makes a temporary directory dir for the host config
// (cfgPath, not yet written), run_dir and state_dir, and points this
// process and the programs it runs at them, so a benchmark touches none of
// the machine's. The caller removes dir.
func PrivateHost(prefix string) (dir, cfgPath string, err error) {
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", "", err
	}
	cfgPath = filepath.Join(dir, "brouter.toml")
	os.Setenv(config.EnvConfig, cfgPath)
	os.Setenv(config.EnvRunDir, filepath.Join(dir, "run"))
	os.Setenv(config.EnvStateDir, filepath.Join(dir, "lib"))
	return dir, cfgPath, nil
}
