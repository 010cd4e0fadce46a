// Command bench-cni compares brouter's CNI plugin with the reference chain
// bridge + host-local + bandwidth + portmap, both driven through libcni with
// the bandwidth and portMappings capabilities a runtime would pass.
//
//	go run ./e2e/bench-cni [-n 30] [-big 1000] [-bin ./bin]
//
// It measures ADD and DEL latency (p50/p90) of one container with 10 and
// with -big existing attachments, 50 ADDs with 10 in parallel, and counts
// the firewall rules in the host namespace. Everything runs inside a network
// namespace of its own ("dom0"); every container is a namespace created with
// ip netns add. All of them are removed at the end, also on failure.
package main

import (
	"context"
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

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
)

var (
	benchCtx  = context.Background()
	innerProc *os.Process
)

type opts struct {
	bin     string
	n       int
	big     int
	par     int
	parDeg  int
	prefix  string
	pluginD string
}

func main() {
	var o opts
	flag.StringVar(&o.bin, "bin", "./bin", "directory with the built brouter binaries (brouter, network-virtual)")
	flag.IntVar(&o.n, "n", 30, "repetitions per latency measurement")
	flag.IntVar(&o.big, "big", 1000, "number of existing attachments for the large measurement")
	flag.IntVar(&o.par, "par", 50, "ADDs in the parallel measurement")
	flag.IntVar(&o.parDeg, "j", 10, "parallelism of the parallel measurement")
	inner := flag.Bool("inner", false, "internal: already inside dom0")
	flag.StringVar(&o.prefix, "prefix", "", "internal: container namespace prefix")
	flag.StringVar(&o.pluginD, "plugins", "", "internal: directory with the plugin binaries")
	flag.Parse()
	// On SIGINT/SIGTERM the outer process waits for the inner one and then
	// removes the namespaces; the inner one stops adding and DELs what it made.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	benchCtx = ctx
	go func() {
		s := <-sig
		fmt.Fprintln(os.Stderr, "bench-cni: interrupted, cleaning up")
		cancel()
		if p := innerProc; p != nil && !*inner {
			p.Signal(s)
		}
	}()
	var err error
	if *inner {
		err = runInner(o)
	} else {
		err = runOuter(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-cni:", err)
		os.Exit(1)
	}
}

func goTool() string {
	if _, err := exec.LookPath("go"); err == nil {
		return "go"
	}
	return "/usr/local/go/bin/go"
}

// buildPlugins puts brouter and the reference plugins into dir. The reference
// plugins are built with a temporary copy of go.mod/go.sum so missing go.sum
// entries never touch the repository's files.
func buildPlugins(bin, dir string) error {
	br := filepath.Join(bin, "brouter")
	if _, err := os.Stat(br); err == nil {
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

func runOuter(o opts) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (it creates network namespaces)")
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-cni")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pdir := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return err
	}
	if err := buildPlugins(bin, pdir); err != nil {
		return err
	}
	dom0 := fmt.Sprintf("bcni-dom0-%d", os.Getpid())
	prefix := fmt.Sprintf("bcni%d-", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", dom0).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", dom0, err, out)
	}
	defer func() {
		// Whatever the inner process left: container namespaces first, then dom0.
		ents, _ := os.ReadDir("/run/netns")
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				exec.Command("ip", "netns", "del", e.Name()).Run()
			}
		}
		exec.Command("ip", "netns", "del", dom0).Run()
	}()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", dom0, self, "-inner", "-bin", bin, "-plugins", pdir,
		"-prefix", prefix, "-n", fmt.Sprint(o.n), "-big", fmt.Sprint(o.big), "-par", fmt.Sprint(o.par), "-j", fmt.Sprint(o.parDeg))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	innerProc = cmd.Process
	return cmd.Wait()
}

// chain is one of the two configurations under test.
type chain struct {
	name    string
	list    *libcni.NetworkConfigList
	cni     *libcni.CNIConfig
	prefix  string // container ID / netns prefix
	nsCount int
	live    []*libcni.RuntimeConf
	port    int
}

type result struct {
	add10, del10, addBig, delBig []time.Duration
	parWall, parDelWall          time.Duration
	growTime                     time.Duration
	nft0, ipt0                   int
	nft10, ipt10                 int
	nftBig, iptBig               int
}

func runInner(o opts) error {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up: %v: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "bench-cni-inner")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "brouter.toml")
	if err := os.WriteFile(cfg, []byte("[network.bench]\nbridge = \"brbench\"\naddress = \"10.88.0.1/16\"\n"), 0o644); err != nil {
		return err
	}
	os.Setenv("BROUTER_CONFIG", cfg)
	os.Setenv("BROUTER_RUN_DIR", filepath.Join(dir, "run"))
	os.Setenv("BROUTER_STATE_DIR", filepath.Join(dir, "lib"))

	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	brList, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "bench",
  "plugins": [{
    "type": "brouter",
    "network": "bench",
    "capabilities": {"bandwidth": true, "portMappings": true},
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]], "dataDir": %q}
  }]
}`, filepath.Join(dir, "ipam-brouter"))))
	if err != nil {
		return err
	}
	refList, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "ref",
  "plugins": [
    {"type": "bridge", "bridge": "cni-ref", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/16"}]], "dataDir": %q}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}`, filepath.Join(dir, "ipam-ref"))))
	if err != nil {
		return err
	}
	chains := []*chain{
		{name: "brouter", list: brList, prefix: o.prefix + "b", port: 10000,
			cni: libcni.NewCNIConfigWithCacheDir([]string{o.pluginD}, filepath.Join(dir, "cache-b"), ex)},
		{name: "reference", list: refList, prefix: o.prefix + "r", port: 30000,
			cni: libcni.NewCNIConfigWithCacheDir([]string{o.pluginD}, filepath.Join(dir, "cache-r"), ex)},
	}
	results := map[string]*result{}
	var firstErr error
	for _, c := range chains {
		r, err := benchChain(o, c)
		// Always tear down, also after a failure.
		if e := c.teardown(); e != nil && err == nil {
			err = e
		}
		if c.name == "brouter" {
			if out, e := exec.Command(filepath.Join(o.bin, "network-virtual"), "stop", "net=bench").CombinedOutput(); e != nil {
				fmt.Fprintf(os.Stderr, "network-virtual stop: %v: %s\n", e, out)
			}
		}
		if err != nil {
			firstErr = fmt.Errorf("%s: %w", c.name, err)
			break
		}
		results[c.name] = r
	}
	if len(results) > 0 {
		printReport(o, results)
	}
	return firstErr
}

func (c *chain) newNS() (string, error) {
	name := fmt.Sprintf("%s%d", c.prefix, c.nsCount)
	c.nsCount++
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	return name, nil
}

func (c *chain) rt(ns string) *libcni.RuntimeConf {
	c.port++
	return &libcni.RuntimeConf{
		ContainerID: "ctr-" + ns,
		NetNS:       "/run/netns/" + ns,
		IfName:      "eth0",
		CapabilityArgs: map[string]interface{}{
			"bandwidth": map[string]interface{}{
				"ingressRate": 100000000, "ingressBurst": 12500000,
				"egressRate": 100000000, "egressBurst": 12500000,
			},
			"portMappings": []map[string]interface{}{
				{"hostPort": c.port, "containerPort": 80, "protocol": "tcp"},
			},
		},
	}
}

func (c *chain) add(rt *libcni.RuntimeConf) (time.Duration, error) {
	t0 := time.Now()
	if err := benchCtx.Err(); err != nil {
		return 0, err
	}
	_, err := c.cni.AddNetworkList(context.Background(), c.list, rt)
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("ADD %s: %w", rt.ContainerID, err)
	}
	return d, nil
}

func (c *chain) del(rt *libcni.RuntimeConf) (time.Duration, error) {
	t0 := time.Now()
	err := c.cni.DelNetworkList(context.Background(), c.list, rt)
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("DEL %s: %w", rt.ContainerID, err)
	}
	return d, nil
}

// grow adds background attachments until there are n.
func (c *chain) grow(n int) error {
	for len(c.live) < n {
		ns, err := c.newNS()
		if err != nil {
			return err
		}
		rt := c.rt(ns)
		if _, err := c.add(rt); err != nil {
			c.live = append(c.live, rt) // DEL it at teardown anyway
			return err
		}
		c.live = append(c.live, rt)
	}
	return nil
}

// teardown DELs every attachment still live and removes the namespaces.
func (c *chain) teardown() error {
	var first error
	for _, rt := range c.live {
		if _, err := c.del(rt); err != nil && first == nil {
			first = err
		}
	}
	c.live = nil
	for i := 0; i < c.nsCount; i++ {
		exec.Command("ip", "netns", "del", fmt.Sprintf("%s%d", c.prefix, i)).Run()
	}
	c.nsCount = 0
	return first
}

// measure ADDs and DELs one more container n times.
func (c *chain) measure(n int) (adds, dels []time.Duration, err error) {
	ns, err := c.newNS()
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i < n; i++ {
		rt := c.rt(ns)
		d, err := c.add(rt)
		if err != nil {
			c.del(rt)
			return nil, nil, err
		}
		adds = append(adds, d)
		if d, err = c.del(rt); err != nil {
			return nil, nil, err
		}
		dels = append(dels, d)
	}
	return adds, dels, nil
}

func (c *chain) parallel(count, deg int) (addWall, delWall time.Duration, err error) {
	rts := make([]*libcni.RuntimeConf, count)
	for i := range rts {
		ns, err := c.newNS()
		if err != nil {
			return 0, 0, err
		}
		rts[i] = c.rt(ns)
	}
	run := func(op func(*libcni.RuntimeConf) (time.Duration, error)) (time.Duration, error) {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			first error
		)
		sem := make(chan struct{}, deg)
		t0 := time.Now()
		for _, rt := range rts {
			wg.Add(1)
			sem <- struct{}{}
			go func(rt *libcni.RuntimeConf) {
				defer func() { <-sem; wg.Done() }()
				if _, err := op(rt); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}(rt)
		}
		wg.Wait()
		return time.Since(t0), first
	}
	addWall, err = run(c.add)
	if err != nil {
		c.live = append(c.live, rts...)
		return 0, 0, err
	}
	delWall, err = run(c.del)
	if err != nil {
		c.live = append(c.live, rts...)
	}
	return addWall, delWall, err
}

// rules counts nftables rules (lines with a handle that are not tables,
// chains, sets, maps or flowtables) and iptables-save -A lines in dom0.
func rules() (nft, ipt int) {
	out, _ := exec.Command("nft", "-a", "list", "ruleset").Output()
	for _, l := range strings.Split(string(out), "\n") {
		t := strings.TrimSpace(l)
		if !strings.Contains(t, "# handle") {
			continue
		}
		f := strings.Fields(t)
		switch f[0] {
		case "table", "chain", "set", "map", "flowtable":
			continue
		}
		nft++
	}
	out, _ = exec.Command("iptables-save").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "-A") {
			ipt++
		}
	}
	return nft, ipt
}

func benchChain(o opts, c *chain) (*result, error) {
	r := &result{}
	r.nft0, r.ipt0 = rules()
	fmt.Printf("[%s] creating 10 background attachments ...\n", c.name)
	if err := c.grow(10); err != nil {
		return nil, err
	}
	r.nft10, r.ipt10 = rules()
	var err error
	fmt.Printf("[%s] measuring ADD/DEL at 10 (n=%d) ...\n", c.name, o.n)
	if r.add10, r.del10, err = c.measure(o.n); err != nil {
		return nil, err
	}
	fmt.Printf("[%s] %d ADDs, %d in parallel ...\n", c.name, o.par, o.parDeg)
	if r.parWall, r.parDelWall, err = c.parallel(o.par, o.parDeg); err != nil {
		return nil, err
	}
	fmt.Printf("[%s] growing to %d attachments ...\n", c.name, o.big)
	t0 := time.Now()
	if err := c.grow(o.big); err != nil {
		return nil, err
	}
	r.growTime = time.Since(t0)
	fmt.Printf("[%s]   took %s\n", c.name, r.growTime.Round(time.Millisecond))
	r.nftBig, r.iptBig = rules()
	fmt.Printf("[%s] measuring ADD/DEL at %d (n=%d) ...\n", c.name, o.big, o.n)
	if r.addBig, r.delBig, err = c.measure(o.n); err != nil {
		return nil, err
	}
	return r, nil
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func printReport(o opts, res map[string]*result) {
	fmt.Println()
	fmt.Printf("bench-cni: n=%d, big=%d, parallel %d ADDs with %d at a time\n", o.n, o.big, o.par, o.parDeg)
	fmt.Println("CAVEAT: brouter's CNI plugin does not implement portMappings yet; it ignores them,")
	fmt.Println("        so its numbers carry no port-forwarding cost while portmap's do.")
	fmt.Println()
	fmt.Printf("%-44s %12s %12s\n", "operation", "p50", "p90")
	names := []string{"brouter", "reference"}
	for _, name := range names {
		r := res[name]
		if r == nil {
			continue
		}
		row := func(what string, ds []time.Duration) {
			fmt.Printf("%-44s %12s %12s\n", name+" "+what, ms(pct(ds, 0.5)), ms(pct(ds, 0.9)))
		}
		row("ADD @10", r.add10)
		row("DEL @10", r.del10)
		row(fmt.Sprintf("ADD @%d", o.big), r.addBig)
		row(fmt.Sprintf("DEL @%d", o.big), r.delBig)
		fmt.Printf("%-44s %12s\n", fmt.Sprintf("%s %d ADDs x%d parallel (wall)", name, o.par, o.parDeg), ms(r.parWall))
		fmt.Printf("%-44s %12s\n", fmt.Sprintf("%s %d DELs x%d parallel (wall)", name, o.par, o.parDeg), ms(r.parDelWall))
		fmt.Printf("%-44s %12s\n", fmt.Sprintf("%s setup of %d attachments (serial)", name, o.big-10), r.growTime.Round(time.Millisecond))
	}
	fmt.Println()
	fmt.Printf("%-12s %22s %22s %22s\n", "firewall", "before (nft/ipt -A)", "@10 (nft/ipt -A)", fmt.Sprintf("@%d (nft/ipt -A)", o.big))
	for _, name := range names {
		if r := res[name]; r != nil {
			fmt.Printf("%-12s %22s %22s %22s\n", name,
				fmt.Sprintf("%d / %d", r.nft0, r.ipt0), fmt.Sprintf("%d / %d", r.nft10, r.ipt10), fmt.Sprintf("%d / %d", r.nftBig, r.iptBig))
		}
	}
	fmt.Println("(nft counts rules of all tables, including iptables-nft's; the two columns overlap)")
	b, ref := res["brouter"], res["reference"]
	if b == nil || ref == nil {
		return
	}
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
	verdict := func(v, target float64) string {
		if v <= target {
			return "ok"
		}
		return "MISSED"
	}
	fmt.Println()
	v := ratio(pct(b.add10, 0.5), pct(ref.add10, 0.5))
	fmt.Printf("ADD p50 brouter/reference @10:     %.3f (target <= 0.25: %s)\n", v, verdict(v, 0.25))
	v = ratio(pct(b.del10, 0.5), pct(ref.del10, 0.5))
	fmt.Printf("DEL p50 brouter/reference @10:     %.3f (target <= 0.25: %s)\n", v, verdict(v, 0.25))
	v = ratio(pct(b.addBig, 0.5), pct(ref.addBig, 0.5))
	fmt.Printf("ADD p50 brouter/reference @%-5d   %.3f (target <= 0.25: %s)\n", o.big, v, verdict(v, 0.25))
	v = ratio(pct(b.delBig, 0.5), pct(ref.delBig, 0.5))
	fmt.Printf("DEL p50 brouter/reference @%-5d   %.3f (target <= 0.25: %s)\n", o.big, v, verdict(v, 0.25))
	v = ratio(pct(b.addBig, 0.5), pct(b.add10, 0.5))
	fmt.Printf("brouter ADD p50 @%d / @10:       %.3f (target <= 1.2: %s)\n", o.big, v, verdict(v, 1.2))
	v = ratio(pct(b.delBig, 0.5), pct(b.del10, 0.5))
	fmt.Printf("brouter DEL p50 @%d / @10:       %.3f (target <= 1.2: %s)\n", o.big, v, verdict(v, 1.2))
	v = ratio(pct(ref.addBig, 0.5), pct(ref.add10, 0.5))
	fmt.Printf("reference ADD p50 @%d / @10:     %.3f (for comparison)\n", o.big, v)
	grow := func(r *result) string {
		if r.nftBig == r.nft10 && r.iptBig == r.ipt10 {
			return "does not grow"
		}
		return fmt.Sprintf("GROWS (+%d nft, +%d ipt)", r.nftBig-r.nft10, r.iptBig-r.ipt10)
	}
	fmt.Printf("firewall rules @10 -> @%d: brouter %s; reference %s\n", o.big, grow(b), grow(ref))
}
