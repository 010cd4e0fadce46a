package firewall

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func guest() PortRules {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	return PortRules{Network: "lab", Port: "vif1.0", MAC: mac, Bridged: true,
		IPs: addrs("10.7.0.11", "fd00:7::11", "10.7.0.12", "10.7.0.11")}
}

func TestPortValidate(t *testing.T) {
	mod := func(f func(*PortRules)) PortRules {
		p := guest()
		f(&p)
		return p
	}
	bad := map[string]PortRules{
		"network":       mod(func(p *PortRules) { p.Network = "a b" }),
		"empty port":    mod(func(p *PortRules) { p.Port = "" }),
		"long port":     mod(func(p *PortRules) { p.Port = "vif1234567.12345" }),
		"port quote":    mod(func(p *PortRules) { p.Port = `vif"1` }),
		"port space":    mod(func(p *PortRules) { p.Port = "vif1 accept" }),
		"port dotdot":   mod(func(p *PortRules) { p.Port = ".." }),
		"no MAC":        mod(func(p *PortRules) { p.MAC = nil }),
		"8-byte MAC":    mod(func(p *PortRules) { p.MAC = net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8} }),
		"multicast MAC": mod(func(p *PortRules) { p.MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }),
		"zero MAC":      mod(func(p *PortRules) { p.MAC = make(net.HardwareAddr, 6) }),
		"invalid IP":    mod(func(p *PortRules) { p.IPs = []netip.Addr{{}} }),
		"0.0.0.0":       mod(func(p *PortRules) { p.IPs = addrs("0.0.0.0") }),
		"::":            mod(func(p *PortRules) { p.IPs = addrs("::") }),
		"multicast4":    mod(func(p *PortRules) { p.IPs = addrs("224.0.0.1") }),
		"multicast6":    mod(func(p *PortRules) { p.IPs = addrs("ff02::1") }),
		"broadcast":     mod(func(p *PortRules) { p.IPs = addrs("255.255.255.255") }),
		"loopback":      mod(func(p *PortRules) { p.IPs = addrs("127.0.0.1") }),
		"4in6":          mod(func(p *PortRules) { p.IPs = addrs("::ffff:10.0.0.1") }),
		"zone":          mod(func(p *PortRules) { p.IPs = addrs("fe80::1%eth0") }),
	}
	for name, p := range bad {
		err := p.validate()
		if err == nil || !strings.HasPrefix(err.Error(), "firewall: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: validate(%+v) = %v, want a one-line firewall: error", name, p, err)
		}
		if err := NewFake().EnsurePort(p); err == nil {
			t.Errorf("%s: Fake.EnsurePort accepted %+v", name, p)
		}
	}
	for _, p := range []PortRules{guest(), mod(func(p *PortRules) { p.IPs = nil }), mod(func(p *PortRules) { p.IPs = addrs("169.254.1.1", "fe80::1") })} {
		if err := p.validate(); err != nil {
			t.Errorf("validate(%+v) = %v", p, err)
		}
	}
	for _, ref := range [][2]string{{"", "vif1.0"}, {"lab", ""}, {"lab", "x/y"}} {
		if err := NewFake().RemovePort(ref[0], ref[1]); err == nil {
			t.Errorf("RemovePort(%q, %q) accepted", ref[0], ref[1])
		}
	}
}

// The port tables are set up with a fixed set of rules, and setting them up
// again (Ensure, or a concurrent EnsurePort) keeps one copy of each rule.
func TestNftPortSetup(t *testing.T) {
	fake := knftables.NewFake("", "")
	run := func() string {
		tx := fake.NewTransaction()
		for _, tb := range nftPortTables("lab") {
			nftPortSetup(tx, tb, "lab")
		}
		if err := fake.Run(context.Background(), tx); err != nil {
			t.Fatalf("run %s: %v", tx, err)
		}
		return fake.Dump()
	}
	first := run()
	for _, want := range []string{
		"add table bridge brouter-lab",
		"add table inet brouter-lab.ports",
		"add table arp brouter-lab",
		"add set bridge brouter-lab as_mac { type ifname . ether_addr ; }",
		"add set inet brouter-lab.ports as_ip6 { type ifname . ipv6_addr ; }",
		"add chain bridge brouter-lab prerouting { type filter hook prerouting priority -200 ; }",
		"add chain inet brouter-lab.ports prerouting { type filter hook prerouting priority -300 ; }",
		"add chain arp brouter-lab input { type filter hook input priority 0 ; }",
		"add rule bridge brouter-lab prerouting iifname @as_ports jump antispoof",
		"add rule bridge brouter-lab antispoof iifname . ether saddr != @as_mac drop",
		"add rule bridge brouter-lab antispoof ether type { 8021q, 8021ad } drop",
		"add rule bridge brouter-lab antispoof_arp iifname . arp saddr ip @as_ip4 accept",
		"add rule bridge brouter-lab antispoof_ip4 ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
		"add rule bridge brouter-lab antispoof drop",
		"add rule bridge brouter-lab antispoof_ip6 ip6 saddr { ::, fe80::/10 } accept",
		"add rule inet brouter-lab.ports antispoof meta nfproto ipv6 jump antispoof_ip6",
		"add rule arp brouter-lab input iifname @as_ports jump antispoof_arp",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("missing %q in:\n%s", want, first)
		}
	}
	if strings.Contains(first, "add set arp brouter-lab as_ip6") {
		t.Errorf("the arp table has an IPv6 set:\n%s", first)
	}
	if again := run(); again != first {
		t.Errorf("setting up again changed the tables:\n%s\n---\n%s", first, again)
	}
}

func syncPort(t *testing.T, f *fakeNL, network, port string, want *PortRules) {
	t.Helper()
	missing, err := planPortSync(f, network, port, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		f.create(missing)
		if missing, err = planPortSync(f, network, port, want); err != nil || len(missing) > 0 {
			t.Fatalf("second sync: missing %v, %v", missing, err)
		}
	}
}

// EnsurePort/RemovePort as set element changes: a port's elements only, the
// old ones replaced, tables created on demand and deleted with their last port.
func TestPlanPortSync(t *testing.T) {
	f := newFakeNL()
	g := guest()
	syncPort(t, f, "lab", g.Port, &g)
	want := []string{
		"bridge brouter-lab",
		`bridge brouter-lab as_ip4 "vif1.0" . 10.7.0.11`,
		`bridge brouter-lab as_ip4 "vif1.0" . 10.7.0.12`,
		`bridge brouter-lab as_ip6 "vif1.0" . fd00:7::11`,
		`bridge brouter-lab as_mac "vif1.0" . 52:54:00:12:34:56`,
		`bridge brouter-lab as_nd6 "vif1.0" . fd00:7::11`,
		`bridge brouter-lab as_ports "vif1.0"`,
	}
	if got := f.dump(); !slices.Equal(got, want) {
		t.Errorf("after EnsurePort:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	syncPort(t, f, "lab", g.Port, &g)
	if got := f.dump(); !slices.Equal(got, want) {
		t.Errorf("EnsurePort is not idempotent:\n%s", strings.Join(got, "\n"))
	}

	// A second port, with a name the first one's is a prefix of.
	other := guest()
	other.Port, other.MAC, other.IPs = "vif1.01", net.HardwareAddr{2, 0, 0, 0, 0, 1}, addrs("10.7.0.13")
	syncPort(t, f, "lab", other.Port, &other)

	// New addresses replace the old ones; the other port keeps its entries.
	g.IPs = addrs("10.7.0.14")
	syncPort(t, f, "lab", g.Port, &g)
	want = []string{
		"bridge brouter-lab",
		`bridge brouter-lab as_ip4 "vif1.0" . 10.7.0.14`,
		`bridge brouter-lab as_ip4 "vif1.01" . 10.7.0.13`,
		`bridge brouter-lab as_mac "vif1.0" . 52:54:00:12:34:56`,
		`bridge brouter-lab as_mac "vif1.01" . 02:00:00:00:00:01`,
		`bridge brouter-lab as_ports "vif1.0"`,
		`bridge brouter-lab as_ports "vif1.01"`,
	}
	if got := f.dump(); !slices.Equal(got, want) {
		t.Errorf("after replacing addresses:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Routed: inet and arp tables; the port leaves the bridge table.
	g.Bridged = false
	syncPort(t, f, "lab", g.Port, &g)
	got := strings.Join(f.dump(), "\n")
	for _, w := range []string{
		`inet brouter-lab.ports as_ip4 "vif1.0" . 10.7.0.14`,
		`arp brouter-lab as_mac "vif1.0" . 52:54:00:12:34:56`,
		`bridge brouter-lab as_ports "vif1.01"`,
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in\n%s", w, got)
		}
	}
	if strings.Contains(got, `bridge brouter-lab as_ports "vif1.0"`+"\n") || strings.Contains(got, "arp brouter-lab as_ip6") {
		t.Errorf("unexpected entries:\n%s", got)
	}

	// A failed batch changes nothing.
	f.failOn = errors.New("boom")
	if _, err := planPortSync(f, "lab", g.Port, nil); err == nil {
		t.Errorf("planPortSync ignored a failed flush")
	}
	f.failOn = nil
	if now := strings.Join(f.dump(), "\n"); now != got {
		t.Errorf("a failed batch changed the state:\n%s", now)
	}

	// Removing the last port of a table leaves the table, empty (it goes with
	// the network, so that the next port is only a set change); again is fine.
	for range 2 {
		syncPort(t, f, "lab", g.Port, nil)
		syncPort(t, f, "lab", other.Port, nil)
	}
	for _, l := range f.dump() {
		if strings.Contains(l, " as_") {
			t.Errorf("after removing every port, an entry is left: %q", l)
		}
	}
}

func TestKeys(t *testing.T) {
	g := guest()
	if k := keyMAC(g.Port, g.MAC); len(k) != 24 || describeKey(setMAC, k) != `"vif1.0" . 52:54:00:12:34:56` {
		t.Errorf("keyMAC = %x (%s)", k, describeKey(setMAC, k))
	}
	if k := keyAddr(g.Port, netip.MustParseAddr("fd00::1")); len(k) != 32 || describeKey(setIP6, k) != `"vif1.0" . fd00::1` {
		t.Errorf("keyAddr = %x", k)
	}
	if k := keyIfname("vif1.0"); len(k) != 16 || bytes.HasPrefix(keyIfname("vif1.01"), k) {
		t.Errorf("keyIfname is not NUL-padded to 16 bytes: %x", k)
	}
}

func TestPortSpecs(t *testing.T) {
	g := guest()
	join := func(specs [][]string) []string {
		var out []string
		for _, s := range specs {
			out = append(out, strings.Join(s, " "))
		}
		return out
	}
	check := func(name string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s:\ngot  %q\nwant %q", name, got, want)
		}
	}
	check("ebtables", join(ebtSpecs(g)), []string{
		"-s ! 52:54:00:12:34:56 -j DROP",
		"-p 802_1Q -j DROP",
		"-p 0x88a8 -j DROP",
		"-p ARP --arp-mac-src ! 52:54:00:12:34:56 -j DROP",
		"-p ARP --arp-ip-src 0.0.0.0 -j RETURN",
		"-p ARP --arp-ip-src 10.7.0.11 -j RETURN",
		"-p ARP --arp-ip-src 10.7.0.12 -j RETURN",
		"-p ARP -j DROP",
		"-p IPv4 --ip-proto udp --ip-sport 67 -j DROP",
		"-p IPv4 --ip-src 10.7.0.11 -j RETURN",
		"-p IPv4 --ip-src 10.7.0.12 -j RETURN",
		"-p IPv4 --ip-src 0.0.0.0 --ip-dst 255.255.255.255 --ip-proto udp --ip-sport 68 --ip-dport 67 -j RETURN",
		"-p IPv4 -j DROP",
		"-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type 134 -j DROP",
		"-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type 137 -j DROP",
		"-p IPv6 --ip6-proto udp --ip6-sport 547 -j DROP",
		"-p IPv6 --ip6-src fd00:7::11 -j RETURN",
		"-p IPv6 --ip6-src fe80::/10 -j RETURN",
		"-p IPv6 --ip6-src ::/128 -j RETURN",
		"-p IPv6 -j DROP",
		"-j DROP",
	})
	check("iptables", join(iptPortSpecs(g, 4)), []string{
		"-m mac ! --mac-source 52:54:00:12:34:56 -j DROP",
		"-p udp --sport 67 -j DROP",
		"-s 10.7.0.11 -j RETURN",
		"-s 10.7.0.12 -j RETURN",
		"-s 0.0.0.0 -d 255.255.255.255 -p udp --sport 68 --dport 67 -j RETURN",
		"-j DROP",
	})
	check("ip6tables", join(iptPortSpecs(g, 6)), []string{
		"-m mac ! --mac-source 52:54:00:12:34:56 -j DROP",
		"-p ipv6-icmp --icmpv6-type 134 -j DROP",
		"-p ipv6-icmp --icmpv6-type 137 -j DROP",
		"-p udp --sport 547 -j DROP",
		"-s fd00:7::11 -j RETURN",
		"-s fe80::/10 -j RETURN",
		"-s ::/128 -j RETURN",
		"-j DROP",
	})
	check("arptables", join(arptSpecs(g)), []string{
		"! --source-mac 52:54:00:12:34:56 -j DROP",
		"-s 0.0.0.0 -j RETURN",
		"-s 10.7.0.11 -j RETURN",
		"-s 10.7.0.12 -j RETURN",
		"-j DROP",
	})
	if asDispatchChain("abcdefghijklmno") != "BROUTER-AS-abcdefghijklmno" || len(asDispatchChain("abcdefghijklmno")) > 28 {
		t.Errorf("dispatch chain name too long for iptables")
	}
	if !sameRule([]string{"-j", "BRAS-x", "-i", "x"}, []string{"-i", "x", "-j", "BRAS-x"}) ||
		sameRule([]string{"-i", "x", "-j", "BRAS-x"}, []string{"-i", "y", "-j", "BRAS-x"}) {
		t.Errorf("sameRule")
	}
}

func TestFakePorts(t *testing.T) {
	f := NewFake()
	g := guest()
	if err := f.EnsurePort(g); err != nil {
		t.Fatal(err)
	}
	g.IPs[0] = netip.MustParseAddr("10.7.0.99") // the Fake keeps its own copy
	got, ok := f.Port("lab", "vif1.0")
	if !ok || got.IPs[0] != netip.MustParseAddr("10.7.0.11") || !got.Bridged || got.MAC.String() != "52:54:00:12:34:56" {
		t.Errorf("Port = %+v, %v", got, ok)
	}
	h := guest()
	h.Port = "vif2.0"
	if err := f.EnsurePort(h); err != nil {
		t.Fatal(err)
	}
	if p := f.Ports("lab"); !slices.Equal(p, []string{"vif1.0", "vif2.0"}) {
		t.Errorf("Ports = %q", p)
	}
	if l, _ := f.List("lab"); len(l) != 2 || !strings.HasPrefix(l[0], "port vif1.0: 52:54:00:12:34:56 10.7.0.11") {
		t.Errorf("List = %q", l)
	}
	for range 2 {
		if err := f.RemovePort("lab", "vif1.0"); err != nil {
			t.Fatal(err)
		}
	}
	if p := f.Ports("lab"); !slices.Equal(p, []string{"vif2.0"}) {
		t.Errorf("Ports after RemovePort = %q", p)
	}
	boom := errors.New("boom")
	f.FailWith(boom)
	if err := f.EnsurePort(g); !errors.Is(err, boom) {
		t.Errorf("EnsurePort with FailWith = %v", err)
	}
	f.FailWith(nil)
	if err := f.Remove("lab"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Port("lab", "vif2.0"); ok {
		t.Errorf("Remove(network) kept its ports")
	}
}

// Without ebtables the iptables backend cannot guard a bridged port, and says
// which package to install, before touching anything.
func TestIPTablesPortMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := (&iptBackend{}).EnsurePort(guest())
	if err == nil || !strings.HasPrefix(err.Error(), "firewall: iptables: port vif1.0: ebtables not found") ||
		!strings.Contains(err.Error(), "Debian package iptables") || strings.Contains(err.Error(), "\n") {
		t.Errorf("EnsurePort without ebtables = %v", err)
	}
	routed := guest()
	routed.Bridged = false
	b := &iptBackend{v4: &iptFamily{family: 4, cmd: "iptables"}}
	if err := b.EnsurePort(routed); err == nil || !strings.Contains(err.Error(), "ip6tables not found") {
		t.Errorf("routed EnsurePort without ip6tables = %v", err)
	}
}

// A port whose guest's addresses are unknown gets the service rules only:
// no DHCP server replies, router advertisements or redirects from it.
func TestServiceGuard(t *testing.T) {
	p := PortRules{Network: "lab", Port: "tap0", Bridged: true, ServiceOnly: true}
	if err := p.validate(); err != nil {
		t.Fatal(err)
	}
	if bad := (PortRules{Network: "lab", Port: "tap0", ServiceOnly: true, MAC: guest().MAC}); bad.validate() == nil {
		t.Error("a service-only port with a MAC validated")
	}
	join := func(specs [][]string) string {
		var out []string
		for _, s := range specs {
			out = append(out, strings.Join(s, " "))
		}
		return strings.Join(out, "\n")
	}
	for name, c := range map[string]struct{ got, want string }{
		"ebtables": {join(ebtSpecs(p)), "-p IPv4 --ip-proto udp --ip-sport 67 -j DROP\n" +
			"-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type 134 -j DROP\n-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type 137 -j DROP\n" +
			"-p IPv6 --ip6-proto udp --ip6-sport 547 -j DROP"},
		"iptables":  {join(iptPortSpecs(p, 4)), "-p udp --sport 67 -j DROP"},
		"ip6tables": {join(iptPortSpecs(p, 6)), "-p ipv6-icmp --icmpv6-type 134 -j DROP\n-p ipv6-icmp --icmpv6-type 137 -j DROP\n-p udp --sport 547 -j DROP"},
		"arptables": {join(arptSpecs(p)), ""},
	} {
		if c.got != c.want {
			t.Errorf("%s:\ngot\n%s\nwant\n%s", name, c.got, c.want)
		}
	}
	var svc, ip6 []string
	for _, c := range nftGuardChains(nftBridged) {
		switch c.name {
		case nftServiceChain:
			svc = c.rules
		case nftGuardChain[inIP6]:
			ip6 = c.rules
		}
	}
	wantSvc := []string{
		"ether type ip udp sport 67 drop",
		"ether type ip6 icmpv6 type { nd-router-advert, nd-redirect } drop",
		"ether type ip6 udp sport 547 drop",
	}
	if !slices.Equal(svc, wantSvc) {
		t.Errorf("nft service chain:\n%s\nwant\n%s", strings.Join(svc, "\n"), strings.Join(wantSvc, "\n"))
	}
	// A guarded port meets the service rules first, then neighbour discovery's.
	wantIP6 := []string{
		"icmpv6 type { nd-router-advert, nd-redirect } drop",
		"udp sport 547 drop",
		"icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @as_nd6 @th,64,16 & 0xffc0 != 0xfe80 drop",
		"ip6 saddr :: icmpv6 type nd-neighbor-solicit iifname . @th,64,128 != @as_nd6 @th,64,16 & 0xffc0 != 0xfe80 drop",
	}
	if len(ip6) < len(wantIP6) || !slices.Equal(ip6[:len(wantIP6)], wantIP6) {
		t.Errorf("nft antispoof_ip6:\n%s\nwant first\n%s", strings.Join(ip6, "\n"), strings.Join(wantIP6, "\n"))
	}
	table := nftPortTables("lab")[0]
	if el := table.portElements(p); len(el) != 1 || len(el[setSvc]) != 1 {
		t.Errorf("service-only elements: %v", el)
	}
}
