package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/nstest"
)

// The IPv6 scenario, per backend: network e2e with address6 (router
// advertisements by dnsmasq, SLAAC), nat6, antispoof for every port, DHCP.
//
//	outside eth0 2001:db8:1::2  <->  dom0 up0 2001:db8:1::1, br-e2e fd00:98::1/64
//	g1 (vg1): a known guest (port rule: its MAC, 10.98.98.11, fd00:98::11): the full guard
//	g2 (vg2): an unknown guest (SLAAC): the service guard only
//	g3 (vg3): a guest known by its IPv4 address only (SLAAC): the full guard, which
//	          lets its EUI-64 SLAAC address through
const (
	uplink6  = "2001:db8:1::1"
	outside6 = "2001:db8:1::2"
	gw6      = "fd00:98::1"
	g1addr6  = "fd00:98::11"
)

func ipv6Config(backend, g1MAC, g3MAC string) string {
	return netConfig("nat", backend, `address6 = "fd00:98::1/64"`, "nat6 = true", `uplink = "up0"`, "antispoof = true",
		"[network.e2e.dhcp]", `range_start = "10.98.98.100"`, `range_end = "10.98.98.150"`,
		"[[network.e2e.port]]", `name = "vg1"`, fmt.Sprintf("mac = %q", g1MAC), `ips = ["10.98.98.11", "fd00:98::11"]`,
		"[[network.e2e.port]]", `name = "vg3"`, fmt.Sprintf("mac = %q", g3MAC), `ips = ["10.98.98.13"]`)
}

// TestIPv6 checks, with both backends: a guest configured by SLAAC from the
// network's router advertisements (prefix, MTU, RDNSS, default route via the
// bridge's link-local address) reaching the gateway and, masqueraded by
// nat6, the outside; a forged RA, a rogue DHCPv4 OFFER and DHCPv6 ADVERTISE
// from a guest reaching neither the other guest nor dom0's routes, while
// dnsmasq's answers do; a forged neighbour advertisement for another
// guest's address dropped while the guest's own passes (nftables: the
// iptables backend cannot match the target). Each "dropped" has a control.
func TestIPv6(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testIPv6(t, backend)
		})
	}
}

func testIPv6(t *testing.T, backend string) {
	w := newWorld(t, worldOpts{outside: true, guests: 3})
	g1, g2, g3 := w.guests[0].ns, w.guests[1].ns, w.guests[2].ns
	g1MAC, g2MAC := linkMAC(t, g1, "eth0"), linkMAC(t, g2, "eth0")
	w.writeConfig(ipv6Config(backend, g1MAC.String(), linkMAC(t, g3, "eth0").String()))
	w.openForDnsmasq()
	w.dom0.Exec(t, "ip", "-6", "addr", "add", uplink6+"/64", "dev", uplinkDev, "nodad")
	w.outside.Exec(t, "ip", "-6", "addr", "add", outside6+"/64", "dev", "eth0", "nodad")
	w.dom0.Exec(t, "ip", "-6", "route", "add", "default", "via", outside6)
	observe6(t, w.outside)
	g1.Exec(t, "sysctl", "-qw", "net.ipv6.conf.eth0.autoconf=0") // g1 has its static address only
	w.mustRun(0, "start")
	for _, g := range w.guests {
		if code, stderr := w.qemuScript("qemu-ifup", nil, g.port, "br-e2e"); code != 0 {
			t.Fatalf("qemu-ifup %s: exit %d: %s", g.port, code, stderr)
		}
	}
	for _, g := range []*nstest.NS{g1, g2, g3} { // a router solicitation now, from a fresh link
		g.Exec(t, "ip", "link", "set", "eth0", "down")
		g.Exec(t, "ip", "link", "set", "eth0", "up")
	}
	// After the bounce: a packet socket stops at its link's going down. The
	// solicitation waits for the link-local address (DAD, about 1 s).
	c1, c2 := startCapture(t, g1, "eth0"), startCapture(t, g2, "eth0")
	g1.Exec(t, "ip", "-6", "addr", "add", g1addr6+"/64", "dev", "eth0", "nodad") // (link down flushed it)
	g2addr := slaacAddr(t, g2)
	brLL := linkLocal(linkMAC(t, w.dom0, "br-e2e"))
	checkRA(t, c2, brLL)
	if r := g2.Exec(t, "ip", "-6", "route", "show", "default"); !strings.Contains(r, "via "+brLL.String()+" dev eth0 proto ra") {
		t.Errorf("g2's default route is not via the bridge's link-local %s from the RA:\n%s", brLL, r)
	}
	mustPing(t, g2, "g2 (SLAAC)", gw6)
	mustPing(t, g1, "g1 (static, full guard)", gw6)
	slaacAddr(t, g3)
	mustPing(t, g3, "g3 (SLAAC, full guard knowing its IPv4 address only)", gw6)
	up0, guests0 := counter6(t, w.outside, "from_uplink6"), counter6(t, w.outside, "from_guests6")
	mustPing(t, g2, "g2", outside6)
	if n := counter6(t, w.outside, "from_uplink6") - up0; n < 1 {
		t.Errorf("nat6: the outside saw %d echo requests from dom0's %s, want at least 1", n, uplink6)
	}
	if n := counter6(t, w.outside, "from_guests6") - guests0; n != 0 {
		t.Errorf("nat6: the outside saw %d echo requests from fd00:98::/64, want 0 (masqueraded)", n)
	}

	// A forged RA from g2 (service guard) reaches neither g1 nor dom0's routes;
	// an ICMPv6 echo to all nodes, sent the same way, does (the control).
	dom0Routes := w.dom0.Exec(t, "ip", "-6", "route", "show")
	g2LL, g1LL := linkLocal(g2MAC), linkLocal(g1MAC)
	allNodes := netip.MustParseAddr("ff02::1")
	bad := netip.MustParseAddr("2001:db8:bad::")
	sendFrames(t, g2, "eth0",
		frame(multicastMAC(allNodes), g2MAC, ethIPv6, icmp6(g2LL, allNodes, 134, routerAdvert(bad, g2MAC))),
		frame(multicastMAC(allNodes), g2MAC, ethIPv6, icmp6(g2LL, allNodes, 128, []byte{0, 1, 0, 1, 'c', 't', 'l'})))
	fromG2 := func(typ byte) func(packet) bool {
		return func(p packet) bool { v := parseV6(p); return v.ok && v.src == g2LL && v.icmpType == typ }
	}
	if c1.count(3*time.Second, fromG2(128)) == 0 {
		t.Errorf("control: g2's echo to all nodes never reached g1 (the probe is broken)")
	}
	if n := c1.count(time.Second, fromG2(134)); n != 0 {
		t.Errorf("g2's forged router advertisement reached g1 (%d times)", n)
	}
	time.Sleep(500 * time.Millisecond)
	if r := g1.Exec(t, "ip", "-6", "route", "show"); strings.Contains(r, "2001:db8:bad") || strings.Contains(r, g2LL.String()) {
		t.Errorf("g1 took g2's forged RA:\n%s", r)
	}
	if r := w.dom0.Exec(t, "ip", "-6", "route", "show"); r != dom0Routes {
		t.Errorf("dom0's IPv6 routes changed after g2's forged RA:\nbefore:\n%s\nafter:\n%s", dom0Routes, r)
	}

	// A rogue DHCPv4 OFFER and DHCPv6 ADVERTISE from g2 never reach g1;
	// datagrams from other ports to the same client ports do.
	g2ip := netip.MustParseAddr(w.guests[1].ip)
	sendFrames(t, g2, "eth0",
		frame(broadcastMAC, g2MAC, unix.ETH_P_IP, udp4(g2ip, netip.MustParseAddr("255.255.255.255"), 67, 68, []byte("rogue-offer"))),
		frame(broadcastMAC, g2MAC, unix.ETH_P_IP, udp4(g2ip, netip.MustParseAddr("255.255.255.255"), 40067, 68, []byte("control-offer"))),
		frame(g1MAC, g2MAC, ethIPv6, udp6(g2LL, g1LL, 547, 546, []byte("rogue-advertise"))),
		frame(g1MAC, g2MAC, ethIPv6, udp6(g2LL, g1LL, 40547, 546, []byte("control-advertise"))))
	for _, c := range []struct {
		tag  string
		pass bool
	}{{"control-offer", true}, {"control-advertise", true}, {"rogue-offer", false}, {"rogue-advertise", false}} {
		n := c1.count(map[bool]time.Duration{true: 3 * time.Second, false: time.Second}[c.pass], func(p packet) bool {
			return bytes.HasSuffix(p.raw, []byte(c.tag))
		})
		switch {
		case c.pass && n == 0:
			t.Errorf("%s from g2 never reached g1 (the probe is broken)", c.tag)
		case !c.pass && n != 0:
			t.Errorf("%s from g2 reached g1 past the DHCP server guard", c.tag)
		}
	}
	if lease, err := udhcpc(t, g1); err != nil || !strings.Contains(lease, " "+gatewayIP+" ") {
		t.Errorf("g1 got no DHCPv4 lease from dnsmasq (%q, %v)", lease, err)
	}
	if dns, err := dhcp6InfoRequest(g1, g1MAC); err != nil || dns != gw6 {
		t.Errorf("g1's DHCPv6 information request: DNS server %q (%v), want dnsmasq's answer %s", dns, err, gw6)
	}

	// g1 (full guard) advertises g2's address as its own: dropped; its own
	// address: passes.
	if backend != "nftables" {
		t.Logf("iptables backend: no neighbour discovery target check (ebtables cannot match it); skipped")
		return
	}
	own := netip.MustParseAddr(g1addr6)
	sendFrames(t, g1, "eth0",
		frame(multicastMAC(allNodes), g1MAC, ethIPv6, icmp6(g1LL, allNodes, 136, neighborAdvert(g2addr, g1MAC))),
		frame(multicastMAC(allNodes), g1MAC, ethIPv6, icmp6(g1LL, allNodes, 136, neighborAdvert(own, g1MAC))))
	naFor := func(target netip.Addr) func(packet) bool {
		return func(p packet) bool {
			v := parseV6(p)
			if !v.ok || v.icmpType != 136 || len(v.l4) < 24 {
				return false
			}
			tgt, _ := netip.AddrFromSlice(v.l4[8:24])
			return v.src == g1LL && tgt == target
		}
	}
	if c2.count(3*time.Second, naFor(own)) == 0 {
		t.Errorf("control: g1's advertisement of its own %s never reached g2 (the probe is broken)", own)
	}
	if n := c2.count(time.Second, naFor(g2addr)); n != 0 {
		t.Errorf("g1's forged advertisement of g2's %s reached g2 (%d times)", g2addr, n)
	}
	if nb := w.dom0.Exec(t, "ip", "-6", "neigh", "show", g2addr.String()); strings.Contains(nb, g1MAC.String()) {
		t.Errorf("dom0 took g1's forged advertisement for %s: %s", g2addr, nb)
	}
}

// slaacAddr waits for the guest's SLAAC address in fd00:98::/64 (DAD done).
func slaacAddr(t *testing.T, g *nstest.NS) netip.Addr {
	t.Helper()
	for i := 0; i < 100; i++ {
		out := g.Exec(t, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 4 || strings.Contains(l, "tentative") {
				continue
			}
			if p, err := netip.ParsePrefix(f[3]); err == nil && strings.HasPrefix(p.String(), "fd00:98::") && p.Bits() == 64 {
				return p.Addr()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no SLAAC address in fd00:98::/64 on the guest after 10 s:\n%s", g.Exec(t, "ip", "-6", "addr"))
	return netip.Addr{}
}

// checkRA checks the network's router advertisement as the guest saw it:
// from the bridge's link-local address, with the prefix (autonomous), the
// MTU and the bridge's address6 as DNS server (RDNSS).
func checkRA(t *testing.T, c *capture, from netip.Addr) {
	t.Helper()
	var ra []byte
	c.count(5*time.Second, func(p packet) bool {
		if v := parseV6(p); v.ok && v.icmpType == 134 && v.src == from {
			ra = v.l4
			return true
		}
		return false
	})
	if ra == nil {
		c.mu.Lock()
		var seen []string
		for _, p := range c.seen {
			if v := parseV6(p); v.ok {
				seen = append(seen, fmt.Sprintf("%s>%s/%d/%d", v.src, v.dst, v.next, v.icmpType))
			}
		}
		c.mu.Unlock()
		t.Fatalf("the guest saw no router advertisement from the bridge %s; IPv6 seen: %s", from, strings.Join(seen, " "))
	}
	opts := ndOptions(ra)
	if pi := opts[3]; len(pi) < 32 || pi[2] != 64 || pi[3]&0x40 == 0 || netip.AddrFrom16([16]byte(pi[16:32])).String() != "fd00:98::" {
		t.Errorf("RA prefix option %x: want fd00:98::/64, autonomous", pi)
	}
	if mtu := opts[5]; len(mtu) < 8 || int(mtu[4])<<24|int(mtu[5])<<16|int(mtu[6])<<8|int(mtu[7]) != 1500 {
		t.Errorf("RA MTU option %x: want 1500", mtu)
	}
	if rdnss := opts[25]; len(rdnss) < 24 || netip.AddrFrom16([16]byte(rdnss[8:24])).String() != gw6 {
		t.Errorf("RA RDNSS option %x: want %s", rdnss, gw6)
	}
}

// dhcp6InfoRequest sends a DHCPv6 Information-Request from the guest's
// link-local address and returns the first DNS server of the reply.
func dhcp6InfoRequest(g *nstest.NS, mac net.HardwareAddr) (string, error) {
	var dns string
	err := g.Do(func() error {
		conn, err := net.ListenUDP("udp6", &net.UDPAddr{Port: 546})
		if err != nil {
			return err
		}
		defer conn.Close()
		msg := []byte{11, 0xb7, 0x0e, 0x01, 0, 1, 0, 10, 0, 3, 0, 1}
		msg = append(append(msg, mac...), 0, 6, 0, 2, 0, 23, 0, 8, 0, 2, 0, 0)
		to := &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: "eth0"}
		buf := make([]byte, 1500)
		for try := 0; try < 3 && dns == ""; try++ {
			if _, err := conn.WriteToUDP(msg, to); err != nil {
				return err
			}
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				continue
			}
			if buf[0] != 7 || !bytes.Equal(buf[1:4], msg[1:4]) {
				continue
			}
			for o := buf[4:n]; len(o) >= 4; {
				code, l := int(o[0])<<8|int(o[1]), int(o[2])<<8|int(o[3])
				if len(o) < 4+l {
					break
				}
				if code == 23 && l >= 16 {
					dns = netip.AddrFrom16([16]byte(o[4:20])).String()
				}
				o = o[4+l:]
			}
		}
		return nil
	})
	return dns, err
}

// observe6 counts, in the outside namespace, the echo requests from dom0's
// uplink address and from the guests' IPv6 prefix.
func observe6(t *testing.T, out *nstest.NS) {
	t.Helper()
	rules := fmt.Sprintf(`table ip6 e2e-observe6 {
	counter from_uplink6 { }
	counter from_guests6 { }
	chain in {
		type filter hook input priority 0; policy accept;
		ip6 saddr %s icmpv6 type echo-request counter name from_uplink6
		ip6 saddr fd00:98::/64 icmpv6 type echo-request counter name from_guests6
	}
}
`, uplink6)
	cmd := out.Cmd("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("outside: nft -f: %v: %s", err, b)
	}
}

func counter6(t *testing.T, out *nstest.NS, name string) int {
	t.Helper()
	m := packetsRE.FindStringSubmatch(out.Exec(t, "nft", "list", "counter", "ip6", "e2e-observe6", name))
	if m == nil {
		t.Fatalf("outside: no counter %s", name)
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

// TestStartKeepsUplinkRA: starting IPv6 forwarding on a host whose uplink
// learned its IPv6 routes from router advertisements (accept_ra = 1) says so
// in one note and changes no interface; with uplink_accept_ra = true the
// uplink, and only the uplink, gets accept_ra = 2.
func TestStartKeepsUplinkRA(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{outside: true})
	w.openForDnsmasq()
	nstest.Veth(t, w.dom0, "eth9", w.outside, "eth9") // another interface that accepts RAs
	w.dom0.Exec(t, "ip", "-6", "route", "add", "2001:db8:5::/64", "via", "fe80::1", "dev", uplinkDev, "proto", "ra")
	acceptRA := func(dev string) string { return w.dom0.Sysctl(t, "net.ipv6.conf."+dev+".accept_ra") }
	for _, dev := range []string{uplinkDev, "eth9"} {
		if v := acceptRA(dev); v != "1" {
			t.Fatalf("accept_ra of %s is %s before start, want the default 1", dev, v)
		}
	}
	v6 := `address6 = "fd00:98::1/64"`
	w.writeConfig(netConfig("nat", "nftables", v6))
	r := w.mustRun(0, "start")
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "note:") ||
		!strings.Contains(lines[0], uplinkDev+" (accept_ra = 1)") || strings.Contains(lines[0], "eth9") {
		t.Errorf("start: want one note naming %s (and not eth9, which learned nothing from RAs), got:\n%s", uplinkDev, r.stderr)
	}
	for _, dev := range []string{uplinkDev, "eth9"} {
		if v := acceptRA(dev); v != "1" {
			t.Errorf("start without uplink_accept_ra changed accept_ra of %s to %s", dev, v)
		}
	}
	w.mustRun(0, "stop")

	w.writeConfig(netConfig("nat", "nftables", v6, `uplink = "up0"`, "uplink_accept_ra = true"))
	r = w.mustRun(0, "start")
	if strings.Contains(r.stderr, "note:") {
		t.Errorf("start with uplink_accept_ra: want no note, got: %s", r.stderr)
	}
	if v := acceptRA(uplinkDev); v != "2" {
		t.Errorf("with uplink_accept_ra = true: accept_ra of the uplink %s = %s, want 2", uplinkDev, v)
	}
	if v := acceptRA("eth9"); v != "1" {
		t.Errorf("with uplink_accept_ra = true: accept_ra of eth9 (not the uplink) = %s, want 1 (untouched)", v)
	}
	w.mustRun(0, "stop")
}

// TestIPv6BadConfig: an unknown ipv6_mode, a DHCPv6 range or a static
// host's ip6 outside the prefix, nat6 without address6: start fails with one
// line naming the key, and dom0 is as it was.
func TestIPv6BadConfig(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	v6 := `address6 = "fd00:98::1/64"`
	before := w.dom0.Dump(t)
	for _, c := range []struct {
		extra []string
		key   string
	}{
		{[]string{v6, "[network.e2e.dhcp6]", `ipv6_mode = "stateful"`}, "network.e2e.dhcp6.ipv6_mode"},
		{[]string{v6, "[network.e2e.dhcp6]", `ipv6_mode = "dhcpv6"`, `range_start = "fd00:99::10"`}, "network.e2e.dhcp6.range_start"},
		{[]string{v6, "[network.e2e.dhcp]", "[[network.e2e.dhcp.host]]", `mac = "52:54:00:00:00:01"`, `ip6 = "fd00:99::10"`}, "network.e2e.dhcp.host[0].ip6"},
		{[]string{"nat6 = true"}, "network.e2e.nat6"},
	} {
		w.writeConfig(netConfig("nat", "nftables", c.extra...))
		r := w.run("start")
		oneLineError(t, r)
		if !strings.Contains(r.stderr, c.key) {
			t.Errorf("start: the error does not name %s: %s", c.key, r.stderr)
		}
		w.sameState("refused "+c.key, before)
	}
}
