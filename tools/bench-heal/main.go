// Command bench-heal measures self-healing on a network with many guarded
// ports: `network-virtual reconcile` when nothing is missing, reconcile
// after `nft flush ruleset` (a firewall reload), and how long the watcher
// (`network-virtual watch`) takes from the flush to the last port's
// antispoof entries being back, per firewall backend.
//
//	go run ./tools/bench-heal [-bin ./bin] [-ports 200] [-n 3]
//
// As root; everything happens in a network namespace of its own, removed at
// the end.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/vnet"
	"github.com/brouter/brouter/tools/benchkit"
)

func main() {
	bin := flag.String("bin", "./bin", "directory with the built binaries")
	ports := flag.Int("ports", 200, "guarded ports attached to the network")
	n := flag.Int("n", 3, "repetitions per measurement")
	inner := flag.Bool("inner", false, "internal: already inside the benchmark namespace")
	flag.Parse()
	var err error
	if *inner {
		err = run(*bin, *ports, *n)
	} else {
		err = benchkit.InNamespace("brbench-heal", "-inner", "-bin", absPath(*bin), "-ports", fmt.Sprint(*ports), "-n", fmt.Sprint(*n))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-heal:", err)
		os.Exit(1)
	}
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func run(bin string, ports, n int) error {
	dir, cfgPath, err := benchkit.PrivateHost("brbench-heal")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := makeVeths(dir, ports); err != nil {
		return err
	}
	benchkit.Header()
	for _, backend := range []string{"nftables", "iptables"} {
		if err := bench(bin, cfgPath, backend, ports, n); err != nil {
			return fmt.Errorf("%s: %w", backend, err)
		}
	}
	return nil
}

// makeVeths creates veth pairs hp0/gp0 ... in one `ip -batch`.
func makeVeths(dir string, ports int) error {
	var b strings.Builder
	for i := 0; i < ports; i++ {
		fmt.Fprintf(&b, "link add hp%d type veth peer name gp%d\n", i, i)
	}
	batch := filepath.Join(dir, "veths")
	if err := os.WriteFile(batch, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "-batch", batch).CombinedOutput(); err != nil {
		return fmt.Errorf("ip -batch: %v: %s", err, out)
	}
	return nil
}

func guest(i int) (string, net.HardwareAddr, netip.Addr) {
	return fmt.Sprintf("hp%d", i), net.HardwareAddr{0x00, 0x16, 0x3e, 0x01, byte(i >> 8), byte(i)},
		netip.AddrFrom4([4]byte{10, 77, byte(1 + i/250), byte(2 + i%250)})
}

func bench(bin, cfgPath, backend string, ports, n int) error {
	doc := fmt.Sprintf("[network.heal]\nbridge = \"brheal0\"\naddress = \"10.77.0.1/16\"\nfirewall = %q\n", backend)
	if err := os.WriteFile(cfgPath, []byte(doc), 0o644); err != nil {
		return err
	}
	nv := filepath.Join(bin, "network-virtual")
	if _, err := benchkit.TimeCmd(nv, "start", "net=heal"); err != nil {
		return err
	}
	defer benchkit.TimeCmd(nv, "stop", "net=heal")
	cfg, err := config.Load("")
	if err != nil {
		return err
	}
	net := cfg.Networks["heal"]
	m := vnet.New(cfg)
	for i := 0; i < ports; i++ {
		name, mac, ip := guest(i)
		if err := m.Attach(net, vnet.PortRequest{Name: name, GuestMAC: mac, IPs: []netip.Addr{ip}, Antispoof: true}); err != nil {
			return err
		}
	}
	_, _, last := guest(ports - 1)
	lastName, _, _ := guest(ports - 1)
	repaired := func() bool {
		if backend == "nftables" {
			out, err := exec.Command("nft", "list", "set", "bridge", "brouter-heal", "as_ip4").Output()
			return err == nil && strings.Contains(string(out), last.String())
		}
		out, err := exec.Command("ebtables", "-t", "nat", "-L", "BRAS-"+lastName).Output()
		return err == nil && strings.Contains(string(out), last.String())
	}
	if !repaired() {
		return fmt.Errorf("the last port's antispoof entry is not installed")
	}

	var intact, afterFlush, watched []time.Duration
	for i := 0; i < n*3; i++ {
		d, err := benchkit.TimeCmd(nv, "reconcile", "net=heal")
		if err != nil {
			return err
		}
		intact = append(intact, d)
	}
	for i := 0; i < n; i++ {
		if _, err := benchkit.TimeCmd("nft", "flush", "ruleset"); err != nil {
			return err
		}
		d, err := benchkit.TimeCmd(nv, "reconcile", "net=heal")
		if err != nil {
			return err
		}
		if !repaired() {
			return fmt.Errorf("reconcile did not bring back the last port's antispoof entry")
		}
		afterFlush = append(afterFlush, d)
	}
	watch := exec.Command(nv, "watch")
	if err := watch.Start(); err != nil {
		return err
	}
	defer func() { watch.Process.Kill(); watch.Wait() }()
	time.Sleep(500 * time.Millisecond) // its first look at every network
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := benchkit.TimeCmd("nft", "flush", "ruleset"); err != nil {
			return err
		}
		for !repaired() {
			if time.Since(t0) > 3*time.Minute {
				return fmt.Errorf("the watcher did not repair the network within 3 minutes")
			}
			time.Sleep(5 * time.Millisecond)
		}
		watched = append(watched, time.Since(t0))
		time.Sleep(300 * time.Millisecond) // the events of its own repair settle
	}
	what := fmt.Sprintf("(%s, %d guarded ports)", backend, ports)
	benchkit.Report("reconcile, nothing missing "+what, intact)
	benchkit.Report("reconcile after nft flush ruleset "+what, afterFlush)
	benchkit.Report("watch: flush to last port repaired "+what, watched)
	return nil
}
