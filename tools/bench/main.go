// Command bench measures brouter's latencies: network-virtual start/stop as
// the binary Xen or systemd runs, and port attach/detach through shared/vnet.
// It runs everything inside a network namespace of its own and removes it.
//
//	go run ./tools/bench [-bin ./bin] [-n 30]
//
// It prints p50/p90 per operation, and for 20 qemu-ifup run at once the
// lock wait and hold p50/p99 per program and lock. Absolute numbers on a
// shared machine are noisy; compare rows measured in one run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/state"
	"github.com/brouter/brouter/shared/vnet"
	"github.com/brouter/brouter/tools/internal/lockstats"
)

func main() {
	bin := flag.String("bin", "./bin", "directory with the built binaries")
	n := flag.Int("n", 30, "repetitions per operation")
	inner := flag.Bool("inner", false, "internal: already inside the benchmark namespace")
	flag.Parse()
	if err := run(*bin, *n, *inner); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(bin string, n int, inner bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if !inner {
		if os.Geteuid() != 0 {
			return fmt.Errorf("needs root (it creates a network namespace)")
		}
		ns := fmt.Sprintf("brbench-%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
		}
		defer exec.Command("ip", "netns", "del", ns).Run()
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := exec.Command("ip", "netns", "exec", ns, self, "-inner", "-bin", bin, "-n", fmt.Sprint(n))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	dir, err := os.MkdirTemp("", "brbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "brouter.toml")
	os.Setenv(config.EnvConfig, cfgPath)
	os.Setenv(config.EnvRunDir, filepath.Join(dir, "run"))
	os.Setenv(config.EnvStateDir, filepath.Join(dir, "lib"))
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up: %v: %s", err, out)
	}

	fmt.Printf("%-44s %10s %10s %6s\n", "operation", "p50", "p90", "runs")
	nv := filepath.Join(bin, "network-virtual")
	for _, fwk := range []string{"nftables", "iptables"} {
		doc := fmt.Sprintf("[network.bench]\nbridge = \"brbench0\"\naddress = \"10.77.0.1/24\"\nfirewall = %q\n", fwk)
		if err := os.WriteFile(cfgPath, []byte(doc), 0o644); err != nil {
			return err
		}
		var start, stop []time.Duration
		for i := 0; i < n; i++ {
			d, err := timeCmd(nv, "start", "net=bench")
			if err != nil {
				return err
			}
			start = append(start, d)
			if d, err = timeCmd(nv, "stop", "net=bench"); err != nil {
				return err
			}
			stop = append(stop, d)
		}
		report("network-virtual start ("+fwk+")", start)
		report("network-virtual stop ("+fwk+")", stop)
		var again []time.Duration
		if _, err := timeCmd(nv, "start", "net=bench"); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			d, err := timeCmd(nv, "start", "net=bench")
			if err != nil {
				return err
			}
			again = append(again, d)
		}
		report("network-virtual start, running ("+fwk+")", again)
		if _, err := timeCmd(nv, "stop", "net=bench"); err != nil {
			return err
		}
	}
	if err := benchQemu(bin, dir, n); err != nil {
		return err
	}
	if err := benchParallel(bin, dir, 20); err != nil {
		return err
	}
	return benchPorts(n)
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
	if _, err := timeCmd(nv, "start", "net=bench"); err != nil {
		return err
	}
	defer timeCmd(nv, "stop", "net=bench")
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
		d, err := timeCmd(ifup, taps[0])
		if err != nil {
			return err
		}
		alone = append(alone, d)
		if _, err := timeCmd(ifdown, taps[0]); err != nil {
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
			wg.Go(func() { ds[i], errs[i] = timeCmd(prog, taps[i]) })
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
	report("qemu-ifup, alone (port rule)", alone)
	report(fmt.Sprintf("qemu-ifup, %d at once (port rule)", k), up)
	report(fmt.Sprintf("qemu-ifdown, %d at once (port rule)", k), down)
	fmt.Printf("  %d parallel ifups: p50 %.1fx one alone\n", k, float64(pct(up, 0.5))/float64(pct(alone, 0.5)))
	return lockstats.Print(stats)
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
	if _, err := timeCmd(nv, "start", "net=bench"); err != nil {
		return err
	}
	defer timeCmd(nv, "stop", "net=bench")
	for _, c := range []struct{ tap, what string }{{"tapbench0", "plain"}, {"tapas0", "port rule: antispoof"}} {
		if out, err := exec.Command("ip", "tuntap", "add", "mode", "tap", "name", c.tap).CombinedOutput(); err != nil {
			return fmt.Errorf("tuntap: %v: %s", err, out)
		}
		var up, down []time.Duration
		for i := 0; i < n; i++ {
			d, err := timeCmd(ifup, c.tap)
			if err != nil {
				return err
			}
			up = append(up, d)
			if d, err = timeCmd(ifdown, c.tap); err != nil {
				return err
			}
			down = append(down, d)
		}
		exec.Command("ip", "link", "del", c.tap).Run()
		report("qemu-ifup ("+c.what+")", up)
		report("qemu-ifdown ("+c.what+")", down)
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
	report("vnet.Attach (library)", att)
	report("vnet.Detach (library)", det)
	return nil
}

func timeCmd(name string, args ...string) (time.Duration, error) {
	t0 := time.Now()
	out, err := exec.Command(name, args...).CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return d, nil
}

func report(what string, ds []time.Duration) {
	fmt.Printf("%-44s %10s %10s %6d\n", what, pct(ds, 0.5).Round(10*time.Microsecond), pct(ds, 0.9).Round(10*time.Microsecond), len(ds))
}

func pct(ds []time.Duration, q float64) time.Duration { return lockstats.Pct(ds, q) }
