package firewall

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

// fwdLab is a host ("dom0") with a bridge and two guests behind it, each
// running a TCP and UDP server on ports 80 and 81 that answers its name and
// port ("A:80"), and an "outside" host beyond the uplink:
//
//	guest A 10.0.0.2 fd00::2 ─┐
//	                          br0 10.0.0.1 fd00::1 [dom0] up0 192.0.2.1 198.51.100.1 2001:db8::1 ── outside 192.0.2.2 198.51.100.2 2001:db8::2
//	guest B 10.0.0.3 fd00::3 ─┘
//
// The outside has no route to the guests' subnets: only published ports reach them.
type fwdLab struct {
	t                 *testing.T
	dom0, out, gA, gB *nstest.NS
	b                 Backend
	net               NetworkRules
	portA, portB      string
	fwdA, fwdB        Forwards
	initial, baseline string // dom0's state before Ensure, and after it
}

func newFwdLab(t *testing.T, kind string, dockerHost bool) *fwdLab {
	nstest.RequireRoot(t)
	l := &fwdLab{t: t, dom0: nstest.New(t, "dom0"), out: nstest.New(t, "outside"),
		gA: nstest.New(t, "guesta"), gB: nstest.New(t, "guestb"), portA: "vA", portB: "vB"}
	d := l.dom0
	d.Exec(t, "ip", "link", "add", "br0", "type", "bridge")
	d.Exec(t, "ip", "addr", "add", "10.0.0.1/24", "dev", "br0")
	d.Exec(t, "ip", "addr", "add", "fd00::1/64", "dev", "br0", "nodad")
	d.Exec(t, "ip", "link", "set", "br0", "up")
	for _, g := range []struct {
		ns       *nstest.NS
		port     string
		ip4, ip6 string
	}{{l.gA, l.portA, "10.0.0.2", "fd00::2"}, {l.gB, l.portB, "10.0.0.3", "fd00::3"}} {
		nstest.Veth(t, d, g.port, g.ns, "eth0")
		d.Exec(t, "ip", "link", "set", g.port, "master", "br0")
		// A guest reaching itself through its own published port: where
		// br_netfilter is loaded (Docker hosts; bridge-nf-call-iptables
		// defaults to 1 in every namespace), the DNATed frame is bridged back
		// to the port it came from, which needs hairpin mode on that port (as
		// the CNI bridge plugin's hairpinMode). That is the caller's link setup.
		d.Exec(t, "ip", "link", "set", g.port, "type", "bridge_slave", "hairpin", "on")
		g.ns.Exec(t, "ip", "addr", "add", g.ip4+"/24", "dev", "eth0")
		g.ns.Exec(t, "ip", "addr", "add", g.ip6+"/64", "dev", "eth0", "nodad")
		g.ns.Exec(t, "ip", "route", "add", "default", "via", "10.0.0.1")
		g.ns.Exec(t, "ip", "-6", "route", "add", "default", "via", "fd00::1")
	}
	nstest.Veth(t, d, "up0", l.out, "eth0")
	for _, a := range []string{"192.0.2.1/24", "198.51.100.1/24"} {
		d.Exec(t, "ip", "addr", "add", a, "dev", "up0")
	}
	d.Exec(t, "ip", "addr", "add", "2001:db8::1/64", "dev", "up0", "nodad")
	for _, a := range []string{"192.0.2.2/24", "198.51.100.2/24"} {
		l.out.Exec(t, "ip", "addr", "add", a, "dev", "eth0")
	}
	l.out.Exec(t, "ip", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
	d.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		// Set by the caller (vnet) in real life: 127.0.0.1 may be routed out of the bridge.
		"net.ipv4.conf.br0.route_localnet=1")
	// Rules that are not ours, as a real host has, in every chain we jump from
	// (iptables-nft also never deletes a built-in chain once it made it).
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, c := range []string{"PREROUTING", "OUTPUT", "POSTROUTING"} {
			d.Exec(t, tool, "-t", "nat", "-A", c, "-p", "udp", "--dport", "9", "-j", "RETURN")
		}
		d.Exec(t, tool, "-A", "FORWARD", "-i", "nosuchif", "-j", "ACCEPT")
	}
	if dockerHost {
		l.dom0.Exec(t, "iptables", "-N", "DOCKER-USER")
		l.dom0.Exec(t, "iptables", "-A", "DOCKER-USER", "-j", "RETURN")
		l.dom0.Exec(t, "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
		l.dom0.Exec(t, "iptables", "-P", "FORWARD", "DROP")
	}
	serve(t, l.gA, "A")
	serve(t, l.gB, "B")
	// Let links settle (carrier, neighbours) before anything is measured.
	for _, a := range []string{"10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3", "192.0.2.2", "2001:db8::2"} {
		if err := d.Ping(t, a); err != nil {
			t.Fatalf("dom0 cannot reach %s: %v", a, err)
		}
	}

	l.net = NetworkRules{Network: "fwlab", Bridge: "br0", Subnets: prefixes("10.0.0.0/24", "fd00::/64"),
		Forward: true, Masquerade: true, Antispoof: true, Uplink: "up0"}
	base := Forwards{Network: "fwlab", Bridge: "br0", Subnets: l.net.Subnets}
	l.fwdA, l.fwdB = base, base
	l.fwdA.Port, l.fwdA.Forwards = l.portA, []Forward{
		fwd("tcp", "", 8080, "10.0.0.2", 80),
		fwd("udp", "", 8080, "10.0.0.2", 80),
		fwd("tcp", "192.0.2.1", 9090, "10.0.0.2", 81),
		fwd("tcp", "", 8443, "fd00::2", 80),
	}
	l.fwdB.Port, l.fwdB.Forwards = l.portB, []Forward{fwd("tcp", "", 8081, "10.0.0.3", 80)}

	l.must("New", func() (err error) { l.b, err = New(kind, testRecords(t)); return err })
	l.initial = d.Dump(t)
	l.must("Ensure", func() error { return l.b.Ensure(l.net) })
	l.baseline = d.Dump(t)
	return l
}

func (l *fwdLab) must(what string, fn func() error) {
	l.t.Helper()
	if err := l.dom0.Do(fn); err != nil {
		l.t.Fatalf("%s: %v", what, err)
	}
}

// serve runs TCP and UDP servers on ports 80 and 81 (both families) in ns,
// answering "NAME:PORT"; they stop when the test ends.
func serve(t *testing.T, ns *nstest.NS, name string) {
	for _, port := range []int{80, 81} {
		reply := []byte(fmt.Sprintf("%s:%d\n", name, port))
		var ln net.Listener
		var pc net.PacketConn
		if err := ns.Do(func() (err error) {
			if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
				return err
			}
			pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatalf("listen in %s: %v", ns.Name(), err)
		}
		t.Cleanup(func() { ln.Close(); pc.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write(reply)
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(reply, from)
			}
		}()
	}
}

// ask connects from ns to addr ("tcp" or "udp") and returns the answer.
// A timeout or an unreachable host is retried (UDP, and the first packets
// of a fresh link while ARP and ND resolve, may get lost); a refusal is not.
func ask(ns *nstest.NS, proto, addr string) (string, error) {
	var answer string
	err := ns.Do(func() error {
		var err error
		for try := 0; try < 3; try++ {
			var c net.Conn
			if c, err = net.DialTimeout(proto, addr, 2*time.Second); err == nil {
				_ = c.SetDeadline(time.Now().Add(time.Second))
				if proto == "udp" {
					_, _ = c.Write([]byte("?"))
				}
				answer, err = bufio.NewReader(c).ReadString('\n')
				answer = strings.TrimSpace(answer)
				c.Close()
			}
			var ne net.Error
			if err == nil || !(errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EHOSTUNREACH)) {
				return err
			}
		}
		return err
	})
	return answer, err
}

func (l *fwdLab) expect(from *nstest.NS, proto, addr, want string) {
	l.t.Helper()
	got, err := ask(from, proto, addr)
	if err != nil || got != want {
		l.t.Errorf("%s %s %s: got %q, %v; want %q", from.Name(), proto, addr, got, err, want)
	}
}

func (l *fwdLab) refused(from *nstest.NS, addr string) {
	l.t.Helper()
	if got, err := ask(from, "tcp", addr); err == nil {
		l.t.Errorf("%s tcp %s: answered %q, want no answer", from.Name(), addr, got)
	}
}

func (l *fwdLab) list() []string {
	l.t.Helper()
	var lines []string
	l.must("List", func() (err error) { lines, err = l.b.List(l.net.Network); return err })
	return lines
}

func forwardLines(lines []string, port string) []string {
	return slices.DeleteFunc(slices.Clone(lines), func(s string) bool {
		return !strings.HasPrefix(s, "forward ") || !strings.HasSuffix(s, "(port "+port+")")
	})
}

func TestKernelForwards(t *testing.T) {
	for _, kind := range []string{KindNftables, KindIPTables} {
		for _, dockerHost := range []bool{false, true} {
			name := kind
			if dockerHost {
				name += "/docker"
			}
			t.Run(name, func(t *testing.T) { kernelForwards(t, kind, dockerHost) })
		}
	}
}

func kernelForwards(t *testing.T, kind string, dockerHost bool) {
	l := newFwdLab(t, kind, dockerHost)
	d, out, gA, gB := l.dom0, l.out, l.gA, l.gB
	l.refused(out, "192.0.2.1:8080")

	var n int64
	n = dumps(func() {
		l.must("EnsureForwards A", func() error { return l.b.EnsureForwards(l.fwdA) })
	})
	if kind == KindNftables && n != 0 {
		t.Errorf("EnsureForwards with a right hint read %d maps", n)
	}
	l.must("EnsureForwards B", func() error { return l.b.EnsureForwards(l.fwdB) })
	published := d.Dump(t)
	l.must("EnsureForwards A again", func() error { return l.b.EnsureForwards(l.fwdA) })
	l.must("EnsureForwards B again", func() error { return l.b.EnsureForwards(l.fwdB) })
	if diff := nstest.Diff(published, d.Dump(t)); diff != "" {
		t.Errorf("EnsureForwards again changed the state:\n%s", diff)
	}
	if kind == KindNftables {
		t.Logf("nft list table inet brouter-fwlab.fwd:\n%s", d.Exec(t, "nft", "list", "table", "inet", "brouter-fwlab.fwd"))
	} else {
		t.Logf("iptables-save -t nat:\n%s", d.Exec(t, "iptables-save", "-t", "nat"))
	}
	lines := l.list()
	t.Logf("List:\n%s", strings.Join(lines, "\n"))
	if got, want := forwardLines(lines, "vA"), []string{
		"forward tcp 0.0.0.0:8080 -> 10.0.0.2:80 (port vA)",
		"forward tcp 192.0.2.1:9090 -> 10.0.0.2:81 (port vA)",
		"forward tcp [::]:8443 -> [fd00::2]:80 (port vA)",
		"forward udp 0.0.0.0:8080 -> 10.0.0.2:80 (port vA)",
	}; !slices.Equal(got, want) {
		t.Errorf("List forwards of vA:\n%q\nwant\n%q", got, want)
	}
	linesB := forwardLines(lines, "vB")
	if !slices.Equal(linesB, []string{"forward tcp 0.0.0.0:8081 -> 10.0.0.3:80 (port vB)"}) {
		t.Errorf("List forwards of vB: %q", linesB)
	}

	// From another host, to any of the host's addresses; a specific host
	// address only there.
	l.expect(out, "tcp", "192.0.2.1:8080", "A:80")
	l.expect(out, "tcp", "198.51.100.1:8080", "A:80")
	l.expect(out, "udp", "192.0.2.1:8080", "A:80")
	l.expect(out, "tcp", "192.0.2.1:9090", "A:81")
	l.refused(out, "198.51.100.1:9090")
	l.expect(out, "tcp", "192.0.2.1:8081", "B:80")
	l.expect(out, "tcp", "[2001:db8::1]:8443", "A:80")
	// From the host itself: its uplink and bridge addresses, and localhost.
	l.expect(d, "tcp", "192.0.2.1:8080", "A:80")
	l.expect(d, "tcp", "10.0.0.1:8080", "A:80")
	l.expect(d, "tcp", "127.0.0.1:8080", "A:80")
	l.expect(d, "udp", "127.0.0.1:8080", "A:80")
	l.expect(d, "tcp", "192.0.2.1:9090", "A:81")
	l.refused(d, "127.0.0.1:9090")
	l.expect(d, "tcp", "[2001:db8::1]:8443", "A:80")
	// Hairpin: a guest reaches another guest, and itself, through the host's addresses.
	l.expect(gB, "tcp", "10.0.0.1:8080", "A:80")
	l.expect(gB, "tcp", "192.0.2.1:8080", "A:80")
	l.expect(gB, "udp", "10.0.0.1:8080", "A:80")
	l.expect(gA, "tcp", "10.0.0.1:8080", "A:80")
	l.expect(gA, "tcp", "192.0.2.1:8081", "B:80")
	l.expect(gB, "tcp", "[fd00::1]:8443", "A:80")
	l.expect(gA, "tcp", "[2001:db8::1]:8443", "A:80")

	// A host port of another guest port is refused, and changes nothing.
	steal := l.fwdB
	steal.Forwards = append(slices.Clone(l.fwdB.Forwards), fwd("tcp", "", 8080, "10.0.0.3", 80))
	for _, prev := range []*Forwards{&l.fwdB, nil} {
		var err error
		pretendForwards(t, l.b, l.net.Network, l.portB, prev)
		_ = d.Do(func() error { err = l.b.EnsureForwards(steal); return nil })
		if !errors.Is(err, ErrAlreadyPublished) || err.Error() != "firewall: port vB: tcp 0.0.0.0:8080 is already published by port vA" {
			t.Errorf("publishing a taken port (hint %v): %v", prev != nil, err)
		}
		if diff := nstest.Diff(published, d.Dump(t)); diff != "" {
			t.Errorf("a refused EnsureForwards changed the state:\n%s", diff)
		}
	}
	if kind == KindNftables { // same guest address and port: only the exclusive add catches it
		same := l.fwdB
		same.Forwards = append(slices.Clone(l.fwdB.Forwards), l.fwdA.Forwards[0])
		var err error
		pretendForwards(t, l.b, l.net.Network, l.portB, &l.fwdB)
		_ = d.Do(func() error { err = l.b.EnsureForwards(same); return nil })
		if !errors.Is(err, ErrAlreadyPublished) {
			t.Errorf("publishing a taken port with the same target: %v", err)
		}
	}

	// Replacing a port's forwards changes that port's entries only.
	a2 := l.fwdA
	a2.Forwards = []Forward{
		fwd("tcp", "", 8080, "10.0.0.2", 81),
		fwd("tcp", "", 8443, "fd00::2", 80),
		fwd("tcp", "", 8082, "10.0.0.2", 80),
	}
	n = dumps(func() { l.must("EnsureForwards A2", func() error { return l.b.EnsureForwards(a2) }) })
	if kind == KindNftables && n != 0 {
		t.Errorf("replacing with a right hint read %d maps", n)
	}
	lines = l.list()
	if got := forwardLines(lines, "vB"); !slices.Equal(got, linesB) {
		t.Errorf("replacing vA's forwards changed vB's: %q", got)
	}
	if got := forwardLines(lines, "vA"); len(got) != 3 || !slices.Contains(got, "forward tcp 0.0.0.0:8082 -> 10.0.0.2:80 (port vA)") {
		t.Errorf("vA after replacing: %q", got)
	}
	l.expect(out, "tcp", "192.0.2.1:8080", "A:81")
	l.expect(out, "tcp", "192.0.2.1:8082", "A:80")
	l.refused(out, "192.0.2.1:9090")
	l.expect(out, "tcp", "192.0.2.1:8081", "B:80")

	// A wrong hint still ends exactly at the forwards asked for: doing the
	// same without hint afterwards changes nothing.
	pretendForwards(t, l.b, l.net.Network, l.portA, &a2)
	l.must("EnsureForwards A, wrong hint", func() error { return l.b.EnsureForwards(l.fwdA) })
	pretendForwards(t, l.b, l.net.Network, l.portA, &Forwards{})
	l.must("EnsureForwards A2, wrong hint", func() error { return l.b.EnsureForwards(a2) })
	exact := d.Dump(t)
	pretendForwards(t, l.b, l.net.Network, l.portA, nil)
	l.must("EnsureForwards A2, no hint", func() error { return l.b.EnsureForwards(a2) })
	if diff := nstest.Diff(exact, d.Dump(t)); diff != "" {
		t.Errorf("EnsureForwards with a wrong hint did not end at the forwards asked for:\n%s", diff)
	}

	// Removing every published port leaves the state as before the first one.
	n = dumps(func() {
		l.must("RemoveForwards A", func() error { return l.b.RemoveForwards(l.net.Network, l.portA) })
	})
	if got := forwardLines(l.list(), "vB"); !slices.Equal(got, linesB) {
		t.Errorf("removing vA's forwards changed vB's: %q", got)
	}
	l.expect(out, "tcp", "192.0.2.1:8081", "B:80")
	l.refused(out, "192.0.2.1:8080")
	n += dumps(func() {
		l.must("RemoveForwards B", func() error { return l.b.RemoveForwards(l.net.Network, l.portB) })
	})
	if kind == KindNftables && n != 0 {
		t.Errorf("RemoveForwards with a right hint read %d maps", n)
	}
	if diff := nstest.Diff(l.baseline, d.Dump(t)); diff != "" {
		t.Errorf("RemoveForwards did not restore the state before EnsureForwards:\n%s", diff)
	}
	l.refused(out, "192.0.2.1:8080")
	for _, prev := range []*Forwards{nil, &Forwards{}, &l.fwdA} {
		pretendForwards(t, l.b, l.net.Network, l.portA, prev)
		l.must("RemoveForwards again", func() error { return l.b.RemoveForwards(l.net.Network, l.portA) })
	}
	if diff := nstest.Diff(l.baseline, d.Dump(t)); diff != "" {
		t.Errorf("RemoveForwards again changed the state:\n%s", diff)
	}

	// The network's Ensure keeps published ports (and their masquerade).
	l.must("EnsureForwards A", func() error { return l.b.EnsureForwards(l.fwdA) })
	l.must("Ensure", func() error { return l.b.Ensure(l.net) })
	l.expect(out, "tcp", "192.0.2.1:8080", "A:80")
	l.expect(gB, "tcp", "10.0.0.1:8080", "A:80")
	l.expect(d, "tcp", "127.0.0.1:8080", "A:80")
	// Remove(network) takes them with it.
	l.must("Remove", func() error { return l.b.Remove(l.net.Network) })
	if diff := nstest.Diff(nstest.WithoutEmptyBuiltins(l.initial), nstest.WithoutEmptyBuiltins(d.Dump(t))); diff != "" {
		t.Errorf("Remove did not restore the initial state:\n%s", diff)
	}
}

// EnsurePort/RemovePort with hints, in the kernel: a right hint reads no set
// (nftables), and any hint ends exactly at the entries asked for (an
// unhinted call afterwards changes nothing).
func TestKernelPortHints(t *testing.T) {
	for _, kind := range []string{KindNftables, KindIPTables} {
		t.Run(kind, func(t *testing.T) {
			nstest.RequireRoot(t)
			host := nstest.New(t, "host")
			foreignPortState(t, host)
			var b Backend
			in := func(what string, fn func() error) {
				t.Helper()
				if err := host.Do(fn); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}
			in("New", func() (err error) { b, err = New(kind, testRecords(t)); return err })
			initial := host.Dump(t)
			nw := NetworkRules{Network: "hint", Bridge: "br0", Subnets: prefixes("10.60.0.0/24"), Forward: true, Masquerade: true}
			in("Ensure", func() error { return b.Ensure(nw) })
			// Another guarded port, whose entries must stay as they are.
			other := PortRules{Network: "hint", Port: "vif9.0", Bridged: true, MAC: mustMAC("52:54:00:00:00:09"), IPs: addrs("10.60.0.9")}
			in("EnsurePort other", func() error { return b.EnsurePort(other) })
			var otherLines []string
			in("List", func() (err error) { otherLines, err = b.List("hint"); return err })
			p := PortRules{Network: "hint", Port: "vif1.0", Bridged: true, MAC: mustMAC("52:54:00:00:00:01"), IPs: addrs("10.60.0.2", "fd60::2")}
			moved := p
			moved.IPs = addrs("10.60.0.3")
			routed := moved
			routed.Bridged = false
			wrong := p
			wrong.MAC, wrong.IPs = mustMAC("52:54:00:00:00:77"), addrs("10.60.0.77")

			type step struct {
				name       string
				want, prev *PortRules
				read       bool
			}
			for _, s := range []step{
				{"first", &p, &PortRules{}, false},
				{"unchanged", &p, &p, false},
				{"new addresses", &moved, &p, false},
				{"routed", &routed, &moved, false},
				{"bridged", &p, &routed, false},
				{"wrong hint", &moved, &wrong, true},
				{"removed, wrong hint", nil, &p, true},
				{"kernel has none, hint says some", &p, &moved, true},
				{"removed", nil, &p, false},
			} {
				var err error
				n := dumps(func() {
					err = host.Do(func() error {
						pretendGuard(t, b, "hint", p.Port, s.prev)
						if s.want == nil {
							return b.RemovePort("hint", p.Port)
						}
						return b.EnsurePort(*s.want)
					})
				})
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				if kind == KindNftables && (n > 0) != s.read {
					t.Errorf("%s: %d sets read, want reading: %v", s.name, n, s.read)
				}
				state := host.Dump(t)
				in(s.name+", no hint", func() error {
					pretendGuard(t, b, "hint", p.Port, nil)
					if s.want == nil {
						return b.RemovePort("hint", p.Port)
					}
					return b.EnsurePort(*s.want)
				})
				if d := nstest.Diff(state, host.Dump(t)); d != "" {
					t.Errorf("%s: did not end at the entries asked for:\n%s", s.name, d)
				}
			}
			var lines []string
			in("List", func() (err error) { lines, err = b.List("hint"); return err })
			for _, l := range otherLines {
				if strings.Contains(l, "vif9.0") && !slices.Contains(lines, l) {
					t.Errorf("the other port lost %q", l)
				}
			}
			if slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "vif1.0") }) {
				t.Errorf("entries of the removed port are left:\n%s", strings.Join(lines, "\n"))
			}
			in("Remove", func() error { return b.Remove("hint") })
			if d := nstest.Diff(initial, host.Dump(t)); d != "" {
				t.Errorf("Remove did not restore the initial state:\n%s", d)
			}
		})
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// The rule count does not grow with published ports (nftables): 200 guest
// ports with 2 published ports each are 400 map elements. With hints, no map
// is read. Also reports EnsureForwards/RemoveForwards latency (not asserted).
func TestKernelForwardScale(t *testing.T) {
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
	fwds := func(i int) Forwards {
		guest := netip.AddrFrom4([4]byte{10, 70, byte(i >> 8), byte(i)})
		return Forwards{Network: "scale", Bridge: "br0", Subnets: prefixes("10.70.0.0/16"), Port: fmt.Sprintf("vif%d.0", i),
			Forwards: []Forward{
				{Proto: "tcp", HostPort: uint16(10000 + i), GuestIP: guest, GuestPort: 80},
				{Proto: "udp", HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: uint16(10000 + i), GuestIP: guest, GuestPort: 53},
			}}
	}
	rules := func() (n int, elems int) {
		out := host.Exec(t, "nft", "-a", "list", "table", "inet", "brouter-scale.fwd")
		return len(nftRuleRE.FindAllString(out, -1)), strings.Count(out, `comment "vif`)
	}
	in("EnsureForwards", func() error { return b.EnsureForwards(fwds(0)) })
	one, _ := rules()
	var ens, rem []time.Duration
	n := dumps(func() {
		for i := 1; i < 200; i++ {
			in("EnsureForwards", func() error {
				start := time.Now()
				err := b.EnsureForwards(fwds(i))
				ens = append(ens, time.Since(start))
				return err
			})
		}
	})
	if got, elems := rules(); got != one || elems != 400 {
		t.Errorf("200 ports: %d rules (%d with 1 port), %d elements (want 400)", got, one, elems)
	}
	n += dumps(func() {
		for i := 199; i >= 0; i-- {
			f := fwds(i)
			in("RemoveForwards", func() error {
				start := time.Now()
				err := b.RemoveForwards("scale", f.Port)
				rem = append(rem, time.Since(start))
				return err
			})
		}
	})
	if n != 0 {
		t.Errorf("EnsureForwards/RemoveForwards with right hints read %d maps", n)
	}
	t.Logf("nftables, up to 200 ports: EnsureForwards p50 %v, RemoveForwards p50 %v", p50(ens), p50(rem))
	if out := host.Exec(t, "nft", "list", "ruleset"); strings.Contains(out, "brouter") {
		t.Errorf("removing every published port left:\n%s", out)
	}
}
