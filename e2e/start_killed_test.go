package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

// TestStartKilledThenStop: network-virtual start is killed (SIGKILL) at
// points spread over a whole start (bridge, addresses, firewall tables,
// aggregate shaping, dnsmasq); stop then leaves dom0 and the run directory
// exactly as before the start, temp files included, and no dnsmasq runs.
func TestStartKilledThenStop(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		w := newWorld(t, worldOpts{})
		w.writeConfig(netConfig("nat", backend, `address6 = "fd00:98::1/64"`,
			"[network.e2e.shaping]", `total_to_guest = "100mbit"`,
			"[network.e2e.dhcp]", `range_start = "10.98.98.100"`, `range_end = "10.98.98.150"`))
		w.openForDnsmasq()
		dump := func() string {
			return nstest.WithoutEmptyBuiltins(w.dom0.Dump(t)) + "== run dir ==\n" + strings.Join(robustTree(t, w.runDir), "\n")
		}
		w.mustRun(0, "start") // the lock file, made on first use, stays
		w.mustRun(0, "stop")
		before := dump()
		var durs []time.Duration
		for range 3 {
			t0 := time.Now()
			w.mustRun(0, "start")
			durs = append(durs, time.Since(t0))
			w.mustRun(0, "stop")
		}
		slices.Sort(durs)
		full := durs[1]
		t.Logf("a whole start takes %v (median of %v)", full, durs)
		if d := nstest.Diff(before, dump()); d != "" {
			t.Fatalf("start+stop left something (- before, + after):\n%s", d)
		}
		killed := 0
		for i := range 12 {
			d := full * time.Duration(i) / 10
			if w.startKilledAfter(t, d) {
				killed++
			}
			if r := w.run("stop"); r.code != 0 {
				t.Errorf("kill after %v: stop: %s", d, r)
			}
			if diff := nstest.Diff(before, dump()); diff != "" {
				t.Errorf("kill after %v, then stop: dom0 differs (- before, + after):\n%s", d, diff)
			}
			if pids := dnsmasqOf(w.runDir); len(pids) > 0 {
				t.Errorf("kill after %v, then stop: dnsmasq still runs for this network: %v", d, pids)
			}
		}
		t.Logf("%d of 12 starts killed midway", killed)
		if killed < 3 {
			t.Errorf("only %d starts were killed midway: the sweep does not probe start", killed)
		}
	})
}

// startKilledAfter runs network-virtual start and SIGKILLs it after d;
// reports whether it was killed before it finished.
func (w *world) startKilledAfter(t *testing.T, d time.Duration) bool {
	t.Helper()
	cmd := w.dom0.Cmd(w.bin, "start")
	cmd.Env = append(os.Environ(), "BROUTER_CONFIG="+w.config, "BROUTER_RUN_DIR="+w.runDir, "BROUTER_STATE_DIR="+w.stateDir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(d, func() { _ = cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return err != nil && ok && ws.Signaled()
}

// dnsmasqOf lists the dnsmasq processes whose command line names runDir.
func dnsmasqOf(runDir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cl, "dnsmasq") && strings.Contains(cl, runDir+"/") {
			out = append(out, fmt.Sprintf("%s: %s", e.Name(), cl))
		}
	}
	return out
}
