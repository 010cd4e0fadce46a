// Command bench measures brouter's latencies: network-virtual start/stop as
// the binary Xen or systemd runs, and port attach/detach through shared/vnet.
// It runs everything inside a network namespace of its own and removes it.
//
//	go run ./tools/bench [-bin ./bin] [-n 30] [-only policy]
//
// It prints p50/p90 per operation, and for 20 qemu-ifup run at once the
// lock wait and hold p50/p99 per program and lock; last, the attach latency
// of a guarded port with 1000 forwards and 1000 outgoing deny rules against
// none (-only policy runs just that). Absolute numbers on a
// shared machine are noisy; compare rows measured in one run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/state"
	"github.com/brouter/brouter/shared/vnet"
	"github.com/brouter/brouter/tools/benchkit"
)

func main() {
	bin := flag.String("bin", "./bin", "directory with the built binaries")
	n := flag.Int("n", 30, "repetitions per operation")
	inner := flag.Bool("inner", false, "internal: already inside the benchmark namespace")
	only := flag.String("only", "", "run only this part: \"policy\" (attach with and without a network policy)")
	flag.Parse()
	if err := run(*bin, *n, *inner, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(bin string, n int, inner bool, only string) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if !inner {
		return benchkit.InNamespace("brbench", "-inner", "-bin", bin, "-n", fmt.Sprint(n), "-only", only)
	}
	dir, cfgPath, err := benchkit.PrivateHost("brbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	benchkit.Header()
	if only == "policy" {
		return benchPolicy(n)
	}
	nv := filepath.Join(bin, "network-virtual")
	for _, fwk := range []string{"nftables", "iptables"} {
		doc := fmt.Sprintf("[network.bench]\nbridge = \"brbench0\"\naddress = \"10.77.0.1/24\"\nfirewall = %q\n", fwk)
		if err := os.WriteFile(cfgPath, []byte(doc), 0o644); err != nil {
			return err
		}
		var start, stop []time.Duration
		for i := 0; i < n; i++ {
			d, err := benchkit.TimeCmd(nv, "start", "net=bench")
			if err != nil {
				return err
			}
			start = append(start, d)
			if d, err = benchkit.TimeCmd(nv, "stop", "net=bench"); err != nil {
				return err
			}
			stop = append(stop, d)
		}
		benchkit.Report("network-virtual start ("+fwk+")", start)
		benchkit.Report("network-virtual stop ("+fwk+")", stop)
		var again []time.Duration
		if _, err := benchkit.TimeCmd(nv, "start", "net=bench"); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			d, err := benchkit.TimeCmd(nv, "start", "net=bench")
			if err != nil {
				return err
			}
			again = append(again, d)
		}
		benchkit.Report("network-virtual start, running ("+fwk+")", again)
		if _, err := benchkit.TimeCmd(nv, "stop", "net=bench"); err != nil {
			return err
		}
	}
	if err := benchQemu(bin, dir, n); err != nil {
		return err
	}
	if err := benchParallel(bin, dir, 20); err != nil {
		return err
	}
	if err := benchPorts(n); err != nil {
		return err
	}
	return benchPolicy(n)
}

// benchParallel runs k qemu-ifup at once, then k qemu-ifdown at once, as
// QEMU does when k guests start together, against one qemu-ifup alone; and
// prints how long each program waited for and held each lock
// (BROUTER_LOCK_STATS).
func benchParallel(bin, dir string, k int) error {
	ifup, ifdown := filepath.Join(bin, "qemu-ifup"), filepath.Join(dir, "qemu-ifdown")
	nv := filepath.Join(bin, "network-virtual")
	doc := "[network.bench]\nbridge = \"brbench0\"\naddress = \"10.77.0.1/24\"\n" +
		"[[network.bench.port]]\nname = \"tappar*\"\nmac = \"00:16:3e:00:00:30\"\nips = [\"10.77.0.30\"]\n"
	if err := os.WriteFile(os.Getenv(config.EnvConfig), []byte(doc), 0o644); err != nil {
		return err
	}
	if _, err := benchkit.TimeCmd(nv, "start", "net=bench"); err != nil {
		return err
	}
	defer benchkit.TimeCmd(nv, "stop", "net=bench")
	taps := make([]string, k)
	for i := range taps {
		taps[i] = fmt.Sprintf("tappar%d", i)
		if out, err := exec.Command("ip", "tuntap", "add", "mode", "tap", "name", taps[i]).CombinedOutput(); err != nil {
			return fmt.Errorf("tuntap: %v: %s", err, out)
		}
		defer exec.Command("ip", "link", "del", taps[i]).Run()
	}
	var alone []time.Duration
	for i := 0; i < 10; i++ {
		d, err := benchkit.TimeCmd(ifup, taps[0])
		if err != nil {
			return err
		}
		alone = append(alone, d)
		if _, err := benchkit.TimeCmd(ifdown, taps[0]); err != nil {
			return err
		}
	}
	stats := filepath.Join(dir, "lockstats")
	os.Setenv(state.EnvLockStats, stats)
	defer os.Unsetenv(state.EnvLockStats)
	parallel := func(prog string) ([]time.Duration, error) {
		ds := make([]time.Duration, k)
		errs := make([]error, k)
		var wg sync.WaitGroup
		for i := range taps {
			wg.Go(func() { ds[i], errs[i] = benchkit.TimeCmd(prog, taps[i]) })
		}
		wg.Wait()
		return ds, errors.Join(errs...)
	}
	up, err := parallel(ifup)
	if err != nil {
		return err
	}
	down, err := parallel(ifdown)
	if err != nil {
		return err
	}
	benchkit.Report("qemu-ifup, alone (port rule)", alone)
	benchkit.Report(fmt.Sprintf("qemu-ifup, %d at once (port rule)", k), up)
	benchkit.Report(fmt.Sprintf("qemu-ifdown, %d at once (port rule)", k), down)
	fmt.Printf("  %d parallel ifups: p50 %.1fx one alone\n", k, float64(benchkit.Pct(up, 0.5))/float64(benchkit.Pct(alone, 0.5)))
	return benchkit.PrintLocks(stats)
}

// benchQemu times qemu-ifup and qemu-ifdown as QEMU runs them: a fresh
// process with the tap's name, once plain and once with a port rule that
// gives the guest antispoof and a static lease.
func benchQemu(bin, dir string, n int) error {
	ifup := filepath.Join(bin, "qemu-ifup")
	ifdown := filepath.Join(dir, "qemu-ifdown")
	if err := os.Symlink(ifup, ifdown); err != nil {
		return err
	}
	doc := "[network.bench]\nbridge = \"brbench0\"\naddress = \"10.77.0.1/24\"\n" +
		"[[network.bench.port]]\nname = \"tapas*\"\nmac = \"00:16:3e:00:00:20\"\nips = [\"10.77.0.20\"]\n"
	if err := os.WriteFile(os.Getenv(config.EnvConfig), []byte(doc), 0o644); err != nil {
		return err
	}
	nv := filepath.Join(bin, "network-virtual")
	if _, err := benchkit.TimeCmd(nv, "start", "net=bench"); err != nil {
		return err
	}
	defer benchkit.TimeCmd(nv, "stop", "net=bench")
	for _, c := range []struct{ tap, what string }{{"tapbench0", "plain"}, {"tapas0", "port rule: antispoof"}} {
		if out, err := exec.Command("ip", "tuntap", "add", "mode", "tap", "name", c.tap).CombinedOutput(); err != nil {
			return fmt.Errorf("tuntap: %v: %s", err, out)
		}
		var up, down []time.Duration
		for i := 0; i < n; i++ {
			d, err := benchkit.TimeCmd(ifup, c.tap)
			if err != nil {
				return err
			}
			up = append(up, d)
			if d, err = benchkit.TimeCmd(ifdown, c.tap); err != nil {
				return err
			}
			down = append(down, d)
		}
		exec.Command("ip", "link", "del", c.tap).Run()
		benchkit.Report("qemu-ifup ("+c.what+")", up)
		benchkit.Report("qemu-ifdown ("+c.what+")", down)
	}
	return nil
}

// benchPorts times Attach/Detach through the library, the path every hook takes.
func benchPorts(n int) error {
	cfg, err := config.Load("")
	if err != nil {
		return err
	}
	net, err := cfg.Select("bench", nil)
	if err != nil {
		return err
	}
	m := vnet.New(cfg)
	if err := m.Start(net); err != nil {
		return err
	}
	defer m.Stop(net)
	if out, err := exec.Command("ip", "link", "add", "bport0", "type", "veth", "peer", "name", "bpeer0").CombinedOutput(); err != nil {
		return fmt.Errorf("veth: %v: %s", err, out)
	}
	defer exec.Command("ip", "link", "del", "bport0").Run()
	var att, det []time.Duration
	for i := 0; i < n*3; i++ {
		t0 := time.Now()
		if err := m.Attach(net, vnet.PortRequest{Name: "bport0"}); err != nil {
			return err
		}
		att = append(att, time.Since(t0))
		t0 = time.Now()
		if err := m.Detach(net, "bport0"); err != nil {
			return err
		}
		det = append(det, time.Since(t0))
	}
	benchkit.Report("vnet.Attach (library)", att)
	benchkit.Report("vnet.Detach (library)", det)
	return nil
}

// benchPolicy times Attach/Detach of a guarded port (antispoof elements)
// on a network without policy and on one with 1000 forwards and 1000
// outgoing deny rules, per backend, in one run: the policy is network
// rules, so attach must not grow with it.
func benchPolicy(n int) error {
	base := "[network.bench]\nbridge = \"brbench0\"\naddress = \"10.77.0.1/16\"\nfirewall = %q\n" +
		"[[network.bench.port]]\nname = \"bport*\"\nmac = \"00:16:3e:00:00:20\"\nips = [\"10.77.0.20\"]\n"
	var policy strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&policy, "[[network.bench.forward]]\nhost_port = %d\nguest = \"10.77.%d.%d\"\nguest_port = 80\n", 20000+i, 1+i/250, 1+i%250)
	}
	policy.WriteString("[network.bench.outgoing]\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&policy, "[[network.bench.outgoing.deny]]\nproto = \"tcp\"\nport = %d\nto = \"198.51.100.%d\"\n", 1000+i, i%256)
	}
	if out, err := exec.Command("ip", "link", "add", "bport0", "type", "veth", "peer", "name", "bpeer0").CombinedOutput(); err != nil {
		return fmt.Errorf("veth: %v: %s", err, out)
	}
	defer exec.Command("ip", "link", "del", "bport0").Run()
	for _, fwk := range []string{"nftables", "iptables"} {
		// Two rounds of each, alternating, so that the load of a shared
		// machine drifting during the run weighs on both alike.
		var att [2][]time.Duration
		var started [2][]time.Duration
		for round := 0; round < 4; round++ {
			i := round % 2
			extra := ""
			if i == 1 {
				extra = policy.String()
			}
			if err := os.WriteFile(os.Getenv(config.EnvConfig), []byte(fmt.Sprintf(base, fwk)+extra), 0o644); err != nil {
				return err
			}
			d, a, err := attachRound(n * 3 / 2)
			if err != nil {
				return err
			}
			started[i] = append(started[i], d)
			att[i] = append(att[i], a...)
		}
		for i, what := range []string{"none", "1000 forwards, 1000 deny rules"} {
			benchkit.Report(fmt.Sprintf("vnet.Attach, antispoof, policy %s (%s)", what, fwk), att[i])
			fmt.Printf("  start with policy %s: %s\n", what, benchkit.Pct(started[i], 0.5).Round(time.Millisecond))
		}
		fmt.Printf("  attach p50 with/without policy (%s): %.2fx (goal: 1x, no growth)\n", fwk, float64(benchkit.Pct(att[1], 0.5))/float64(benchkit.Pct(att[0], 0.5)))
	}
	return nil
}

// attachRound starts the configured network "bench", times n attaches of
// bport0 (each followed by a detach) and stops it; it returns how long the
// start took and the attaches.
func attachRound(n int) (time.Duration, []time.Duration, error) {
	cfg, err := config.Load("")
	if err != nil {
		return 0, nil, err
	}
	net, err := cfg.Select("bench", nil)
	if err != nil {
		return 0, nil, err
	}
	m := vnet.New(cfg)
	t0 := time.Now()
	if err := m.Start(net); err != nil {
		return 0, nil, err
	}
	started := time.Since(t0)
	var att []time.Duration
	for j := 0; j < n; j++ {
		t0 := time.Now()
		if err := m.Attach(net, vnet.PortRequest{Name: "bport0"}); err != nil {
			return 0, nil, err
		}
		att = append(att, time.Since(t0))
		if err := m.Detach(net, "bport0"); err != nil {
			return 0, nil, err
		}
	}
	return started, att, m.Stop(net)
}
