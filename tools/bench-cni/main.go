// Command bench-cni compares brouter's CNI plugin with the reference chain
// bridge + host-local + bandwidth + portmap, both driven through libcni with
// the bandwidth and portMappings capabilities a runtime would pass (one port
// mapping per container, distinct host ports).
//
//	go run ./tools/bench-cni [-n 30] [-big 1000] [-par 50] [-j 10] [-grow-j 1] [-bin ./bin]
//
// It measures ADD and DEL latency (p50/p90) and the plugins' CPU time of one
// container with 10 and with -big existing attachments (alternately, in two
// dom0s: twin.go), next to the kernel's own cost of creating, enslaving and
// deleting a veth at the same moments (the floor: floor.go), -par ADDs (and
// DELs) with -j in parallel, and counts the firewall rules in dom0. The reference plugins are built
// from the module proxy at bench time (never committed).
//
// Layout: the outer process builds the plugins and, for each chain, creates
// a "dom0" network namespace (bcni<pid>-<chain>, the only namespaces it adds
// to /run/netns) and runs itself inside it ("ip netns exec", which also gives
// the inner process a mount namespace of its own). The inner process runs the
// whole measurement for one chain and writes its results as JSON to a file;
// the outer prints one combined report with the ratios.
//
// Cleanup does not DEL the background attachments one by one: everything the
// plugins create lives in dom0 or in a container namespace, and their state
// (host-local, libcni cache, brouter's run and state dirs) lives in the
// chain's temporary work directory. Container namespaces are bind-mounted on
// files in that work directory inside the inner process's private mount
// namespace, so they vanish with the inner process (also when it is killed)
// and never appear in the host's /run/netns. The outer kills whatever process
// is left in dom0, deletes dom0 and removes the work directory, on success,
// on failure and on SIGINT/SIGTERM (a second signal kills the inner process).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type opts struct {
	bin    string
	n      int
	big    int
	par    int
	parDeg int
	growJ  int
	chains string

	// internal: set by the outer process for the inner one
	inner   string
	work    string
	pluginD string
	result  string
}

// Phase is one timed step of a chain's run.
type Phase struct {
	Name string
	D    time.Duration
}

// Result is what the inner process hands back to the outer one. Latency
// slices stay empty and rule counts -1 when a step did not run.
type Result struct {
	Chain                        string
	Add10, Del10, AddBig, DelBig []time.Duration
	// CPU time (user+sys) of the plugin processes of each of them.
	AddCPU10, DelCPU10, AddCPUBig, DelCPUBig []time.Duration
	// The kernel's floor next to them (floor.go): veth create+enslave, delete,
	// and the CPU time of create+enslave.
	Floor10, FloorDel10, FloorBig, FloorDelBig, FloorCPU10, FloorCPUBig []time.Duration
	ParAdd, ParDel                                                      []time.Duration // individual latencies in the parallel step
	ParWall, ParDelWall                                                 time.Duration
	Nft0, Ipt0                                                          int
	Nft10, Ipt10                                                        int
	NftBig, IptBig                                                      int
	Live                                                                int // attachments when the inner process ended
	Namespaces                                                          int // container namespaces created
	Phases                                                              []Phase
	Err                                                                 string
}

func main() {
	var o opts
	flag.StringVar(&o.bin, "bin", "./bin", "directory with the built brouter plugin (built from ./plugins/brouter when missing)")
	flag.IntVar(&o.n, "n", 30, "repetitions per latency measurement")
	flag.IntVar(&o.big, "big", 1000, "number of existing attachments for the large measurement")
	flag.IntVar(&o.par, "par", 50, "ADDs in the parallel measurement")
	flag.IntVar(&o.parDeg, "j", 10, "parallelism of the parallel measurement")
	flag.IntVar(&o.growJ, "grow-j", 1, "parallelism when growing to -big attachments (1: serial)")
	flag.StringVar(&o.chains, "chains", "brouter,brouter-hostlocal,reference", "comma-separated chains to run (brouter: its own IPAM; brouter-hostlocal: with host-local; reference)")
	flag.StringVar(&o.inner, "inner", "", "internal: run this chain (already inside its dom0)")
	flag.StringVar(&o.work, "work", "", "internal: the chain's work directory")
	flag.StringVar(&o.pluginD, "plugins", "", "internal: directory with the plugin binaries")
	flag.StringVar(&o.result, "result", "", "internal: file for the JSON result")
	flag.Parse()
	if o.n < 1 || o.par < 1 || o.parDeg < 1 || o.growJ < 1 || o.big < 10 {
		fmt.Fprintln(os.Stderr, "bench-cni: need -n, -par, -j, -grow-j >= 1 and -big >= 10")
		os.Exit(2)
	}

	// A closed stdout (| head) must not kill the run before it cleans up:
	// writes then fail with EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if o.inner != "" {
		// Stop starting operations; the ones in flight finish, the results
		// so far are written, the outer process removes everything.
		go func() {
			for s := range sig {
				fmt.Fprintf(os.Stderr, "[%s] %v: stopping after the operations in flight\n", o.inner, s)
				cancel()
			}
		}()
		if err := runInner(ctx, o); err != nil {
			os.Exit(1)
		}
		return
	}
	go func() {
		n := 0
		for s := range sig {
			n++
			cancel()
			p := currentInner()
			switch {
			case p == nil:
				fmt.Fprintf(os.Stderr, "bench-cni: %v: cleaning up\n", s)
			case n == 1:
				fmt.Fprintf(os.Stderr, "bench-cni: %v: stopping the inner process %d, then cleaning up (again to kill it)\n", s, p.Pid)
				p.Signal(s)
			default:
				fmt.Fprintf(os.Stderr, "bench-cni: %v: killing the inner process %d, then cleaning up\n", s, p.Pid)
				p.Kill()
			}
		}
	}()
	os.Exit(runOuter(ctx, o))
}

var (
	innerMu   sync.Mutex
	innerProc *os.Process
)

func currentInner() *os.Process {
	innerMu.Lock()
	defer innerMu.Unlock()
	return innerProc
}

func setInner(p *os.Process) {
	innerMu.Lock()
	innerProc = p
	innerMu.Unlock()
}

func goTool() string {
	if _, err := exec.LookPath("go"); err == nil {
		return "go"
	}
	return "/usr/local/go/bin/go"
}

// buildPlugins puts brouter and the reference plugins into dir. The reference
// plugins are built from the module proxy with a temporary copy of
// go.mod/go.sum, so missing go.sum entries never touch the repository's files.
func buildPlugins(bin, dir string) error {
	br := filepath.Join(bin, "brouter")
	if _, err := os.Stat(br); err == nil {
		fmt.Printf("brouter plugin: %s\n", br)
		if err := os.Symlink(br, filepath.Join(dir, "brouter")); err != nil {
			return err
		}
	} else {
		fmt.Println("building brouter plugin ...")
		if out, err := exec.Command(goTool(), "build", "-o", filepath.Join(dir, "brouter"), "./plugins/brouter").CombinedOutput(); err != nil {
			return fmt.Errorf("build brouter: %v\n%s", err, out)
		}
	}
	modDir := filepath.Join(dir, "mod")
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(modDir, f), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Println("building reference plugins (bridge, host-local, bandwidth, portmap) ...")
	for _, p := range []string{"main/bridge", "ipam/host-local", "meta/bandwidth", "meta/portmap"} {
		cmd := exec.Command(goTool(), "build", "-modfile="+filepath.Join(modDir, "go.mod"),
			"-o", filepath.Join(dir, filepath.Base(p)), "github.com/containernetworking/plugins/plugins/"+p)
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", p, err, out)
		}
	}
	return nil
}

// outerPhases are timed by the outer process, per chain.
type outerPhases struct {
	inner, teardown, settle time.Duration
	killed                  []string
}

func runOuter(ctx context.Context, o opts) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-cni: needs root (it creates network namespaces)")
		return 1
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-cni:", err)
		return 1
	}
	o.bin = bin
	var chains []string
	for _, c := range strings.Split(o.chains, ",") {
		switch c = strings.TrimSpace(c); c {
		case "brouter", "brouter-hostlocal", "reference":
			chains = append(chains, c)
		case "":
		default:
			fmt.Fprintf(os.Stderr, "bench-cni: unknown chain %q (brouter, reference)\n", c)
			return 2
		}
	}
	removeStaleNetns()
	top, err := os.MkdirTemp("", fmt.Sprintf("bench-cni-%d-", os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-cni:", err)
		return 1
	}
	defer os.RemoveAll(top)
	prefix := fmt.Sprintf("bcni%d-", os.Getpid())
	// Last line of defence: whatever namespace with our prefix is still
	// there (none should be) goes.
	defer removeLeftoverNetns(prefix)

	t0 := time.Now()
	pdir := filepath.Join(top, "plugins")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench-cni:", err)
		return 1
	}
	if err := buildPlugins(bin, pdir); err != nil {
		fmt.Fprintln(os.Stderr, "bench-cni:", err)
		return 1
	}
	buildTime := time.Since(t0)
	fmt.Printf("plugins ready in %s\n", buildTime.Round(time.Millisecond))

	results := map[string]*Result{}
	outer := map[string]*outerPhases{}
	var failed []string
	for i, name := range chains {
		if ctx.Err() != nil {
			break
		}
		r, op, err := runChain(ctx, o, name, prefix, pdir, top, i == len(chains)-1)
		if r != nil {
			results[name] = r
		}
		outer[name] = op
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench-cni: %s: FAILED: %v\n", name, err)
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
		}
	}
	printReport(o, chains, buildTime, results, outer)
	left := leftoverNetns(prefix)
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "bench-cni: namespaces still present after cleanup: %s\n", strings.Join(left, " "))
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench-cni: interrupted; partial results above")
		return 130
	case len(failed) > 0:
		fmt.Println()
		for _, f := range failed {
			fmt.Printf("FAILED %s\n", f)
		}
		return 1
	}
	return 0
}

// runChain runs one chain in a fresh dom0 and removes everything afterwards.
func runChain(ctx context.Context, o opts, name, prefix, pdir, top string, last bool) (r *Result, op *outerPhases, err error) {
	op = &outerPhases{}
	dom0 := prefix + name
	work := filepath.Join(top, name)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, op, err
	}
	if out, err := exec.Command("ip", "netns", "add", dom0).CombinedOutput(); err != nil {
		return nil, op, fmt.Errorf("ip netns add %s: %v: %s", dom0, err, strings.TrimSpace(string(out)))
	}
	tornDown := false
	teardown := func() {
		if tornDown {
			return
		}
		tornDown = true
		t := time.Now()
		op.killed = killNetnsPids(dom0)
		if out, err := exec.Command("ip", "netns", "del", dom0).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench-cni: ip netns del %s: %v: %s\n", dom0, err, strings.TrimSpace(string(out)))
		}
		if err := os.RemoveAll(work); err != nil {
			fmt.Fprintf(os.Stderr, "bench-cni: remove %s: %v\n", work, err)
		}
		op.teardown = time.Since(t)
	}
	defer teardown() // also on panic

	self, err := os.Executable()
	if err != nil {
		return nil, op, err
	}
	resFile := filepath.Join(work, "result.json")
	cmd := exec.Command("ip", "netns", "exec", dom0, self, "-inner", name,
		"-work", work, "-plugins", pdir, "-result", resFile, "-bin", o.bin,
		"-n", strconv.Itoa(o.n), "-big", strconv.Itoa(o.big), "-par", strconv.Itoa(o.par),
		"-j", strconv.Itoa(o.parDeg), "-grow-j", strconv.Itoa(o.growJ))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// "ip netns exec" execs the inner process in place: if this process
	// dies, the inner one gets SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	fmt.Printf("\n=== %s: dom0 %s ===\n", name, dom0)
	t := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, op, err
	}
	setInner(cmd.Process)
	if ctx.Err() != nil { // a signal that came before setInner
		cmd.Process.Signal(os.Interrupt)
	}
	waitErr := cmd.Wait()
	setInner(nil)
	op.inner = time.Since(t)

	if b, err := os.ReadFile(resFile); err == nil {
		r = &Result{}
		if err := json.Unmarshal(b, r); err != nil {
			r = nil
			waitErr = errors.Join(waitErr, fmt.Errorf("result: %w", err))
		}
	}
	teardown()
	live, nss := 0, 0
	if r != nil {
		live, nss = r.Live, r.Namespaces
	}
	fmt.Printf("[%s] teardown (no DELs; delete dom0 with %d attachments and %d container namespaces): %s\n",
		name, live, nss, op.teardown.Round(time.Millisecond))
	if len(op.killed) > 0 {
		fmt.Printf("[%s]   killed processes left in dom0: %s\n", name, strings.Join(op.killed, ", "))
	}
	if ctx.Err() == nil && !last {
		// The kernel destroys the namespaces asynchronously; let it finish
		// before the next chain is measured.
		var frac float64
		op.settle, frac = settle(ctx, 60*time.Second)
		fmt.Printf("[%s] waited %s for the machine to settle (CPU %.0f%% busy)\n",
			name, op.settle.Round(time.Millisecond), 100*frac)
	}
	switch {
	case r != nil && r.Err != "":
		return r, op, errors.New(r.Err)
	case waitErr != nil && r == nil:
		return nil, op, fmt.Errorf("inner process: %v (no result)", waitErr)
	case waitErr != nil:
		return r, op, fmt.Errorf("inner process: %v", waitErr)
	}
	return r, op, nil
}

// killNetnsPids kills, by PID, every process still in dom0 (a daemon a
// plugin may have started); they are all descendants of this benchmark.
func killNetnsPids(dom0 string) []string {
	out, err := exec.Command("ip", "netns", "pids", dom0).Output()
	if err != nil {
		return nil
	}
	var killed []string
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = append(killed, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(comm))))
		}
	}
	return killed
}

func leftoverNetns(prefix string) []string {
	ents, _ := os.ReadDir("/run/netns")
	var left []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			left = append(left, e.Name())
		}
	}
	return left
}

func removeLeftoverNetns(prefix string) {
	for _, name := range leftoverNetns(prefix) {
		killNetnsPids(name)
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench-cni: ip netns del %s: %v: %s\n", name, err, strings.TrimSpace(string(out)))
		}
	}
}

// staleName matches the namespaces this benchmark creates (dom0s now,
// dom0s and container namespaces of earlier versions), with the PID of the
// run that created them.
var staleName = regexp.MustCompile(`^bcni(?:-dom0-([0-9]+)|([0-9]+)-(?:brouter|reference|[br][0-9]+))$`)

var staleDir = regexp.MustCompile(`^bench-cni-([0-9]+)-[0-9]+$`)

// removeStaleNetns deletes namespaces and work directories an earlier run
// left behind (it was killed with SIGKILL): only names of this benchmark
// whose PID is gone.
func removeStaleNetns() {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid := m[1] + m[2]
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue // that run is still going (or the PID is reused: leave it)
		}
		fmt.Printf("removing namespace %s left by an earlier run (pid %s is gone)\n", e.Name(), pid)
		killNetnsPids(e.Name())
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench-cni: ip netns del %s: %v: %s\n", e.Name(), err, strings.TrimSpace(string(out)))
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "bench-cni-*-*"))
	for _, d := range dirs {
		m := staleDir.FindStringSubmatch(filepath.Base(d))
		if m == nil {
			continue
		}
		if _, err := os.Stat("/proc/" + m[1]); err == nil {
			continue
		}
		fmt.Printf("removing %s left by an earlier run (pid %s is gone)\n", d, m[1])
		os.RemoveAll(d)
	}
}

// cpuBusy reads the aggregate CPU counters of /proc/stat: time spent busy
// (everything but idle and iowait) and in total, in clock ticks.
func cpuBusy() (busy, total uint64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, true
}

// settle waits until the machine is calm again after a teardown (the kernel
// destroys namespaces asynchronously, in kernel threads): the CPUs less than
// half busy in two consecutive half-second samples, or max has passed. It
// returns how long it waited and the last busy fraction.
func settle(ctx context.Context, max time.Duration) (time.Duration, float64) {
	t0 := time.Now()
	b0, t0t, ok := cpuBusy()
	if !ok {
		return 0, -1
	}
	calm, frac := 0, -1.0
	for calm < 2 && time.Since(t0) < max && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		b1, t1t, ok := cpuBusy()
		if !ok || t1t == t0t {
			continue
		}
		frac = float64(b1-b0) / float64(t1t-t0t)
		if frac < 0.5 {
			calm++
		} else {
			calm = 0
		}
		b0, t0t = b1, t1t
	}
	return time.Since(t0), frac
}
