package firewall

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	gnftables "github.com/google/nftables"
	"sigs.k8s.io/knftables"
)

func fwd(proto, host string, hostPort uint16, guest string, guestPort uint16) Forward {
	fw := Forward{Proto: proto, HostPort: hostPort, GuestIP: netip.MustParseAddr(guest), GuestPort: guestPort}
	if host != "" {
		fw.HostIP = netip.MustParseAddr(host)
	}
	return fw
}

// guestA and guestB are two guest ports of network "lab" with published ports.
func guestA() Forwards {
	return Forwards{Network: "lab", Bridge: "br0", Subnets: prefixes("10.0.0.0/24", "fd00::/64"), Port: "vA", Forwards: []Forward{
		fwd("tcp", "", 8080, "10.0.0.2", 80),
		fwd("udp", "", 8080, "10.0.0.2", 80),
		fwd("tcp", "192.0.2.1", 9090, "10.0.0.2", 22),
		fwd("tcp", "", 8443, "fd00::2", 443),
		fwd("sctp", "2001:db8::1", 9999, "fd00::2", 9),
	}}
}

func guestB() Forwards {
	f := guestA()
	f.Port, f.Forwards = "vB", []Forward{fwd("tcp", "", 8081, "10.0.0.3", 80)}
	return f
}

func TestForwardValidate(t *testing.T) {
	mod := func(f func(*Forwards)) Forwards {
		x := guestA()
		f(&x)
		return x
	}
	set := func(fw Forward) Forwards { return mod(func(x *Forwards) { x.Forwards = []Forward{fw} }) }
	good := fwd("tcp", "", 8080, "10.0.0.2", 80)
	bad := map[string]Forwards{
		"network":          mod(func(x *Forwards) { x.Network = "a.b" }),
		"port":             mod(func(x *Forwards) { x.Port = "vA accept" }),
		"no port":          mod(func(x *Forwards) { x.Port = "" }),
		"bridge":           mod(func(x *Forwards) { x.Bridge = `br"0` }),
		"no bridge":        mod(func(x *Forwards) { x.Bridge = "" }),
		"subnet":           mod(func(x *Forwards) { x.Subnets = prefixes("10.0.0.1/24") }),
		"proto":            set(fwd("icmp", "", 8080, "10.0.0.2", 80)),
		"empty proto":      set(fwd("", "", 8080, "10.0.0.2", 80)),
		"TCP":              set(fwd("TCP", "", 8080, "10.0.0.2", 80)),
		"host port 0":      set(fwd("tcp", "", 0, "10.0.0.2", 80)),
		"guest port 0":     set(fwd("tcp", "", 8080, "10.0.0.2", 0)),
		"no guest":         set(Forward{Proto: "tcp", HostPort: 1, GuestPort: 1}),
		"guest 4in6":       set(fwd("tcp", "", 8080, "::ffff:10.0.0.2", 80)),
		"guest zone":       set(fwd("tcp", "", 8080, "fe80::2%eth0", 80)),
		"guest multicast":  set(fwd("tcp", "", 8080, "224.0.0.1", 80)),
		"guest loopback":   set(fwd("tcp", "", 8080, "127.0.0.1", 80)),
		"guest broadcast":  set(fwd("tcp", "", 8080, "255.255.255.255", 80)),
		"guest 0.0.0.0":    set(fwd("tcp", "", 8080, "0.0.0.0", 80)),
		"guest link-local": set(fwd("tcp", "", 8080, "fe80::2", 80)),
		"host family":      set(fwd("tcp", "2001:db8::1", 8080, "10.0.0.2", 80)),
		"host 4in6":        set(fwd("tcp", "::ffff:192.0.2.1", 8080, "10.0.0.2", 80)),
		"host multicast":   set(fwd("tcp", "224.0.0.1", 8080, "10.0.0.2", 80)),
		"host broadcast":   set(fwd("tcp", "255.255.255.255", 8080, "10.0.0.2", 80)),
		"host 0.0.0.0":     set(fwd("tcp", "0.0.0.0", 8080, "10.0.0.2", 80)),
		"host ::":          set(fwd("tcp", "::", 8080, "fd00::2", 80)),
		"host ::1":         set(fwd("tcp", "::1", 8080, "fd00::2", 80)),
		"host zone":        set(fwd("tcp", "fe80::1%eth0", 8080, "fd00::2", 80)),
		"duplicate":        mod(func(x *Forwards) { x.Forwards = []Forward{good, fwd("tcp", "", 8080, "10.0.0.3", 81)} }),
		"duplicate host":   mod(func(x *Forwards) { x.Forwards = append(x.Forwards, fwd("tcp", "192.0.2.1", 9090, "10.0.0.9", 9)) }),
	}
	for name, f := range bad {
		err := f.validate()
		if err == nil || !strings.HasPrefix(err.Error(), "firewall: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: validate(%+v) = %v, want a one-line firewall: error", name, f, err)
			continue
		}
		if name != "network" && name != "port" && name != "no port" && name != "bridge" && name != "subnet" && !strings.Contains(err.Error(), "port "+f.Port+":") {
			t.Errorf("%s: %v does not name the port", name, err)
		}
		if err := NewFake().EnsureForwards(f); err == nil {
			t.Errorf("%s: Fake.EnsureForwards accepted %+v", name, f)
		}
	}
	if err := bad["host ::1"].validate(); !strings.Contains(err.Error(), "::1") {
		t.Errorf("error does not name the value: %v", err)
	}
	for name, f := range map[string]Forwards{
		"guest A": guestA(),
		// A dual-stack guest publishes the same port for both families.
		"dual stack": set(good), "v4 and v6 on one port": mod(func(x *Forwards) {
			x.Forwards = []Forward{good, fwd("tcp", "", 8080, "fd00::2", 80)}
		}),
		"any and specific":         mod(func(x *Forwards) { x.Forwards = []Forward{good, fwd("tcp", "192.0.2.1", 8080, "10.0.0.3", 80)} }),
		"tcp and udp":              mod(func(x *Forwards) { x.Forwards = []Forward{good, fwd("udp", "", 8080, "10.0.0.2", 80)} }),
		"localhost only":           set(fwd("tcp", "127.0.0.1", 8080, "10.0.0.2", 80)),
		"none, without bridge":     mod(func(x *Forwards) { x.Bridge, x.Forwards = "", nil }),
		"port 65535":               set(fwd("udp", "", 65535, "10.0.0.2", 65535)),
		"public guest, private ip": set(fwd("tcp", "198.51.100.7", 80, "192.168.1.2", 80)),
	} {
		if err := f.validate(); err != nil {
			t.Errorf("%s: validate = %v", name, err)
		}
	}
	for _, ref := range [][2]string{{"", "vA"}, {"lab", ""}, {"lab", "a/b"}} {
		if err := NewFake().RemoveForwards(ref[0], ref[1]); err == nil {
			t.Errorf("RemoveForwards(%q, %q) accepted", ref[0], ref[1])
		}
	}
}

func TestForwardElements(t *testing.T) {
	for _, tt := range []struct {
		fw       Forward
		set      string
		key, val []byte
		line     string
	}{{
		fw: fwd("tcp", "", 8080, "10.0.0.2", 80), set: fwdMap4Any,
		key: []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, val: []byte{10, 0, 0, 2, 0, 80, 0, 0},
		line: "forward tcp 0.0.0.0:8080 -> 10.0.0.2:80 (port vA)",
	}, {
		fw: fwd("udp", "192.0.2.1", 53, "10.0.0.2", 5353), set: fwdMap4,
		key: []byte{192, 0, 2, 1, 17, 0, 0, 0, 0, 53, 0, 0}, val: []byte{10, 0, 0, 2, 0x14, 0xe9, 0, 0},
		line: "forward udp 192.0.2.1:53 -> 10.0.0.2:5353 (port vA)",
	}, {
		fw: fwd("sctp", "", 1, "fd00::2", 65535), set: fwdMap6Any,
		key: []byte{132, 0, 0, 0, 0, 1, 0, 0}, val: append(netip.MustParseAddr("fd00::2").AsSlice(), 0xff, 0xff, 0, 0),
		line: "forward sctp [::]:1 -> [fd00::2]:65535 (port vA)",
	}, {
		fw: fwd("tcp", "2001:db8::1", 443, "fd00::2", 8443), set: fwdMap6,
		key: append(netip.MustParseAddr("2001:db8::1").AsSlice(), 6, 0, 0, 0, 1, 0xbb, 0, 0), val: append(netip.MustParseAddr("fd00::2").AsSlice(), 0x20, 0xfb, 0, 0),
		line: "forward tcp [2001:db8::1]:443 -> [fd00::2]:8443 (port vA)",
	}} {
		set, key, val := tt.fw.element()
		if set != tt.set || !slices.Equal(key, tt.key) || !slices.Equal(val, tt.val) {
			t.Errorf("%v: element = %s %x : %x, want %s %x : %x", tt.fw, set, key, val, tt.set, tt.key, tt.val)
		}
		back, err := forwardFromElement(set, key, val)
		if err != nil || back != tt.fw {
			t.Errorf("%v: decoded back as %v, %v", tt.fw, back, err)
		}
		if l := ForwardLine("vA", tt.fw); l != tt.line {
			t.Errorf("ForwardLine = %q, want %q", l, tt.line)
		}
	}
	if _, err := forwardFromElement(fwdMap4, []byte{1, 2}, nil); err == nil {
		t.Errorf("a short key decoded")
	}
}

// The published-ports table: fixed rules, set up again without duplicates.
func TestNftFwdSetup(t *testing.T) {
	fake := knftables.NewFake("", "")
	run := func(bridge string, subnets []netip.Prefix) string {
		tx := fake.NewTransaction()
		nftFwdSetup(tx, "lab", bridge, subnets)
		if err := fake.Run(context.Background(), tx); err != nil {
			t.Fatalf("run %s: %v", tx, err)
		}
		return fake.Dump()
	}
	first := run("br0", prefixes("10.0.0.0/24", "fd00::/64"))
	for _, want := range []string{
		"add table inet brouter-lab.fwd { comment \"brouter network lab: published ports\" ; }",
		"add map inet brouter-lab.fwd fwd4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service ; }",
		"add map inet brouter-lab.fwd fwd6any { type inet_proto . inet_service : ipv6_addr . inet_service ; }",
		"add map inet brouter-lab.fwd own4 { type ipv4_addr . inet_proto . inet_service : ifname ; }",
		"add map inet brouter-lab.fwd own6any { type inet_proto . inet_service : ifname ; }",
		"add chain inet brouter-lab.fwd prerouting { type nat hook prerouting priority -100 ; }",
		"add chain inet brouter-lab.fwd output { type nat hook output priority -100 ; }",
		"add chain inet brouter-lab.fwd postrouting { type nat hook postrouting priority 100 ; }",
		"add rule inet brouter-lab.fwd prerouting fib daddr type local jump published",
		"add rule inet brouter-lab.fwd output fib daddr type local jump published",
		"add rule inet brouter-lab.fwd published dnat ip to ip daddr . meta l4proto . th dport map @fwd4",
		"add rule inet brouter-lab.fwd published dnat ip6 to meta l4proto . th dport map @fwd6any",
		`add rule inet brouter-lab.fwd postrouting oifname "br0" ct status dnat ip saddr 10.0.0.0/24 masquerade`,
		`add rule inet brouter-lab.fwd postrouting oifname "br0" ct status dnat ip saddr 127.0.0.0/8 masquerade`,
		`add rule inet brouter-lab.fwd postrouting oifname "br0" ct status dnat ip6 saddr fd00::/64 masquerade`,
	} {
		if !strings.Contains(first, want) {
			t.Errorf("missing %q in:\n%s", want, first)
		}
	}
	// The rule-based use count: 4 chains and 4 maps, no anonymous set.
	if n := len(nftFwdChains("br0", nil)) + len(nftFwdMaps); n != nftFwdBase || strings.Contains(first, "{ 10.") {
		t.Errorf("nftFwdBase = %d, the table has %d chains and maps (or an anonymous set)", nftFwdBase, n)
	}
	if again := run("br0", prefixes("10.0.0.0/24", "fd00::/64")); again != first {
		t.Errorf("setting up again changed the table:\n%s\n---\n%s", first, again)
	}
	if moved := run("br1", prefixes("10.1.0.0/24")); strings.Contains(moved, `"br0"`) || !strings.Contains(moved, `oifname "br1" ct status dnat ip saddr 10.1.0.0/24 masquerade`) {
		t.Errorf("setting up for another bridge kept the old rules:\n%s", moved)
	}
}

func TestTableUse(t *testing.T) {
	for _, u := range []uint32{0, 8, 9, 300} {
		if got := tableUse(&gnftables.Table{Use: u}); got != u {
			t.Errorf("tableUse(%d) = %d", u, got)
		}
		if got := tableUse(&gnftables.Table{Use: swap32(u)}); u != 0 && got != u {
			t.Errorf("tableUse(swapped %d) = %d", u, got)
		}
	}
}

func swap32(u uint32) uint32 { return u>>24 | (u>>8)&0xff00 | (u<<8)&0xff0000 | u<<24 }

func TestIPTForwardSpecs(t *testing.T) {
	v4, v6 := &iptFamily{family: 4, cmd: "iptables"}, &iptFamily{family: 6, cmd: "ip6tables"}
	a := guestA()
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
	check("v4 dnat", join(v4.fwdSpecs(a.Forwards)), []string{
		"-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
		"-p udp -m udp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
		"-d 192.0.2.1 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.0.0.2:22",
	})
	check("v6 dnat", join(v6.fwdSpecs(a.Forwards)), []string{
		"-p tcp -m tcp --dport 8443 -j DNAT --to-destination [fd00::2]:443",
		"-d 2001:db8::1 -p sctp -m sctp --dport 9999 -j DNAT --to-destination [fd00::2]:9",
	})
	check("v4 hairpin", join(v4.hairpinSpecs("br0", a.Subnets)), []string{
		"-o br0 -s 10.0.0.0/24 -m conntrack --ctstate DNAT -j MASQUERADE",
		"-o br0 -s 127.0.0.0/8 -m conntrack --ctstate DNAT -j MASQUERADE",
	})
	check("v6 hairpin", join(v6.hairpinSpecs("br0", a.Subnets)), []string{
		"-o br0 -s fd00::/64 -m conntrack --ctstate DNAT -j MASQUERADE",
	})
	if len(a.Subnets) != 2 {
		t.Errorf("hairpinSpecs changed its argument: %v", a.Subnets)
	}
	// iptables -S prints a rule with the address as a prefix and matches reordered.
	for _, line := range []string{
		"-d 192.0.2.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.0.0.2:22",
		"-d 2001:db8::1/128 -p sctp -m sctp --dport 9999 -j DNAT --to-destination [fd00::2]:9",
		"-p udp -m udp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
	} {
		fw, err := parseDNATRule(strings.Fields(line))
		if err != nil || !slices.Contains(a.Forwards, fw) {
			t.Errorf("parseDNATRule(%q) = %v, %v", line, fw, err)
		}
	}
	if _, err := parseDNATRule(strings.Fields("-p tcp -j ACCEPT")); err == nil {
		t.Errorf("parseDNATRule accepted a rule without DNAT")
	}
	if len(dnatChain("abcdefghijklmno")) > 28 || len(hairpinChain("abcdefghijklmno")) > 28 || len(fwdPortChain("abcdefghijklmno")) > 28 {
		t.Errorf("chain names too long for iptables")
	}
}

func TestFakeForwards(t *testing.T) {
	f := NewFake()
	a, b := guestA(), guestB()
	if err := f.EnsureForwards(a); err != nil {
		t.Fatal(err)
	}
	a.Forwards[0].GuestPort = 1 // the Fake keeps its own copy
	got, ok := f.Forwards("lab", "vA")
	if !ok || got.Forwards[0].GuestPort != 80 || got.Bridge != "br0" || len(got.Forwards) != 5 {
		t.Errorf("Forwards = %+v, %v", got, ok)
	}
	a = guestA()
	if err := f.EnsureForwards(b); err != nil {
		t.Fatal(err)
	}
	if p := f.ForwardPorts("lab"); !slices.Equal(p, []string{"vA", "vB"}) {
		t.Errorf("ForwardPorts = %q", p)
	}
	l, _ := f.List("lab")
	if !slices.Contains(l, "forward tcp 0.0.0.0:8080 -> 10.0.0.2:80 (port vA)") || !slices.Contains(l, "forward tcp 0.0.0.0:8081 -> 10.0.0.3:80 (port vB)") {
		t.Errorf("List = %q", l)
	}
	steal := b
	steal.Forwards = append(slices.Clone(b.Forwards), fwd("tcp", "", 8080, "10.0.0.3", 80))
	err := f.EnsureForwards(steal)
	if !errors.Is(err, ErrAlreadyPublished) || err.Error() != "firewall: port vB: tcp 0.0.0.0:8080 is already published by port vA" {
		t.Errorf("EnsureForwards of a taken port = %v", err)
	}
	if got, _ := f.Forwards("lab", "vB"); len(got.Forwards) != 1 {
		t.Errorf("a refused EnsureForwards changed the port: %+v", got)
	}
	if err := f.EnsureForwards(a); err != nil {
		t.Errorf("EnsureForwards again: %v", err)
	}
	for range 2 {
		if err := f.RemoveForwards("lab", "vA"); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := f.Forwards("lab", "vA"); ok {
		t.Errorf("RemoveForwards kept the port")
	}
	empty := b
	empty.Forwards = nil
	if err := f.EnsureForwards(empty); err != nil || len(f.ForwardPorts("lab")) != 0 {
		t.Errorf("EnsureForwards with none: %v, ports %q", err, f.ForwardPorts("lab"))
	}
	if err := f.EnsureForwards(b); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	f.FailWith(boom)
	if err := f.EnsureForwards(a); !errors.Is(err, boom) {
		t.Errorf("EnsureForwards with FailWith = %v", err)
	}
	f.FailWith(nil)
	if err := f.Remove("lab"); err != nil {
		t.Fatal(err)
	}
	if p := f.ForwardPorts("lab"); len(p) != 0 {
		t.Errorf("Remove(network) kept published ports %q", p)
	}
}
