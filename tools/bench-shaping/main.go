// Command bench-shaping measures how close shaped ports get to their
// configured rate, in both directions, with shared/shape and, for comparison,
// with a plain tc token bucket filter of the kind most guides (and the CNI
// bandwidth plugin) set up: `tbf rate R burst 16kb latency 25ms`, on the port
// for traffic to the guest and on an ifb for traffic from it. It also shows a
// network aggregate with a high- and a low-priority guest saturating it.
//
//	go run ./tools/bench-shaping [-t 5] [-rates 1,10,100,1000] [-load 0]
//
// Everything runs in network namespaces of its own (a "dom0" with a bridge
// and three guests on veth ports), deleted on exit, also on failure or ^C.
//
// How "achieved" is measured: each iperf3 run lasts t+3 s; from second 2 to
// t+2 (after slow start and the initial bucket, before the end of the test)
// the benchmark reads the byte counter of the HTB class or tbf qdisc doing the
// shaping: the layer-2 bytes (Ethernet frames without FCS, every segment of a
// GSO packet counted) that left the shaper, i.e. exactly what a rate limits.
// Also shown: iperf3's TCP goodput over the whole run, what a user of iperf3
// sees; it is at most 1448/1514 = 95.6% of the layer-2 rate (headers), and
// at low rates also moves with TCP's losses and retransmissions.
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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/brouter/brouter/shared/shape"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func main() {
	secs := flag.Int("t", 5, "seconds per iperf3 run")
	rates := flag.String("rates", "1,10,100,1000", "rates to measure, Mbit/s, comma-separated")
	load := flag.Int("load", 0, "busy-looping threads to run during the measurements (a loaded host)")
	noTBF := flag.Bool("no-tbf", false, "skip the plain tbf comparison")
	noAgg := flag.Bool("no-aggregate", false, "skip the aggregate/priority case")
	cc := flag.String("cc", "cubic", "TCP congestion control of the guests (cubic, bbr, reno)")
	flag.Parse()
	var rs []uint64
	for _, f := range strings.Split(*rates, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "bench-shaping: -rates: %q is not a rate in Mbit/s\n", f)
			os.Exit(2)
		}
		rs = append(rs, uint64(v*1e6))
	}
	b := &bench{secs: *secs, cc: *cc, id: fmt.Sprintf("%d", os.Getpid())}
	err := b.run(rs, *load, !*noTBF, !*noAgg)
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-shaping:", err)
		os.Exit(1)
	}
}

type bench struct {
	secs int
	cc   string
	id   string

	mu    sync.Mutex
	nss   []string
	procs []*exec.Cmd
	done  bool
}

const (
	dom0 = "dom0"
	g1   = "g1" // the measured port vp1; high priority in the aggregate
	g2   = "g2" // iperf3 servers, unshaped port vp2
	g3   = "g3" // low priority in the aggregate, port vp3
)

func (b *bench) ns(role string) string { return "brsb-" + role + "-" + b.id }

func (b *bench) run(rates []uint64, load int, tbf, agg bool) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (it creates network namespaces)")
	}
	for _, tool := range []string{"ip", "tc", "iperf3"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found on PATH (apt-get install iproute2 iperf3)", tool)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "bench-shaping: interrupted, cleaning up")
		b.cleanup()
		os.Exit(130)
	}()
	if err := b.topology(); err != nil {
		return err
	}
	if load > 0 {
		stop := busy(load)
		defer stop()
	}
	fmt.Printf("kernel HZ %d; TCP %s; %d s per run; %d busy threads; rates are layer 2 (see -h)\n\n", shape.KernelHZ(), b.cc, b.secs, load)

	fmt.Println("shared/shape (HTB, automatic burst and queue):")
	if err := b.table(rates, b.withShape); err != nil {
		return err
	}
	if tbf {
		fmt.Println("\nplain tc tbf rate R burst 16kb latency 25ms (to guest on the port, from guest on an ifb):")
		if err := b.table(rates, b.withTBF); err != nil {
			return err
		}
	}
	if agg {
		fmt.Println()
		if err := b.aggregate(); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) topology() error {
	for _, r := range []string{dom0, g1, g2, g3} {
		name := b.ns(r)
		if err := sh("ip", "netns", "add", name); err != nil {
			return err
		}
		b.mu.Lock()
		b.nss = append(b.nss, name)
		b.mu.Unlock()
		if err := sh("ip", "-n", name, "link", "set", "lo", "up"); err != nil {
			return err
		}

	}
	d := b.ns(dom0)
	if err := sh("ip", "-n", d, "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := sh("ip", "-n", d, "link", "set", "br0", "up"); err != nil {
		return err
	}
	for i, g := range []string{g1, g2, g3} {
		port := fmt.Sprintf("vp%d", i+1)
		gn := b.ns(g)
		for _, args := range [][]string{
			{"-n", d, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", gn},
			{"-n", d, "link", "set", port, "master", "br0"},
			{"-n", d, "link", "set", port, "up"},
			{"-n", gn, "addr", "add", fmt.Sprintf("10.200.0.%d/24", i+1), "dev", "eth0"},
			{"-n", gn, "link", "set", "eth0", "up"},
		} {
			if err := sh("ip", args...); err != nil {
				return err
			}
		}
	}
	for _, port := range []string{"5201", "5202"} {
		if err := b.start(g2, "iperf3", "-s", "-J", "-p", port); err != nil {
			return err
		}
	}
	// Wait for the bridge ports and the servers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := exec.Command("ip", "netns", "exec", b.ns(g1), "ping", "-c", "1", "-W", "1", "10.200.0.2").Run()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("guests cannot reach each other across the bridge: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// in runs fn with this OS thread in dom0.
func (b *bench) in(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(b.ns(dom0))
	if err != nil {
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		panic("bench-shaping: cannot return to the original network namespace: " + err.Error())
	}
	return ferr
}

type shaper struct {
	apply, clear func(rate uint64) error
	// counter says where to read the bytes sent in direction dir: a device
	// and an HTB class ("" for the root qdisc).
	counter func(dir string) (dev, class string, err error)
}

func (b *bench) withShape() shaper {
	return shaper{
		apply: func(r uint64) error {
			return b.in(func() error {
				return shape.ApplyPort(shape.PortLimits{Port: "vp1", ToGuest: shape.Limit{Rate: r}, FromGuest: shape.Limit{Rate: r}})
			})
		},
		clear: func(uint64) error { return b.in(func() error { return shape.RemovePort("vp1") }) },
		counter: func(dir string) (string, string, error) {
			return b.portCounter("vp1", dir)
		},
	}
}

// portCounter asks shape where a port's direction is queued.
func (b *bench) portCounter(port, dir string) (dev, class string, err error) {
	var st shape.PortStatus
	err = b.in(func() (err error) { st, err = shape.Describe(port); return err })
	ds := st.FromGuest
	if dir == "to guest" {
		ds = st.ToGuest
	}
	if err == nil && ds.Device == "" {
		err = fmt.Errorf("%s is not shaped %s: %s", port, dir, st)
	}
	return ds.Device, ds.Class, err
}

func (b *bench) withTBF() shaper {
	d := b.ns(dom0)
	return shaper{
		apply: func(r uint64) error {
			rate := fmt.Sprintf("%dbit", r)
			for _, args := range [][]string{
				{"qdisc", "replace", "dev", "vp1", "root", "tbf", "rate", rate, "burst", "16kb", "latency", "25ms"},
				{"qdisc", "replace", "dev", "vp1", "handle", "ffff:", "ingress"},
				{"filter", "replace", "dev", "vp1", "parent", "ffff:", "protocol", "all", "prio", "1", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "brsbtbf"},
				{"qdisc", "replace", "dev", "brsbtbf", "root", "tbf", "rate", rate, "burst", "16kb", "latency", "25ms"},
			} {
				if strings.Contains(strings.Join(args, " "), "ingress") {
					_ = sh("ip", "-n", d, "link", "add", "brsbtbf", "type", "ifb")
					_ = sh("ip", "-n", d, "link", "set", "brsbtbf", "up")
				}
				if err := sh("tc", append([]string{"-n", d}, args...)...); err != nil {
					return err
				}
			}
			return nil
		},
		clear: func(uint64) error {
			_ = sh("tc", "-n", d, "qdisc", "del", "dev", "vp1", "root")
			_ = sh("tc", "-n", d, "qdisc", "del", "dev", "vp1", "ingress")
			return sh("ip", "-n", d, "link", "del", "brsbtbf")
		},
		counter: func(dir string) (string, string, error) {
			if dir == "to guest" {
				return "vp1", "", nil
			}
			return "brsbtbf", "", nil
		},
	}
}

func (b *bench) table(rates []uint64, mk func() shaper) error {
	s := mk()
	fmt.Printf("%-12s %-12s %14s %8s %16s %8s\n", "configured", "direction", "achieved (L2)", "error", "iperf3 goodput", "retrans")
	for _, r := range rates {
		if err := s.apply(r); err != nil {
			return err
		}
		for _, dir := range []string{"to guest", "from guest"} {
			dev, class, err := s.counter(dir)
			if err != nil {
				return err
			}
			// vp1 is g1's port: from guest = g1 sends; to guest = g2 sends (-R).
			f := flow{from: g1, args: []string{"-c", "10.200.0.2", "-p", "5201"}, dev: dev, class: class}
			if dir == "to guest" {
				f.args = append(f.args, "-R")
			}
			res, err := b.measure([]flow{f})
			if err != nil {
				return err
			}
			a := res[0]
			fmt.Printf("%-12s %-12s %14s %+7.1f%% %16s %8d\n", shape.FormatRate(r), dir, mbit(a.achieved), 100*(a.achieved-float64(r))/float64(r), mbit(a.goodput), a.retrans)
		}
		if err := s.clear(r); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) aggregate() error {
	const total = 100e6
	fmt.Printf("aggregate %s per direction over vp1 (priority high) and vp3 (low), no per-port limits;\n", shape.FormatRate(total))
	fmt.Printf("guaranteed shares by weight 4:1 -> high %s, low %s when both saturate it:\n", shape.FormatRate(total*4/5), shape.FormatRate(total/5))
	err := b.in(func() error {
		if err := shape.ApplyNetwork(shape.NetworkSpec{Network: "bench", ToGuest: shape.Limit{Rate: total}, FromGuest: shape.Limit{Rate: total}}); err != nil {
			return err
		}
		if err := shape.ApplyPort(shape.PortLimits{Port: "vp1", Network: "bench", Priority: shape.High}); err != nil {
			return err
		}
		return shape.ApplyPort(shape.PortLimits{Port: "vp3", Network: "bench", Priority: shape.Low})
	})
	if err != nil {
		return err
	}
	defer b.in(func() error {
		return errors.Join(shape.RemovePort("vp1"), shape.RemovePort("vp3"), shape.RemoveNetwork("bench"))
	})
	fmt.Printf("%-12s %-12s %16s %16s %16s\n", "direction", "who sends", "high (vp1)", "low (vp3)", "sum")
	for _, dir := range []string{"to guest", "from guest"} {
		var flows [2]flow
		for i, port := range []string{"vp1", "vp3"} {
			dev, class, err := b.portCounter(port, dir)
			if err != nil {
				return err
			}
			from, srv := g1, "5201"
			if port == "vp3" {
				from, srv = g3, "5202"
			}
			flows[i] = flow{from: from, args: []string{"-c", "10.200.0.2", "-p", srv}, dev: dev, class: class}
			if dir == "to guest" {
				flows[i].args = append(flows[i].args, "-R")
			}
		}
		for _, who := range []string{"both", "high alone", "low alone"} {
			var fs []flow
			switch who {
			case "both":
				fs = flows[:]
			case "high alone":
				fs = flows[:1]
			default:
				fs = flows[1:]
			}
			res, err := b.measure(fs)
			if err != nil {
				return err
			}
			cols := []string{"-", "-"}
			var sum float64
			for i, f := range fs {
				col := 0
				if f.from == g3 {
					col = 1
				}
				cols[col] = mbit(res[i].achieved)
				sum += res[i].achieved
			}
			fmt.Printf("%-12s %-12s %16s %16s %16s\n", dir, who, cols[0], cols[1], mbit(sum))
		}
	}
	return nil
}

// flow is one iperf3 run and where its shaper counts its bytes.
type flow struct {
	from       string   // client namespace (role)
	args       []string // iperf3 client arguments
	dev, class string   // shaper counter: device, HTB class ("" = root qdisc)
}

// measure runs the flows at once and returns, for each, the shaper's rate
// over the steady window and iperf3's results.
func (b *bench) measure(fs []flow) ([]*result, error) {
	res := make([]*result, len(fs))
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = b.iperf(f.from, f.args...)
		}()
	}
	// Sample the counters while the runs are in their steady part.
	time.Sleep(2 * time.Second)
	before := make([]sample, len(fs))
	for i, f := range fs {
		v, err := b.sent(f.dev, f.class)
		if err != nil {
			return nil, err
		}
		before[i] = v
	}
	time.Sleep(time.Duration(b.secs) * time.Second)
	after := make([]sample, len(fs))
	for i, f := range fs {
		v, err := b.sent(f.dev, f.class)
		if err != nil {
			return nil, err
		}
		after[i] = v
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i := range fs {
		res[i].achieved = float64(after[i].bytes-before[i].bytes) * 8 / after[i].at.Sub(before[i].at).Seconds()
	}
	return res, nil
}

// sample is a byte counter and when it was read.
type sample struct {
	bytes uint64
	at    time.Time
}

// sent reads the bytes sent by an HTB class, or by the root qdisc if class
// is "", over netlink (no process to start: the time of the read is exact).
func (b *bench) sent(dev, class string) (sample, error) {
	var s sample
	err := b.in(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
		if class == "" {
			qs, err := netlink.QdiscList(l)
			if err != nil {
				return err
			}
			for _, q := range qs {
				if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Statistics != nil {
					s = sample{q.Attrs().Statistics.Basic.Bytes, time.Now()}
					return nil
				}
			}
			return fmt.Errorf("%s: no root qdisc counters", dev)
		}
		cs, err := netlink.ClassList(l, 0)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if netlink.HandleStr(c.Attrs().Handle) == class && c.Attrs().Statistics != nil {
				s = sample{c.Attrs().Statistics.Basic.Bytes, time.Now()}
				return nil
			}
		}
		return fmt.Errorf("%s: no class %s", dev, class)
	})
	return s, err
}

type result struct {
	achieved float64 // layer-2 bits/s out of the shaper, steady window
	goodput  float64 // iperf3: bits/s of TCP payload received, whole run
	retrans  int
}

func mbit(v float64) string { return fmt.Sprintf("%.2f Mbit/s", v/1e6) }

func (b *bench) iperf(from string, args ...string) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b.secs+60)*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", b.ns(from), "iperf3", "-J", "-t", strconv.Itoa(b.secs + 3), "-C", b.cc}, args...)
	var out []byte
	var err error
	for attempt := 0; attempt < 30; attempt++ {
		out, err = exec.CommandContext(ctx, "ip", full...).Output()
		// The server may not listen yet, or still be finishing the previous run.
		if !strings.Contains(string(out), "busy") && !strings.Contains(string(out), "refused") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil && len(out) == 0 {
		return nil, fmt.Errorf("iperf3 %s: %v", strings.Join(args, " "), err)
	}
	var j struct {
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return nil, fmt.Errorf("iperf3 output: %v", err)
	}
	if j.Error != "" {
		return nil, fmt.Errorf("iperf3: %s", j.Error)
	}
	return &result{goodput: j.End.SumReceived.BitsPerSecond, retrans: j.End.SumSent.Retransmits}, nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func (b *bench) start(role string, args ...string) error {
	c := exec.Command("ip", append([]string{"netns", "exec", b.ns(role)}, args...)...)
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
	}
	b.mu.Lock()
	b.procs = append(b.procs, c)
	b.mu.Unlock()
	return nil
}

// cleanup kills what the benchmark started (by PID) and deletes its namespaces.
func (b *bench) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	for _, c := range b.procs {
		if c.Process != nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	for _, n := range b.nss {
		if err := exec.Command("ip", "netns", "del", n).Run(); err != nil {
			fmt.Fprintf(os.Stderr, "bench-shaping: ip netns del %s: %v\n", n, err)
		}
	}
}

// busy keeps n OS threads spinning until stop is called.
func busy(n int) (stop func()) {
	var quit atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			x := 0
			for !quit.Load() {
				x++
			}
			_ = x
		}()
	}
	return func() { quit.Store(true); wg.Wait() }
}

func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
