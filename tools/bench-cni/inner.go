package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// chain is one of the configurations under test, inside its dom0: the
// process's own network namespace, or (enter) a second dom0 (twin.go).
type chain struct {
	name  string
	list  *libcni.NetworkConfigList
	cni   *libcni.CNIConfig
	nsDir string
	enter string // the dom0's namespace file; "" for this process's own
	fl    *floor

	nsCount atomic.Int64
	port    atomic.Int64
	live    atomic.Int64
}

// runInner measures one chain and always writes the result file, also after a
// failure or an interrupt (with what it has). It removes nothing: the outer
// process deletes dom0 and the work directory, and the container namespaces
// go away with this process's mount namespace.
func runInner(ctx context.Context, o opts) error {
	r := &Result{Chain: o.inner, Nft0: -1, Ipt0: -1, Nft10: -1, Ipt10: -1, NftBig: -1, IptBig: -1}
	c, err := setupInner(o)
	if err == nil {
		err = benchChain(ctx, o, c, r)
		r.Live = int(c.live.Load())
		r.Namespaces = int(c.nsCount.Load())
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = fmt.Errorf("interrupted: %w", err)
		}
		r.Err = err.Error()
		fmt.Fprintf(os.Stderr, "[%s] FAILED: %v\n", o.inner, err)
	}
	b, jerr := json.Marshal(r)
	if jerr == nil {
		jerr = os.WriteFile(o.result, b, 0o644)
	}
	if jerr != nil {
		fmt.Fprintf(os.Stderr, "[%s] write result: %v\n", o.inner, jerr)
		return jerr
	}
	return err
}

func setupInner(o opts) (*chain, error) {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lo up: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if strings.HasPrefix(o.inner, "brouter") {
		cfg := filepath.Join(o.work, "brouter.toml")
		if err := os.WriteFile(cfg, []byte("[network.bench]\nbridge = \"brbench\"\naddress = \"10.88.0.1/16\"\n"), 0o644); err != nil {
			return nil, err
		}
		os.Setenv("BROUTER_CONFIG", cfg)
		os.Setenv("BROUTER_RUN_DIR", filepath.Join(o.work, "run"))
		os.Setenv("BROUTER_STATE_DIR", filepath.Join(o.work, "lib"))
	}
	return newChain(o, "", nil)
}

// newChain is the chain o.inner with its state under the work directory
// (names suffixed with suffix), plugins run with env added.
func newChain(o opts, suffix string, env []string) (*chain, error) {
	nsDir := filepath.Join(o.work, "ns"+suffix)
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return nil, err
	}
	ex := &pluginExec{DefaultExec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}, chain: o.inner + suffix, env: env}
	c := &chain{name: o.inner + suffix, nsDir: nsDir,
		cni: libcni.NewCNIConfigWithCacheDir([]string{o.pluginD}, filepath.Join(o.work, "cache"+suffix), ex)}
	c.port.Store(20000)
	ipamDir := filepath.Join(o.work, "ipam"+suffix)
	var conf string
	switch o.inner {
	case "brouter", "brouter-hostlocal":
		// "brouter": the network's own addresses (no IPAM plugin);
		// "brouter-hostlocal": the same with host-local, as the reference has.
		ipamConf := ""
		if o.inner == "brouter-hostlocal" {
			ipamConf = fmt.Sprintf(`,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]], "dataDir": %q}`, ipamDir)
		}
		conf = fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "bench",
  "plugins": [{
    "type": "brouter",
    "network": "bench",
    "capabilities": {"bandwidth": true, "portMappings": true}%s
  }]
}`, ipamConf)
	case "reference":
		conf = fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "ref",
  "plugins": [
    {"type": "bridge", "bridge": "cni-ref", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/16"}]], "dataDir": %q}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}`, ipamDir)
	default:
		return nil, fmt.Errorf("unknown chain %q", o.inner)
	}
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return nil, err
	}
	c.list = list
	return c, nil
}

// pluginExec runs plugins like libcni's RawExec, but also shows what a plugin
// wrote on stderr when it fails (RawExec drops it when the plugin printed a
// CNI error on stdout).
type pluginExec struct {
	*invoke.DefaultExec
	chain string
	env   []string // added to (and overriding) libcni's environment
}

func (e *pluginExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, pluginPath)
	c.Env = append(environ, e.env...)
	c.Stdin = bytes.NewReader(stdin)
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if stderr.Len() > 0 {
		what := filepath.Base(pluginPath)
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
				what += " " + v
			}
		}
		for _, l := range strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n") {
			fmt.Fprintf(os.Stderr, "[%s] %s stderr: %s\n", e.chain, what, l)
		}
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	emsg := &types.Error{}
	switch {
	case stdout.Len() == 0 && stderr.Len() == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case stdout.Len() == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed: %q: %v", strings.TrimSpace(stderr.String()), err)
	default:
		if perr := json.Unmarshal(stdout.Bytes(), emsg); perr != nil {
			emsg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", stdout.String(), perr)
		}
	}
	return nil, emsg
}

// newNetNS creates a network namespace and binds it to path. The bind mount
// exists only in this process's mount namespace (ip netns exec made it
// private), so the namespace never shows up in the host's /run/netns (where
// it would be a stale entry that makes "ip netns list" and "ip link show"
// print "Peer netns reference is invalid") and it is gone when this process
// and its children are.
func newNetNS(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, now in the new namespace, exits
		// with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("new netns: %w", err)
	}
	return nil
}

func (c *chain) newNS() (string, error) {
	path := filepath.Join(c.nsDir, fmt.Sprintf("c%04d", c.nsCount.Add(1)))
	return path, newNetNS(path)
}

func (c *chain) rt(ns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: "ctr-" + filepath.Base(ns),
		NetNS:       ns,
		IfName:      "eth0",
		CapabilityArgs: map[string]interface{}{
			"bandwidth": map[string]interface{}{
				"ingressRate": 100000000, "ingressBurst": 12500000,
				"egressRate": 100000000, "egressBurst": 12500000,
			},
			"portMappings": []map[string]interface{}{
				{"hostPort": int(c.port.Add(1)), "containerPort": 80, "protocol": "tcp"},
			},
		},
	}
}

func (c *chain) add(ctx context.Context, rt *libcni.RuntimeConf) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Not ctx: an operation that started finishes. Timed inside c.in, so
	// that entering the twin dom0 is not part of it.
	var d time.Duration
	err := c.in(func() error {
		t0 := time.Now()
		_, err := c.cni.AddNetworkList(context.Background(), c.list, rt)
		d = time.Since(t0)
		return err
	})
	if err != nil {
		return d, fmt.Errorf("ADD %s (host port %v): %w", rt.ContainerID, hostPort(rt), err)
	}
	c.live.Add(1)
	return d, nil
}

func (c *chain) del(ctx context.Context, rt *libcni.RuntimeConf) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var d time.Duration
	err := c.in(func() error {
		t0 := time.Now()
		err := c.cni.DelNetworkList(context.Background(), c.list, rt)
		d = time.Since(t0)
		return err
	})
	if err != nil {
		return d, fmt.Errorf("DEL %s: %w", rt.ContainerID, err)
	}
	c.live.Add(-1)
	return d, nil
}

func hostPort(rt *libcni.RuntimeConf) interface{} {
	if pm, ok := rt.CapabilityArgs["portMappings"].([]map[string]interface{}); ok && len(pm) > 0 {
		return pm[0]["hostPort"]
	}
	return "?"
}

// grow adds background attachments until there are target, with j at a
// time, printing progress every 100 when progress is set.
func (c *chain) grow(ctx context.Context, target, j int, progress bool) error {
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return first != nil }
	jobs := make(chan struct{})
	t0 := time.Now()
	start := c.live.Load()
	var done atomic.Int64
	for w := 0; w < j; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if failed() || ctx.Err() != nil {
					continue
				}
				err := func() error {
					ns, err := c.newNS()
					if err != nil {
						return err
					}
					if _, err := c.add(ctx, c.rt(ns)); err != nil {
						return err
					}
					if n := start + done.Add(1); progress && n%100 == 0 {
						fmt.Printf("[%s]   %d/%d attachments, %s elapsed\n", c.name, n, target, time.Since(t0).Round(100*time.Millisecond))
					}
					return nil
				}()
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for need := target - int(c.live.Load()); need > 0 && !failed() && ctx.Err() == nil; need-- {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// samples are the latencies of one measurement: the chain's ADDs and DELs,
// the CPU time (user+sys) their plugin processes used, and, after each
// pair, the kernel's floor.
type samples struct {
	adds, dels, addCPU, delCPU, floorAdds, floorDels, floorCPU []time.Duration
}

// childCPU is the CPU time used so far by this process's waited-for
// children (the plugins libcni ran): less sensitive to a busy machine than
// latencies, which include waiting for a CPU.
func childCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_CHILDREN, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// round ADDs and DELs the container rt once and then runs the floor's
// veth, adding their latencies and CPU times to s.
func (c *chain) round(ctx context.Context, rt *libcni.RuntimeConf, s *samples) error {
	cpu := childCPU()
	d, err := c.add(ctx, rt)
	if err != nil {
		return err
	}
	s.adds, s.addCPU = append(s.adds, d), append(s.addCPU, childCPU()-cpu)
	cpu = childCPU()
	if d, err = c.del(ctx, rt); err != nil {
		return err
	}
	s.dels, s.delCPU = append(s.dels, d), append(s.delCPU, childCPU()-cpu)
	var fa, fd, fc time.Duration
	if err := c.in(func() (err error) { fa, fd, fc, err = c.fl.once(); return err }); err != nil {
		return err
	}
	s.floorAdds, s.floorDels, s.floorCPU = append(s.floorAdds, fa), append(s.floorDels, fd), append(s.floorCPU, fc)
	return nil
}

// parallel ADDs count containers deg at a time, then DELs them the same way;
// it returns the individual latencies and the wall times.
func (c *chain) parallel(ctx context.Context, count, deg int, r *Result) error {
	rts := make([]*libcni.RuntimeConf, count)
	for i := range rts {
		ns, err := c.newNS()
		if err != nil {
			return err
		}
		rts[i] = c.rt(ns)
	}
	run := func(op func(context.Context, *libcni.RuntimeConf) (time.Duration, error)) ([]time.Duration, time.Duration, error) {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			first error
			ds    []time.Duration
		)
		sem := make(chan struct{}, deg)
		t0 := time.Now()
		for _, rt := range rts {
			wg.Add(1)
			sem <- struct{}{}
			go func(rt *libcni.RuntimeConf) {
				defer func() { <-sem; wg.Done() }()
				d, err := op(ctx, rt)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if first == nil {
						first = err
					}
					return
				}
				ds = append(ds, d)
			}(rt)
		}
		wg.Wait()
		return ds, time.Since(t0), first
	}
	var err error
	if r.ParAdd, r.ParWall, err = run(c.add); err != nil {
		return err
	}
	r.ParDel, r.ParDelWall, err = run(c.del)
	return err
}

// rules counts nftables rules (lines with a handle that are not tables,
// chains, sets, maps, flowtables or named objects such as counters) and iptables-save -A lines in dom0;
// -1 when the tool is missing or fails.
func rules() (nft, ipt int) {
	out, err := exec.Command("nft", "-a", "list", "ruleset").Output()
	if err != nil {
		nft = -1
	}
	for _, l := range strings.Split(string(out), "\n") {
		t := strings.TrimSpace(l)
		if !strings.Contains(t, "# handle") {
			continue
		}
		switch strings.Fields(t)[0] {
		case "table", "chain", "set", "map", "flowtable":
			continue
		}
		if strings.HasSuffix(strings.TrimSpace(strings.Split(t, "#")[0]), "{") {
			continue // a stateful object's declaration ("counter NAME {"), not a rule
		}
		nft++
	}
	out, err = exec.Command("iptables-save").Output()
	if err != nil {
		ipt = -1
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "-A") {
			ipt++
		}
	}
	return nft, ipt
}

// benchChain grows the chain's dom0 to 10 attachments and a second dom0
// (twin.go) to 10 as well, runs the parallel step at 10, grows the first to
// o.big, and then measures ADD+DEL with 10 and with o.big attachments
// alternately, one container in each dom0 in turn, so that both see the
// same load on the machine.
func benchChain(ctx context.Context, o opts, c *chain, r *Result) error {
	step := func(name string, f func() error) error {
		fmt.Printf("[%s] %s ...\n", c.name, name)
		t := time.Now()
		err := f()
		d := time.Since(t)
		r.Phases = append(r.Phases, Phase{Name: name, D: d})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Printf("[%s]   done in %s\n", c.name, d.Round(time.Millisecond))
		return nil
	}
	r.Nft0, r.Ipt0 = rules()
	var small *chain
	if err := step("setup: 10 background attachments, in dom0 and in a second one", func() (err error) {
		if small, err = newTwin(o); err == nil {
			err = errors.Join(c.grow(ctx, 10, 1, false), small.grow(ctx, 10, 1, false))
		}
		return err
	}); err != nil {
		return err
	}
	r.Nft10, r.Ipt10 = rules()
	if err := step(fmt.Sprintf("%d ADDs then %d DELs, %d in parallel, @10", o.par, o.par, o.parDeg), func() error {
		return c.parallel(ctx, o.par, o.parDeg, r)
	}); err != nil {
		return err
	}
	mode := "serial"
	if o.growJ > 1 {
		mode = fmt.Sprintf("%d in parallel", o.growJ)
	}
	if err := step(fmt.Sprintf("setup: grow %d -> %d attachments (%s)", c.live.Load(), o.big, mode), func() error {
		return c.grow(ctx, o.big, o.growJ, true)
	}); err != nil {
		return err
	}
	r.NftBig, r.IptBig = rules()
	return step(fmt.Sprintf("ADD+DEL x%d @10 and @%d, alternately", o.n, o.big), func() error {
		s10, sBig, err := alternate(ctx, o.n, small, c)
		r.Add10, r.Del10, r.Floor10, r.FloorDel10 = s10.adds, s10.dels, s10.floorAdds, s10.floorDels
		r.AddCPU10, r.DelCPU10, r.FloorCPU10 = s10.addCPU, s10.delCPU, s10.floorCPU
		r.AddBig, r.DelBig, r.FloorBig, r.FloorDelBig = sBig.adds, sBig.dels, sBig.floorAdds, sBig.floorDels
		r.AddCPUBig, r.DelCPUBig, r.FloorCPUBig = sBig.addCPU, sBig.delCPU, sBig.floorCPU
		r.Namespaces += int(small.nsCount.Load())
		return err
	})
}
