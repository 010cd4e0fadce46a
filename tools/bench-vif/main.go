// Command bench-vif measures vif-brouter's online/offline latency, called
// exactly as libxl calls a vif hotplug script (a fresh process, argv
// [script, online|offline, type_if=vif], "env -i" plus libxl's variables, the
// backend keys in a xenstore), and in the same run the stock Xen script
// vif-bridge from Debian's xen-utils-common against the same kind of vif,
// bridge and xenstore.
//
//	go run ./tools/bench-vif [-bin ./bin] [-n 30] [-no-stock]
//
// As root. Everything happens inside a network namespace of its own (the
// program re-executes itself there) and temporary directories, all removed at
// the end, also on failure or Ctrl-C. The xenstore is the project's
// wire-protocol double (shared/xenstore) on a temporary Unix socket; the
// stock scripts reach it through xenstore-read/-write (Debian xenstore-utils)
// with XENSTORED_PATH.
//
// The stock package is fetched with `apt-get download xen-utils-common` into
// a temporary directory and unpacked there with dpkg-deb -x; nothing is
// installed. Two lines of the stock scripts are changed so that they write no
// file outside that directory: the hotplug log (/var/log/xen/xen-hotplug.log)
// goes to the temporary directory, and `logger` runs with --no-act (same
// process cost, nothing sent to the host's syslog).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/brouter/brouter/shared/state"
	"github.com/brouter/brouter/shared/xenstore"
	"github.com/brouter/brouter/tools/benchkit"
)

func main() {
	bin := flag.String("bin", "./bin", "directory with the built vif-brouter and network-virtual (built into a temporary directory if absent)")
	n := flag.Int("n", 30, "repetitions per operation")
	noStock := flag.Bool("no-stock", false, "skip the stock vif-bridge comparison")
	inner := flag.Bool("inner", false, "internal: already inside the benchmark namespace")
	stock := flag.String("stock", "", "internal: directory with the unpacked stock scripts")
	flag.Parse()
	var err error
	if *inner {
		err = runInner(*bin, *stock, *n)
	} else {
		err = runOuter(*bin, *n, *noStock)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-vif:", err)
		os.Exit(1)
	}
}

// runOuter prepares what needs the host (building, downloading the stock
// package), then runs the benchmark inside a fresh network namespace.
func runOuter(bin string, n int, noStock bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (it creates a network namespace)")
	}
	tmp, err := os.MkdirTemp("", "brbench-vif-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err = binaries(bin, tmp)
	if err != nil {
		return err
	}
	stockDir := ""
	if !noStock {
		if stockDir, err = fetchStock(tmp); err != nil {
			fmt.Printf("note: no stock comparison: %v\n", err)
			stockDir = ""
		}
	}

	ns := fmt.Sprintf("brbench-vif-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, self, "-inner", "-bin", bin, "-n", fmt.Sprint(n), "-stock", stockDir)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd.Run()
}

// binaries returns a directory holding vif-brouter and network-virtual:
// bin if it has them, else a fresh build into tmp.
func binaries(bin, tmp string) (string, error) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	have := true
	for _, p := range []string{"vif-brouter", "network-virtual"} {
		if _, err := os.Stat(filepath.Join(bin, p)); err != nil {
			have = false
		}
	}
	if have {
		return bin, nil
	}
	out := filepath.Join(tmp, "bin")
	goTool := "go"
	if _, err := exec.LookPath(goTool); err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	for _, p := range []string{"vif-brouter", "network-virtual"} {
		c := exec.Command(goTool, "build", "-o", filepath.Join(out, p), "./hooks/"+p)
		c.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := c.CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s not in %s, and go build ./hooks/%s failed (run from the repository root): %v\n%s", p, bin, p, err, msg)
		}
	}
	fmt.Printf("note: built vif-brouter and network-virtual into a temporary directory (no %s/vif-brouter)\n", bin)
	return out, nil
}

// fetchStock downloads and unpacks xen-utils-common into tmp and returns the
// directory of its scripts, patched to write nothing outside tmp.
func fetchStock(tmp string) (string, error) {
	dl := filepath.Join(tmp, "deb")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("xenstore-read"); err != nil {
		return "", fmt.Errorf("the stock scripts need xenstore-read/-write (Debian package xenstore-utils): %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "apt-get", "download", "xen-utils-common")
	c.Dir = dl
	if out, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download xen-utils-common: %v: %s", err, lastLine(string(out)))
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "xen-utils-common_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download xen-utils-common: found %d .deb files", len(debs))
	}
	root := filepath.Join(tmp, "stock")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x: %v: %s", err, out)
	}
	scripts := filepath.Join(root, "etc", "xen", "scripts")
	logFile := filepath.Join(tmp, "xen-hotplug.log")
	patches := []struct{ file, old, new string }{
		{"xen-hotplug-common.sh", "exec 2>>/var/log/xen/xen-hotplug.log", "exec 2>>" + logFile},
		{"logging.sh", "logger -p", "logger --no-act -p"},
	}
	for _, p := range patches {
		path := filepath.Join(scripts, p.file)
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if !strings.Contains(string(b), p.old) {
			return "", fmt.Errorf("stock %s has no %q to redirect (another Xen version?)", p.file, p.old)
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(b), p.old, p.new, 1)), 0o755); err != nil {
			return "", err
		}
	}
	ver, _ := exec.Command("dpkg-deb", "-f", debs[0], "Version").Output()
	fmt.Printf("stock: %s (xen-utils-common %s), unpacked in a temporary directory\n",
		filepath.Join("/etc/xen/scripts", "vif-bridge"), strings.TrimSpace(string(ver)))
	if _, err := exec.LookPath("brctl"); err != nil {
		fmt.Println("note: brctl (bridge-utils) is not installed; the stock scripts then use `ip link set ... master`, as they do on a host without it")
	}
	return scripts, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// bench is the inner run's setup.
type bench struct {
	dir     string
	cfg     string // BROUTER_CONFIG
	bin     string
	xs      *xenstore.Server
	baseEnv []string // BROUTER_* and XENSTORED_PATH
}

const (
	domid, devid = 5, 0
	vifName      = "vif5.0"
	guestMAC     = "00:16:3e:00:05:00"
	bridge       = "xenbr0"
)

func runInner(bin, stockDir string, n int) (err error) {
	dir, err := os.MkdirTemp("", "brbvif")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{dir: dir, bin: bin}
	if b.xs, err = xenstore.NewServer(filepath.Join(dir, "xs")); err != nil {
		return err
	}
	defer b.xs.Close()
	cfg := filepath.Join(dir, "brouter.toml")
	b.cfg = cfg
	b.baseEnv = []string{
		"XENSTORED_PATH=" + b.xs.Path(),
		"BROUTER_CONFIG=" + cfg,
		"BROUTER_RUN_DIR=" + filepath.Join(dir, "run"),
		"BROUTER_STATE_DIR=" + filepath.Join(dir, "lib"),
	}
	if err := sh("ip", "link", "set", "lo", "up"); err != nil {
		return err
	}
	if err := sh("ip", "link", "add", vifName, "type", "veth", "peer", "name", "guest5"); err != nil {
		return err
	}
	defer exec.Command("ip", "link", "del", vifName).Run()
	if err := sh("ip", "link", "set", "guest5", "address", guestMAC, "up"); err != nil {
		return err
	}

	fmt.Printf("\n%-52s %9s %9s %5s\n", "operation (fresh process each, as libxl runs it)", "p50", "p90", "runs")
	var ours, stock time.Duration
	for _, fw := range []string{"nftables", "iptables"} {
		doc := fmt.Sprintf("[network.bench]\nbridge = %q\naddress = \"10.77.0.1/24\"\naddress6 = \"fd77::1/64\"\nfirewall = %q\n[network.bench.dhcp6]\nipv6_mode = \"none\"\n", bridge, fw)
		if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
			return err
		}
		nv := filepath.Join(bin, "network-virtual")
		if err := b.run(nv, []string{"start", "net=bench"}, nil); err != nil {
			return err
		}
		for _, ip := range []string{"", "10.77.0.11 fd77::11"} {
			label := "no ip"
			if ip != "" {
				label = "ip=, antispoof"
			}
			on, off, err := b.measure(filepath.Join(bin, "vif-brouter"), ip, n)
			if err != nil {
				_ = b.run(nv, []string{"stop", "net=bench"}, nil)
				return err
			}
			p50 := report(fmt.Sprintf("vif-brouter online  (%s, %s)", fw, label), on)
			report(fmt.Sprintf("vif-brouter offline (%s, %s)", fw, label), off)
			if fw == "nftables" && ip == "" {
				ours = p50
			}
		}
		if fw == "nftables" && stockDir != "" {
			on, off, err := b.measure(filepath.Join(stockDir, "vif-bridge"), "", n)
			if err != nil {
				fmt.Printf("note: stock vif-bridge failed: %v\n", err)
			} else {
				stock = report("stock vif-bridge online  (Debian, no ip)", on)
				report("stock vif-bridge offline (Debian, no ip)", off)
			}
		}
		if err := b.run(nv, []string{"stop", "net=bench"}, nil); err != nil {
			return err
		}
	}
	if stock > 0 && ours > 0 {
		fmt.Printf("\nonline p50: stock vif-bridge %v / vif-brouter %v = %.1fx\n", stock.Round(10*time.Microsecond), ours.Round(10*time.Microsecond), float64(stock)/float64(ours))
	}
	return b.parallel(20)
}

// parallel brings k vifs online at once, as xl does with a domain's NICs or
// with domains started together, then offline at once, against the same
// vifs one after the other; and prints the lock statistics of the runs at
// once (BROUTER_LOCK_STATS). Each vif has ip= (antispoof) on nftables.
func (b *bench) parallel(k int) error {
	doc := fmt.Sprintf("[network.bench]\nbridge = %q\naddress = \"10.77.0.1/24\"\nfirewall = \"nftables\"\n", bridge)
	if err := os.WriteFile(b.cfg, []byte(doc), 0o644); err != nil {
		return err
	}
	nv, script := filepath.Join(b.bin, "network-virtual"), filepath.Join(b.bin, "vif-brouter")
	if err := b.run(nv, []string{"start", "net=bench"}, nil); err != nil {
		return err
	}
	defer b.run(nv, []string{"stop", "net=bench"}, nil)
	vifs := make([]xvif, k)
	for i := range vifs {
		v := xvif{10 + i}
		vifs[i] = v
		if err := sh("ip", "link", "add", v.name(), "type", "veth", "peer", "name", fmt.Sprintf("guest%d", v.domid)); err != nil {
			return err
		}
		defer exec.Command("ip", "link", "del", v.name()).Run()
		if err := sh("ip", "link", "set", fmt.Sprintf("guest%d", v.domid), "address", v.mac(), "up"); err != nil {
			return err
		}
		b.writeKeys(v, script, fmt.Sprintf("10.77.0.%d", 100+i))
	}
	each := func(fn func(v xvif) error) ([]time.Duration, error) {
		ds, errs := make([]time.Duration, k), make([]error, k)
		var wg sync.WaitGroup
		for i, v := range vifs {
			wg.Go(func() {
				t0 := time.Now()
				errs[i] = fn(v)
				ds[i] = time.Since(t0)
			})
		}
		wg.Wait()
		return ds, errors.Join(errs...)
	}
	var seq []time.Duration
	var seqCPU time.Duration
	for _, v := range vifs {
		c0, t0 := childCPU(), time.Now()
		if err := b.online(v, script, b.env(v, script)); err != nil {
			return err
		}
		seq, seqCPU = append(seq, time.Since(t0)), seqCPU+childCPU()-c0
		if err := b.run(script, []string{"offline", "type_if=vif"}, b.env(v, script)); err != nil {
			return err
		}
	}
	stats := filepath.Join(b.dir, "lockstats")
	withStats := func(v xvif) []string { return append(b.env(v, script), state.EnvLockStats+"="+stats) }
	c0 := childCPU()
	on, err := each(func(v xvif) error { return b.online(v, script, withStats(v)) })
	if err != nil {
		return err
	}
	parCPU := childCPU() - c0
	off, err := each(func(v xvif) error { return b.run(script, []string{"offline", "type_if=vif"}, withStats(v)) })
	if err != nil {
		return err
	}
	fmt.Println()
	p50 := report(fmt.Sprintf("vif-brouter online, one at a time (%d vifs, ip=)", k), seq)
	par := report(fmt.Sprintf("vif-brouter online, %d at once", k), on)
	report(fmt.Sprintf("vif-brouter offline, %d at once", k), off)
	fmt.Printf("  %d at once: online p50 %.1fx one at a time, p99 %v; CPU (user+sys) per online %v at once, %v one at a time\n",
		k, float64(par)/float64(p50), benchkit.Pct(on, 0.99).Round(time.Millisecond),
		(parCPU / time.Duration(k)).Round(100*time.Microsecond), (seqCPU / time.Duration(k)).Round(100*time.Microsecond))
	return benchkit.PrintLocks(stats)
}

// childCPU is the CPU time (user and system) of the children waited for so far.
func childCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs script online and offline n times for vif5.0 (after one
// untimed warm-up) and checks the result of each online.
func (b *bench) measure(script, ip string, n int) (on, off []time.Duration, err error) {
	v := xvif{domid}
	b.writeKeys(v, script, ip)
	env := b.env(v, script)
	for i := -1; i < n; i++ {
		t0 := time.Now()
		if err := b.online(v, script, env); err != nil {
			return nil, nil, err
		}
		d := time.Since(t0)
		t0 = time.Now()
		if err := b.run(script, []string{"offline", "type_if=vif"}, env); err != nil {
			return nil, nil, err
		}
		d2 := time.Since(t0)
		if i >= 0 {
			on, off = append(on, d), append(off, d2)
		}
		// netback creates the device anew for the next guest: bring it back up.
		_ = exec.Command("ip", "link", "set", vifName, "up").Run()
	}
	return on, off, nil
}

// xvif is one vif of a guest: domain domid, device 0.
type xvif struct{ domid int }

func (v xvif) name() string     { return fmt.Sprintf("vif%d.%d", v.domid, devid) }
func (v xvif) mac() string      { return fmt.Sprintf("00:16:3e:00:%02x:%02x", v.domid, devid) }
func (v xvif) xenbus() string   { return fmt.Sprintf("backend/vif/%d/%d", v.domid, devid) }
func (v xvif) backend() string  { return "/local/domain/0/" + v.xenbus() }
func (v xvif) frontend() string { return fmt.Sprintf("/local/domain/%d/device/vif/%d", v.domid, devid) }

// writeKeys writes the backend and frontend keys libxl writes before the call.
func (b *bench) writeKeys(v xvif, script, ip string) {
	b.xs.Remove(fmt.Sprintf("/local/domain/0/backend/vif/%d", v.domid))
	b.xs.Remove(fmt.Sprintf("/local/domain/%d", v.domid))
	for k, val := range map[string]string{
		"frontend": v.frontend(), "frontend-id": fmt.Sprint(v.domid), "online": "1", "state": "2",
		"script": script, "mac": v.mac(), "bridge": bridge, "handle": fmt.Sprint(devid), "type": "vif",
		"hotplug-status": "",
	} {
		b.xs.Set(v.backend()+"/"+k, val)
	}
	if ip != "" {
		b.xs.Set(v.backend()+"/ip", ip)
	}
	for k, val := range map[string]string{"backend": v.backend(), "backend-id": "0", "handle": fmt.Sprint(devid), "mac": v.mac(), "state": "1"} {
		b.xs.Set(v.frontend()+"/"+k, val)
	}
}

// env is libxl's environment for the hotplug script of v ("env -i" plus its variables).
func (b *bench) env(v xvif, script string) []string {
	return append([]string{
		"script=" + script,
		"XENBUS_TYPE=vif",
		"XENBUS_PATH=" + v.xenbus(),
		"XENBUS_BASE_PATH=backend",
		"netdev=",
		"vif=" + v.name(),
	}, b.baseEnv...)
}

// online runs script online for v and checks that v is connected and on the bridge.
func (b *bench) online(v xvif, script string, env []string) error {
	b.xs.Set(v.backend()+"/hotplug-status", "")
	if err := b.run(script, []string{"online", "type_if=vif"}, env); err != nil {
		return err
	}
	if st, _ := b.xs.Get(v.backend() + "/hotplug-status"); st != "connected" {
		e, _ := b.xs.Get(v.backend() + "/hotplug-error")
		return fmt.Errorf("%s online %s: hotplug-status %q (hotplug-error %q)", filepath.Base(script), v.name(), st, e)
	}
	if master, _ := os.ReadFile("/sys/class/net/" + v.name() + "/master/uevent"); !strings.Contains(string(master), "INTERFACE="+bridge) {
		return fmt.Errorf("%s online: %s is not on %s", filepath.Base(script), v.name(), bridge)
	}
	return nil
}

// run executes name with args; env nil means this process's environment,
// else exactly env (libxl's "env -i" plus its variables). stdin is /dev/null.
func (b *bench) run(name string, args, env []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	if env != nil {
		c.Env = env
	} else {
		c.Env = append(os.Environ(), b.baseEnv...)
	}
	out, err := c.CombinedOutput()
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("killed after 45 s")
		}
		return fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// report prints p50/p90 and returns p50.
func report(what string, ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	p := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1)+0.5)] }
	fmt.Printf("%-52s %9s %9s %5d\n", what, p(0.5).Round(10*time.Microsecond), p(0.9).Round(10*time.Microsecond), len(ds))
	return p(0.5)
}
