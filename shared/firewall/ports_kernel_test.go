package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

// portLab is a host namespace with one guest port under test (guest1) and,
// when bridged, a second guest on the same bridge (guest2, never guarded).
type portLab struct {
	t              *testing.T
	host, g1, g2   *nstest.NS
	b              Backend
	net            NetworkRules
	port           PortRules
	gw4, gw6       string // the host's addresses
	peer4          string // guest2's address (bridged only)
	own4, own6     string // guest1's addresses
	spoof4, spoof6 string // extra addresses guest1 gives itself
}

// in runs fn inside the host namespace (commands it runs inherit it).
func (l *portLab) in(fn func() error) error {
	l.t.Helper()
	return l.host.Do(fn)
}

func (l *portLab) must(what string, fn func() error) {
	l.t.Helper()
	if err := l.in(fn); err != nil {
		l.t.Fatalf("%s: %v", what, err)
	}
}

// foreignPortState gives the host rules that are not ours in every table the
// port code uses (as a real host has), so that "remove leaves the state as it
// was" is checked against a table that existed before, and our jumps must sit
// before someone else's ACCEPT.
func foreignPortState(t *testing.T, ns *nstest.NS) {
	for _, c := range [][]string{
		{"iptables", "-A", "FORWARD", "-i", "nosuchport", "-j", "ACCEPT"},
		{"ip6tables", "-A", "FORWARD", "-i", "nosuchport", "-j", "ACCEPT"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "RETURN"},
		{"ebtables", "-t", "nat", "-A", "PREROUTING", "-i", "nosuchport", "-j", "ACCEPT"},
		{"arptables", "-A", "INPUT", "-i", "nosuchport", "-j", "ACCEPT"},
		{"iptables", "-t", "raw", "-A", "PREROUTING", "-i", "nosuchport", "-j", "ACCEPT"},
		{"ip6tables", "-t", "raw", "-A", "PREROUTING", "-i", "nosuchport", "-j", "ACCEPT"},
		{"nft", "add table bridge other; add chain bridge other pre { type filter hook prerouting priority 0; }; add rule bridge other pre counter"},
	} {
		ns.Exec(t, c...)
	}
}

func newPortLab(t *testing.T, kind string, bridged bool) *portLab {
	nstest.RequireRoot(t)
	l := &portLab{t: t, host: nstest.New(t, "host"), g1: nstest.New(t, "guest1"),
		gw4: "10.50.0.1", gw6: "fd50::1", own4: "10.50.0.11", own6: "fd50::11",
		spoof4: "10.50.0.99", spoof6: "fd50::99", peer4: "10.50.0.12"}
	h := l.host
	port := "vg1"
	if bridged {
		l.g2 = nstest.New(t, "guest2")
		// No link-local address: it would appear only once the bridge has carrier.
		h.Exec(t, "ip", "link", "add", "br0", "type", "bridge")
		h.Exec(t, "ip", "link", "set", "br0", "addrgenmode", "none")
		nstest.Veth(t, h, "vg1", l.g1, "eth0")
		nstest.Veth(t, h, "vg2", l.g2, "eth0")
		for _, p := range []string{"vg1", "vg2"} {
			h.Exec(t, "ip", "link", "set", p, "master", "br0")
		}
		h.Exec(t, "ip", "addr", "add", l.gw4+"/24", "dev", "br0")
		h.Exec(t, "ip", "addr", "add", l.gw6+"/64", "dev", "br0", "nodad")
		h.Exec(t, "ip", "link", "set", "br0", "up")
		l.g2.Exec(t, "ip", "addr", "add", l.peer4+"/24", "dev", "eth0")
		l.g2.Exec(t, "ip", "addr", "add", "fd50::12/64", "dev", "eth0", "nodad")
	} else {
		// Xen route mode: the guest's port is the host's L3 interface.
		port = "vif1.0"
		nstest.Veth(t, h, port, l.g1, "eth0")
		h.Exec(t, "ip", "addr", "add", l.gw4+"/24", "dev", port)
		h.Exec(t, "ip", "addr", "add", l.gw6+"/64", "dev", port, "nodad")
	}
	l.g1.Exec(t, "ip", "addr", "add", l.own4+"/24", "dev", "eth0")
	l.g1.Exec(t, "ip", "addr", "add", l.own6+"/64", "dev", "eth0", "nodad")
	l.g1.Exec(t, "ip", "addr", "add", l.spoof4+"/24", "dev", "eth0")
	l.g1.Exec(t, "ip", "addr", "add", l.spoof6+"/64", "dev", "eth0", "nodad")
	foreignPortState(t, h)

	mac, err := net.ParseMAC(l.g1.ReadSys(t, "eth0/address"))
	if err != nil {
		t.Fatal(err)
	}
	l.port = PortRules{Network: "astest", Port: port, MAC: mac, Bridged: bridged,
		IPs: []netip.Addr{netip.MustParseAddr(l.own4), netip.MustParseAddr(l.own6)}}
	l.net = NetworkRules{Network: "astest", Bridge: "br0", Subnets: prefixes("10.50.0.0/24", "fd50::/64"),
		Forward: true, Masquerade: true}
	if !bridged {
		// A mode route network: no bridge, routed, never masqueraded.
		l.net.Bridge, l.net.Masquerade = "", false
	}
	l.must("New", func() (err error) { l.b, err = New(kind, testRecords(t)); return err })
	// Let links settle (carrier, port states) before anyone takes a snapshot:
	// the kernel reports a carrier change up to a second late.
	l.reach(l.own4, l.gw4)
	for i := 0; i < 50 && strings.Contains(h.Exec(t, "ip", "link", "show", map[bool]string{true: "br0", false: port}[bridged]), "NO-CARRIER"); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	return l
}

// ping from src (guest1's address) to dst; tries is 3 when a reply is
// expected (ARP, port states), 1 when not.
func pingFrom(ns *nstest.NS, src, dst string, tries int) error {
	var err error
	for i := 0; i < tries; i++ {
		if _, err = ns.Try("ping", "-n", "-q", "-c", "1", "-W", "1", "-I", src, dst); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

func (l *portLab) reach(src, dst string) {
	l.t.Helper()
	if err := pingFrom(l.g1, src, dst, 3); err != nil {
		l.t.Errorf("guest1 %s → %s: want a reply: %v", src, dst, err)
	}
}

func (l *portLab) blocked(src, dst string) {
	l.t.Helper()
	if err := pingFrom(l.g1, src, dst, 1); err == nil {
		l.t.Errorf("guest1 %s → %s: got a reply, want it dropped", src, dst)
	}
}

// arping sends ARP requests for the gateway with the given sender IP; true when answered.
func (l *portLab) arping(sender string) bool {
	_, err := l.g1.Try("busybox", "arping", "-q", "-c", "2", "-w", "2", "-I", "eth0", "-s", sender, l.gw4)
	return err == nil
}

// dhcp runs a DHCP exchange from guest1 (DISCOVER from 0.0.0.0) against a
// udhcpd in the host namespace, sending up to tries DISCOVERs; nil when a lease came back.
func (l *portLab) dhcp(ifname string, tries int) error {
	dir := l.t.TempDir()
	conf := filepath.Join(dir, "udhcpd.conf")
	body := fmt.Sprintf("interface %s\nstart 10.50.0.100\nend 10.50.0.150\nlease_file %s\npidfile %s\noption subnet 255.255.255.0\n",
		ifname, filepath.Join(dir, "leases"), filepath.Join(dir, "pid"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "leases"), nil, 0o600); err != nil {
		l.t.Fatal(err)
	}
	srv := l.host.Start(l.t, "busybox", "udhcpd", "-f", conf)
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(200 * time.Millisecond)
	// -s /bin/true: take the lease, change nothing in the guest.
	_, err := l.g1.Try("busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", strconv.Itoa(tries), "-T", "1", "-s", "/bin/true")
	return err
}

func TestKernelPortAntispoof(t *testing.T) {
	for _, kind := range []string{KindNftables, KindIPTables} {
		for _, bridged := range []bool{true, false} {
			name := kind + "/routed"
			if bridged {
				name = kind + "/bridged"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel() // each in its own namespaces; mostly waiting for pings that must fail
				portAntispoof(t, kind, bridged)
			})
		}
	}
}

func portAntispoof(t *testing.T, kind string, bridged bool) {
	l := newPortLab(t, kind, bridged)
	h, g1 := l.host, l.g1
	begin := h.Dump(t)
	l.must("Ensure", func() error { return l.b.Ensure(l.net) })
	beforePort := h.Dump(t)

	// Unguarded, spoofing works: that is what the guard is for.
	l.reach(l.spoof4, l.gw4)
	l.reach(l.spoof6, l.gw6)

	l.must("EnsurePort", func() error { return l.b.EnsurePort(l.port) })
	guarded := h.Dump(t)
	l.must("EnsurePort again", func() error { return l.b.EnsurePort(l.port) })
	if d := nstest.Diff(guarded, h.Dump(t)); d != "" {
		t.Errorf("second EnsurePort changed the state:\n%s", d)
	}
	if kind == KindNftables {
		t.Logf("guarded:\n%s", h.Exec(t, "nft", "list", "ruleset"))
	}
	var lines []string
	l.must("List", func() (err error) { lines, err = l.b.List(l.net.Network); return err })
	if !slices.ContainsFunc(lines, func(s string) bool { return strings.Contains(s, l.port.Port) }) {
		t.Errorf("List does not show the port:\n%s", strings.Join(lines, "\n"))
	}

	// Flush the neighbour caches so that every check below starts with ARP/ND.
	flush := func() {
		for _, ns := range []*nstest.NS{h, g1} {
			ns.Exec(t, "ip", "neigh", "flush", "all")
		}
	}
	flush()
	l.reach(l.own4, l.gw4)
	l.reach(l.own6, l.gw6)
	if bridged {
		l.reach(l.own4, l.peer4)
		l.reach(l.own6, "fd50::12")
	}
	l.blocked(l.spoof4, l.gw4)
	l.blocked(l.spoof6, l.gw6)
	if bridged {
		l.blocked(l.spoof4, l.peer4)
	}
	if !l.arping(l.own4) {
		t.Errorf("ARP from the guest's own address got no reply")
	}
	if l.arping(l.spoof4) {
		t.Errorf("ARP from a spoofed sender address got a reply")
	}
	if err := l.dhcp(l.iface(), 3); err != nil {
		t.Errorf("DHCP from 0.0.0.0 did not get a lease: %v", err)
	}

	// Another MAC: everything is dropped, whatever the address.
	g1.Exec(t, "ip", "link", "set", "eth0", "address", "02:00:00:50:00:99")
	flush()
	l.blocked(l.own4, l.gw4)
	l.blocked(l.own6, l.gw6)
	if err := l.dhcp(l.iface(), 1); err == nil {
		t.Errorf("DHCP from a spoofed MAC got a lease")
	}
	g1.Exec(t, "ip", "link", "set", "eth0", "address", l.port.MAC.String())
	flush()
	l.reach(l.own4, l.gw4)

	// New addresses replace the old ones atomically.
	moved := l.port
	moved.IPs = []netip.Addr{netip.MustParseAddr(l.spoof4), netip.MustParseAddr(l.spoof6)}
	l.must("EnsurePort (new addresses)", func() error { return l.b.EnsurePort(moved) })
	flush()
	l.reach(l.spoof4, l.gw4)
	l.reach(l.spoof6, l.gw6)
	l.blocked(l.own4, l.gw4)
	l.must("EnsurePort (old addresses)", func() error { return l.b.EnsurePort(l.port) })
	if d := nstest.Diff(guarded, h.Dump(t)); d != "" {
		t.Errorf("EnsurePort back to the first addresses differs from the first EnsurePort:\n%s", d)
	}

	// Network Ensure keeps the port's guard.
	l.must("Ensure again", func() error { return l.b.Ensure(l.net) })
	flush()
	l.blocked(l.spoof4, l.gw4)
	if d := nstest.Diff(guarded, h.Dump(t)); d != "" {
		t.Errorf("network Ensure changed the port's guard:\n%s", d)
	}

	for i := range 2 {
		l.must("RemovePort", func() error { return l.b.RemovePort(l.net.Network, l.port.Port) })
		if d := nstest.Diff(beforePort, h.Dump(t)); d != "" {
			t.Errorf("RemovePort #%d did not restore the state before EnsurePort:\n%s", i+1, d)
		}
	}
	flush()
	l.reach(l.spoof4, l.gw4)
	l.reach(l.spoof6, l.gw6)

	// Remove(network) takes guarded ports with it.
	l.must("EnsurePort", func() error { return l.b.EnsurePort(l.port) })
	l.must("Remove", func() error { return l.b.Remove(l.net.Network) })
	if d := nstest.Diff(begin, h.Dump(t)); d != "" {
		t.Errorf("Remove did not restore the initial state:\n%s", d)
	}
	l.must("Remove again", func() error { return l.b.Remove(l.net.Network) })
}

// A port that switches kind (bridged ↔ routed) keeps no entry of the old kind.
func TestKernelPortKindChange(t *testing.T) {
	for _, kind := range []string{KindNftables, KindIPTables} {
		t.Run(kind, func(t *testing.T) {
			l := newPortLab(t, kind, true)
			begin := l.host.Dump(t)
			p := l.port
			l.must("EnsurePort bridged", func() error { return l.b.EnsurePort(p) })
			p.Bridged = false
			l.must("EnsurePort routed", func() error { return l.b.EnsurePort(p) })
			if out, _ := l.host.Try("nft", "list", "set", "bridge", "brouter-astest", "as_ports"); strings.Contains(out, "vg1") {
				t.Errorf("bridge set entry left after switching to routed:\n%s", out)
			}
			if out := l.host.Exec(t, "ebtables-save"); strings.Contains(out, "BRAS") {
				t.Errorf("ebtables chains left after switching to routed:\n%s", out)
			}
			var lines []string
			l.must("List", func() (err error) { lines, err = l.b.List(p.Network); return err })
			if !slices.ContainsFunc(lines, func(s string) bool { return strings.Contains(s, "vg1") }) {
				t.Errorf("List does not show the routed port:\n%s", strings.Join(lines, "\n"))
			}
			l.must("RemovePort", func() error { return l.b.RemovePort(p.Network, p.Port) })
			// Port tables stay with the network (empty) until it is removed.
			l.must("Remove", func() error { return l.b.Remove(p.Network) })
			if d := nstest.Diff(begin, l.host.Dump(t)); d != "" {
				t.Errorf("RemovePort and Remove did not restore the state:\n%s", d)
			}
		})
	}
}

var nftRuleRE = regexp.MustCompile(`(?m)^\t\t[^\t].*# handle \d+$`)

// The rule count does not grow with the number of guarded ports: 200 ports
// are 200 × 5 set elements (as_ports, as_mac, as_ip4, as_ip6, as_nd6). Also reports EnsurePort/RemovePort latency (not asserted).
func TestKernelPortScale(t *testing.T) {
	nstest.RequireRoot(t)
	host := nstest.New(t, "host")
	var b Backend
	in := func(what string, fn func() error) {
		t.Helper()
		if err := host.Do(fn); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	in("New", func() (err error) { b, err = New(KindNftables, testRecords(t)); return err })
	port := func(i int) PortRules {
		return PortRules{Network: "scale", Port: fmt.Sprintf("vif%d.0", i), Bridged: true,
			MAC: net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)},
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 51, byte(i >> 8), byte(i)}), netip.MustParseAddr(fmt.Sprintf("fd51::%x", i+1))}}
	}
	rules := func() (n int, elems int) {
		out := host.Exec(t, "nft", "-a", "list", "table", "bridge", "brouter-scale")
		n = len(nftRuleRE.FindAllString(out, -1))
		return n, strings.Count(out, `"vif`)
	}
	in("EnsurePort", func() error { return b.EnsurePort(port(0)) })
	one, _ := rules()
	if one == 0 {
		t.Fatalf("no rules counted in:\n%s", host.Exec(t, "nft", "-a", "list", "table", "bridge", "brouter-scale"))
	}
	for i := 1; i < 200; i++ {
		in("EnsurePort", func() error { return b.EnsurePort(port(i)) })
	}
	n, elems := rules()
	if n != one {
		t.Errorf("rule count grew with the ports: %d with 1 port, %d with 200", one, n)
	}
	if elems != 200*5 {
		t.Errorf("%d set elements for 200 ports, want 1000", elems)
	}
	t.Logf("200 ports: %d rules, %d set elements", n, elems)

	// Different ports of one network in parallel lose nothing (vnet
	// serializes a network's operations, but nothing here relies on it
	// except a table's deletion with its last port).
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 300; i < 320; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- host.Do(func() error { return b.EnsurePort(port(i)) })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n, elems := rules(); n != one || elems != 220*5 {
		t.Errorf("after 20 parallel EnsurePort: %d rules, %d elements; want %d, %d", n, elems, one, 220*5)
	}

	// Latency at 200 existing ports (p50 of 50 calls each).
	var ens, same, repl, rem []time.Duration
	for i := 200; i < 250; i++ {
		in("latency", func() error {
			start := time.Now()
			if err := b.EnsurePort(port(i)); err != nil {
				return err
			}
			ens = append(ens, time.Since(start))
			start = time.Now()
			if err := b.EnsurePort(port(i)); err != nil {
				return err
			}
			same = append(same, time.Since(start))
			p := port(i)
			p.IPs = p.IPs[:1]
			start = time.Now()
			if err := b.EnsurePort(p); err != nil {
				return err
			}
			repl = append(repl, time.Since(start))
			start = time.Now()
			if err := b.RemovePort("scale", port(i).Port); err != nil {
				return err
			}
			rem = append(rem, time.Since(start))
			return nil
		})
	}
	t.Logf("nftables at 200 ports: EnsurePort p50 %v (new port), %v (unchanged), %v (one address less), RemovePort p50 %v",
		p50(ens), p50(same), p50(repl), p50(rem))

	// The same with the caller's record as hint: no set is read.
	ens, same, repl, rem = nil, nil, nil, nil
	read := dumps(func() {
		for i := 200; i < 250; i++ {
			in("latency, hinted", func() error {
				p := port(i)
				start := time.Now()
				if err := b.EnsurePort(p); err != nil {
					return err
				}
				ens = append(ens, time.Since(start))
				start = time.Now()
				if err := b.EnsurePort(p); err != nil {
					return err
				}
				same = append(same, time.Since(start))
				less := p
				less.IPs = p.IPs[:1]
				start = time.Now()
				if err := b.EnsurePort(less); err != nil {
					return err
				}
				repl = append(repl, time.Since(start))
				start = time.Now()
				if err := b.RemovePort("scale", p.Port); err != nil {
					return err
				}
				rem = append(rem, time.Since(start))
				return nil
			})
		}
	})
	if read != 0 {
		t.Errorf("EnsurePort/RemovePort with right hints read %d sets", read)
	}
	if n, elems := rules(); n != one || elems != 220*5 {
		t.Errorf("after the hinted calls: %d rules, %d elements; want %d, %d", n, elems, one, 220*5)
	}
	t.Logf("nftables at 200 ports, with hints: EnsurePort p50 %v (new port), %v (unchanged), %v (one address less), RemovePort p50 %v",
		p50(ens), p50(same), p50(repl), p50(rem))
	in("Remove", func() error { return b.Remove("scale") })
	if out := host.Exec(t, "nft", "list", "ruleset"); strings.Contains(out, "brouter") {
		t.Errorf("Remove left:\n%s", out)
	}
}

// Latency of the iptables backend's per-port chains (bridged: ebtables), for the report.
func TestKernelPortLatencyIPTables(t *testing.T) {
	nstest.RequireRoot(t)
	host := nstest.New(t, "host")
	var b Backend
	if err := host.Do(func() (err error) { b, err = New(KindIPTables, testRecords(t)); return err }); err != nil {
		t.Fatal(err)
	}
	var ens, rem []time.Duration
	for i := 0; i < 50; i++ {
		p := PortRules{Network: "lat", Port: fmt.Sprintf("vif%d.0", i), Bridged: true,
			MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(i + 1)}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 52, 0, byte(i + 1)})}}
		if err := host.Do(func() error {
			start := time.Now()
			if err := b.EnsurePort(p); err != nil {
				return err
			}
			ens = append(ens, time.Since(start))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		if err := host.Do(func() error {
			start := time.Now()
			if err := b.RemovePort("lat", fmt.Sprintf("vif%d.0", i)); err != nil {
				return err
			}
			rem = append(rem, time.Since(start))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("iptables (ebtables) bridged: EnsurePort p50 %v, RemovePort p50 %v", p50(ens), p50(rem))
	if out := host.Exec(t, "ebtables-save"); strings.Contains(out, "BRAS") || strings.Contains(out, "BROUTER-AS") {
		t.Errorf("RemovePort left:\n%s", out)
	}
}

func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// iface is the host interface the guest's traffic arrives on: the bridge, or
// the guest's own port in a mode route network.
func (l *portLab) iface() string {
	if l.net.Bridge != "" {
		return l.net.Bridge
	}
	return l.port.Port
}

// TestKernelSyncPorts: with four guarded ports of one network, another
// tool empties one port's chain (set), drops a port's jump and deletes a
// port's chain; SyncPorts, given all four, puts back exactly what
// EnsurePort made (dumps compared) in one batch, and the guest's spoofed
// source is dropped again while its own address passes.
func TestKernelSyncPorts(t *testing.T) {
	breakers := map[string][][]string{
		KindIPTables: {
			{"ebtables", "-t", "nat", "-F", "BRAS-vg1"},
			{"ebtables", "-t", "nat", "-D", "BROUTER-AS-astest", "-i", "vx2", "-j", "BRAS-vx2"},
			{"ebtables", "-t", "nat", "-D", "BROUTER-AS-astest", "-i", "vx3", "-j", "BRAS-vx3"},
			{"ebtables", "-t", "nat", "-F", "BRAS-vx3"},
			{"ebtables", "-t", "nat", "-X", "BRAS-vx3"},
		},
		KindNftables: {
			{"nft", "flush", "set", "bridge", "brouter-astest", "as_ports"},
			{"nft", "flush", "set", "bridge", "brouter-astest", "as_mac"},
		},
	}
	for _, kind := range []string{KindNftables, KindIPTables} {
		t.Run(kind, func(t *testing.T) {
			l := newPortLab(t, kind, true)
			ports := []PortRules{l.port}
			for i := 1; i <= 3; i++ {
				ports = append(ports, PortRules{Network: "astest", Port: fmt.Sprintf("vx%d", i), Bridged: true,
					MAC: net.HardwareAddr{2, 0, 0, 0, 9, byte(i)}, IPs: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.50.0.%d", 20+i))}})
			}
			for _, p := range ports {
				l.must("EnsurePort "+p.Port, func() error { return l.b.EnsurePort(p) })
			}
			want := l.host.Dump(t)
			l.blocked(l.spoof4, l.gw4)
			for _, c := range breakers[kind] {
				l.host.Exec(t, c...)
			}
			l.reach(l.spoof4, l.gw4) // the control: the guard is really gone
			l.must("SyncPorts", func() error { return l.b.SyncPorts("astest", ports) })
			if d := nstest.Diff(want, l.host.Dump(t)); d != "" {
				t.Errorf("SyncPorts did not restore what EnsurePort made:\n%s", d)
			}
			l.blocked(l.spoof4, l.gw4)
			l.reach(l.own4, l.gw4)
		})
	}
}
