package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pingPattern fills the echo requests whose payload the underlay checks look for.
var pingPattern = []byte("brtoverlay")

// arpFor matches an ARP frame whose target is addr (a request for it).
func arpFor(addr string) func(packet) bool {
	a := netip.MustParseAddr(addr).As4()
	return func(p packet) bool {
		return p.etherType == unix.ETH_P_ARP && len(p.raw) >= 42 && bytes.Equal(p.raw[38:42], a[:])
	}
}

func patternPing(t *testing.T, h *ovHost, dst string) {
	t.Helper()
	if _, err := h.vm.Try("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-p", fmt.Sprintf("%x", pingPattern), dst); err != nil {
		t.Errorf("vm%d cannot reach %s: %v", h.n, dst, err)
	}
}

// mtuPing sends one echo request of exactly size bytes (IP) with DF set.
func mtuPing(ns interface {
	Try(...string) (string, error)
}, dst string, size int) error {
	var err error
	for i := 0; i < 3; i++ {
		if _, err = ns.Try("ping", "-n", "-q", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(size-28), dst); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// TestOverlay: one network over three hosts (nftables, nftables, iptables)
// joined by plain VXLAN, with a VM behind qemu-ifup, a DHCP guest and a CNI
// container on each. Checks the list: L2 across hosts (ping, TCP),
// each guest's own host's NAT, the computed MTU end to end, DHCP and the
// gateway's ARP staying local, a local guest's MAC refused from the tunnel,
// a peer removed by start without disturbing local traffic, and stop
// leaving every host as it was.
func TestOverlay(t *testing.T) {
	t.Parallel()
	ow := newOvWorld(t, "nftables", "nftables", "iptables")
	h1, h2, h3 := ow.hosts[0], ow.hosts[1], ow.hosts[2]
	var before []string
	for _, h := range ow.hosts {
		h.writeConfig(ow.config(h, false, ow.hosts))
		before = append(before, "")
	}
	for i, h := range ow.hosts {
		h.addGuestsDevices(t)
		before[i] = h.dumpNeutral()
		h.mustRun(0, "start", "net=lab")
	}
	for _, h := range ow.hosts {
		h.attachGuests(t)
	}
	capture := startCapture(t, h2.dom0, "vx-lab")
	for _, h := range ow.hosts {
		h.dhcpIP = h.lease(t)
		if lo, hi := fmt.Sprintf("10.98.98.2%d0", h.n-1), fmt.Sprintf("10.98.98.2%d9", h.n-1); !inRange(h.dhcpIP, lo, hi) {
			t.Errorf("host%d's DHCP guest got %s, not from its own host's range %s-%s", h.n, h.dhcpIP, lo, hi)
		}
		if lo, hi := fmt.Sprintf("10.98.98.1%d0", h.n+1), fmt.Sprintf("10.98.98.1%d9", h.n+1); !inRange(h.ctrIP, lo, hi) {
			t.Errorf("host%d's container got %s, not from its own host's pool %s-%s", h.n, h.ctrIP, lo, hi)
		}
	}
	if n := capture.count(200*time.Millisecond, func(p packet) bool { return p.proto == unix.IPPROTO_UDP && (p.dport == 67 || p.dport == 68) }); n != 0 {
		t.Errorf("host2's tunnel received %d DHCP datagrams: DHCP crossed the tunnel", n)
	}

	// The same gateway MAC everywhere; the computed MTU (1500 - 50) on bridges and guests.
	mac := h1.dom0.ReadSys(t, "brlab/address")
	for _, h := range ow.hosts {
		if got := h.dom0.ReadSys(t, "brlab/address"); got != mac {
			t.Errorf("host%d's bridge MAC %s, host1's %s", h.n, got, mac)
		}
		for _, dev := range []string{"brlab", "vx-lab"} {
			if got := h.dom0.ReadSys(t, dev+"/mtu"); got != "1450" {
				t.Errorf("host%d: %s MTU %s, want 1450", h.n, dev, got)
			}
		}
		for what, ns := range map[string]interface {
			ReadSys(testing.TB, string) string
		}{"container": h.ctr, "DHCP guest": h.dhcp} {
			if got := ns.ReadSys(t, "eth0/mtu"); got != "1450" {
				t.Errorf("host%d's %s has MTU %s, want 1450", h.n, what, got)
			}
		}
		if r := h.run("status", "net=lab"); r.code != 0 || !strings.Contains(r.stdout, "overlay:  vx-lab vni 4242") {
			t.Errorf("host%d: status:\n%s", h.n, r)
		}
	}

	// One L2 segment across hosts: every kind of guest reaches every other.
	serveName(t, h2.vm, 7000, "vm2")
	serveName(t, h3.ctr, 7000, "ctr3")
	for _, c := range []struct {
		from *ovHost
		ns   string
		to   string
	}{{h1, "vm", vmIP(2)}, {h1, "vm", h3.ctrIP}, {h2, "ctr", h1.dhcpIP}, {h3, "dhcp", vmIP(1)}, {h3, "vm", h2.ctrIP}} {
		mustPing(t, c.from.guest(c.ns), fmt.Sprintf("host%d's %s", c.from.n, c.ns), c.to)
	}
	mustReach(t, h1.ctr, "container on host1 to vm2", vmIP(2)+":7000", "vm2")
	mustReach(t, h1.dhcp, "DHCP guest on host1 to ctr3", h3.ctrIP+":7000", "ctr3")
	// 1400 bytes with DF from a DHCP guest (its MTU from DHCP) to a container
	// on another host (its MTU from the plugin), and a full 1450.
	for _, size := range []int{1400, 1450} {
		if err := mtuPing(h1.dhcp, h2.ctrIP, size); err != nil {
			t.Errorf("%d-byte DF ping across the tunnel: %v", size, err)
		}
	}

	// The control of the encrypted test's check: plain VXLAN carries the
	// guests' frames in clear on the underlay.
	underlay := startCapture(t, ow.ul, "ul1")
	patternPing(t, h1, vmIP(2))
	if n := underlay.count(time.Second, func(p packet) bool { return p.dport == 4789 && bytes.Contains(p.raw, pingPattern) }); n == 0 {
		t.Error("plain VXLAN: the ping's payload is not on the underlay (the capture sees nothing?)")
	}

	// The outside sees each guest from its own host's address (NAT).
	for _, h := range ow.hosts {
		before := ow.observed(fmt.Sprintf("from_h%d", h.n))
		mustPing(t, h.vm, fmt.Sprintf("vm%d", h.n), ulOutside)
		if after := ow.observed(fmt.Sprintf("from_h%d", h.n)); after <= before {
			t.Errorf("vm%d's ping did not reach the outside from host%d's address", h.n, h.n)
		}
	}
	if n := ow.observed("from_guests"); n != 0 {
		t.Errorf("the outside saw %d packets from guest addresses: not NATed", n)
	}

	// ARP for the gateway stays on its host; ARP for a guest crosses (the control).
	h1.vm.Exec(t, "ip", "neigh", "flush", "all")
	mustPing(t, h1.vm, "vm1", gatewayIP)
	mustPing(t, h1.vm, "vm1", vmIP(2))
	if n := capture.count(time.Second, arpFor(vmIP(2))); n == 0 {
		t.Errorf("host2's tunnel saw no ARP for vm2: the capture works?")
	}
	if n := capture.count(0, arpFor(gatewayIP)); n != 0 {
		t.Errorf("host2's tunnel received %d ARP frames for the gateway", n)
	}

	// Antispoof: the guarded VM cannot send from another address; frames
	// from the tunnel with the MAC of one of host1's guests (known from a
	// port rule, vm1, or from CNI, ctr1) are dropped at host1, while the
	// same guest with its own MAC passes.
	h2.vm.Exec(t, "ip", "addr", "add", "10.98.98.99/24", "dev", "eth0")
	if err := vifPingFrom(h2.vm, "10.98.98.99", vmIP(1), 1); err == nil {
		t.Error("vm2 sends from a forged address across the tunnel")
	}
	h2.vm.Exec(t, "ip", "addr", "del", "10.98.98.99/24", "dev", "eth0")
	mustPing(t, h2.dhcp, "dhcp2", h1.dhcpIP)
	own := h2.dhcp.ReadSys(t, "eth0/address")
	for _, forged := range []string{vmMAC(1), h1.ctr.ReadSys(t, "eth0/address")} {
		h2.dhcp.Exec(t, "ip", "link", "set", "eth0", "address", forged)
		h2.dhcp.Exec(t, "ip", "neigh", "flush", "all")
		mustNotPing(t, h2.dhcp, "dhcp2 with a MAC of host1's guest "+forged, h1.dhcpIP)
	}
	h2.dhcp.Exec(t, "ip", "link", "set", "eth0", "address", own)
	mustPing(t, h2.dhcp, "dhcp2 with its own MAC again", h1.dhcpIP)
	mustPing(t, h1.vm, "vm1 after the forgery", vmIP(2))
	mustPing(t, h1.ctr, "ctr1 after the forgery", vmIP(2))

	// host1 drops host3 from its peers: start (the reconcile of a running
	// network) changes the flood list only; local traffic never stops.
	index := h1.dom0.ReadSys(t, "vx-lab/ifindex")
	ping := h1.vm.Cmd("ping", "-n", "-q", "-c", "30", "-i", "0.1", h1.ctrIP)
	var out bytes.Buffer
	ping.Stdout = &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	h1.writeConfig(ow.config(h1, false, []*ovHost{h1, h2}))
	h1.mustRun(0, "start", "net=lab")
	_ = ping.Wait()
	if m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String()); m == nil || m[1] != m[2] {
		t.Errorf("local traffic lost packets while the peer was removed:\n%s", out.String())
	}
	if got := h1.dom0.ReadSys(t, "vx-lab/ifindex"); got != index {
		t.Errorf("the VXLAN device was recreated (ifindex %s, was %s)", got, index)
	}
	if fdb := h1.dom0.Exec(t, "bridge", "fdb", "show", "dev", "vx-lab"); strings.Contains(fdb, "dst "+h3.addr+" ") || !strings.Contains(fdb, "00:00:00:00:00:00 dst "+h2.addr) {
		t.Errorf("host1's flood list after removing host3:\n%s", fdb)
	}
	h1.vm.Exec(t, "ip", "neigh", "flush", "all")
	mustPing(t, h1.vm, "vm1 to host2's container", h2.ctrIP)
	mustNotPing(t, h1.vm, "vm1 to host3's vm (peer removed)", vmIP(3))

	// stop leaves every host as it was before start.
	for i, h := range ow.hosts {
		h.cniDel(t)
		for _, port := range []string{fmt.Sprintf("vq%d", h.n), fmt.Sprintf("vd%d", h.n)} {
			if code, stderr := h.qemuScript("qemu-ifdown", nil, port); code != 0 {
				t.Errorf("host%d: qemu-ifdown %s: exit %d: %s", h.n, port, code, stderr)
			}
		}
		h.mustRun(0, "stop", "net=lab")
		h.sameStateAfterStopAs(t, "host"+strconv.Itoa(h.n), before[i])
	}
}

func inRange(ip, lo, hi string) bool {
	a, err := netip.ParseAddr(ip)
	return err == nil && a.Compare(netip.MustParseAddr(lo)) >= 0 && a.Compare(netip.MustParseAddr(hi)) <= 0
}

// TestOverlayEncrypted: two hosts with encrypt = "wireguard" (here the
// userspace brouter-wg: the kernel has no WireGuard), host2 with gateway =
// "remote". The same traffic checks, and the underlay carries nothing but
// WireGuard (the ping's payload never appears on it; in plain VXLAN it
// does, the control); host2's bridge has no address and a MAC of its own,
// and its guests go out through host1's NAT; a dead brouter-wg is a
// problem for status and start restarts it; stop leaves both hosts as
// they were.
func TestOverlayEncrypted(t *testing.T) {
	t.Parallel()
	ow := newOvWorld(t, "nftables", "iptables")
	ow.makeKeys()
	h1, h2 := ow.hosts[0], ow.hosts[1]
	var before []string
	for _, h := range ow.hosts {
		conf := ow.config(h, true, ow.hosts)
		if h == h2 { // no DHCP server of its own: the gateway's host serves it
			conf = regexp.MustCompile(`(?s)\[network\.lab\.dhcp\].*?\[network\.lab\.alloc\]`).ReplaceAllString(conf, "[network.lab.alloc]")
			conf = strings.Replace(conf, "[network.lab.overlay]\n", "[network.lab.overlay]\ngateway = \"remote\"\n", 1)
		}
		h.writeConfig(conf)
		h.addGuestsDevices(t)
		before = append(before, h.dumpNeutral())
		h.mustRun(0, "start", "net=lab")
	}
	for _, h := range ow.hosts {
		h.attachGuests(t)
		r := h.run("status", "net=lab")
		if r.code != 0 || !strings.Contains(r.stdout, "wireguard: userspace (brouter-wg pid") {
			t.Errorf("host%d: status:\n%s", h.n, r)
		}
		// 1500 - 60 (WireGuard over IPv4) - 70 (VXLAN over IPv6 inside)
		if got := h.dom0.ReadSys(t, "brlab/mtu"); got != "1370" {
			t.Errorf("host%d: bridge MTU %s, want 1370", h.n, got)
		}
	}
	underlay := startCapture(t, ow.ul, "ul1")
	patternPing(t, h1, vmIP(2))
	patternPing(t, h1, h2.ctrIP)
	serveName(t, h2.ctr, 7000, "ctr2")
	mustReach(t, h1.vm, "vm1 to ctr2", h2.ctrIP+":7000", "ctr2")
	if err := mtuPing(h1.ctr, vmIP(2), 1370); err != nil {
		t.Errorf("1370-byte DF ping through WireGuard: %v", err)
	}
	wgUDP := func(p packet) bool {
		return p.proto == unix.IPPROTO_UDP && len(p.payload) >= 4 && p.payload[0] >= 1 && p.payload[0] <= 4 && bytes.Equal(p.payload[1:4], []byte{0, 0, 0})
	}
	if n := underlay.count(time.Second, wgUDP); n == 0 {
		t.Error("no WireGuard datagram seen on the underlay")
	}
	underlay.mu.Lock()
	for _, p := range underlay.seen {
		switch {
		case bytes.Contains(p.raw, pingPattern):
			t.Errorf("the underlay carries a guest's ping in clear: %x", p.raw)
		case p.etherType == unix.ETH_P_IP && !wgUDP(p) && p.proto != unix.IPPROTO_ICMP:
			t.Errorf("the underlay carries other than WireGuard: proto %d %s:%d > %s:%d", p.proto, p.src, p.sport, p.dst, p.dport)
		}
	}
	underlay.mu.Unlock()

	// gateway = "remote": no address on host2's bridge, a MAC of its own,
	// and its guests' way out is host1's NAT.
	if out := h2.dom0.Exec(t, "ip", "-4", "addr", "show", "dev", "brlab"); strings.Contains(out, "inet ") {
		t.Errorf("host2 (gateway remote) has an address on its bridge:\n%s", out)
	}
	if m1, m2 := h1.dom0.ReadSys(t, "brlab/address"), h2.dom0.ReadSys(t, "brlab/address"); m1 == m2 {
		t.Errorf("host2 (gateway remote) has the gateway's MAC %s", m2)
	}
	viaH1, viaH2 := ow.observed("from_h1"), ow.observed("from_h2")
	mustPing(t, h2.vm, "vm2 (gateway on host1)", ulOutside)
	if ow.observed("from_h1") <= viaH1 || ow.observed("from_h2") != viaH2 {
		t.Errorf("vm2's ping to the outside did not leave through host1's NAT")
	}

	// A killed brouter-wg: status says so, start restarts it.
	pid := strings.TrimSpace(readFile(t, h2.runDir+"/lab/wg.pid"))
	h2.dom0.Exec(t, "kill", "-9", pid)
	time.Sleep(200 * time.Millisecond)
	if r := h2.run("status", "net=lab"); r.code != 1 || !strings.Contains(r.stdout, "brouter-wg of network lab is not running") {
		t.Errorf("status with brouter-wg killed:\n%s", r)
	}
	h2.mustRun(0, "start", "net=lab")
	mustPing(t, h1.vm, "vm1 to vm2 after brouter-wg's restart", vmIP(2))

	for i, h := range ow.hosts {
		pid, _ := strconv.Atoi(strings.TrimSpace(readFile(t, h.runDir+"/lab/wg.pid")))
		h.cniDel(t)
		h.mustRun(0, "stop", "net=lab")
		h.sameStateAfterStopAs(t, "host"+strconv.Itoa(h.n), before[i])
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmd), "brouter-wg") {
			t.Errorf("host%d: brouter-wg (pid %d) still runs after stop", h.n, pid)
		}
	}
}

// TestOverlayBadInput: each bad overlay is one line, a non-zero exit, and
// the host exactly as before.
func TestOverlayBadInput(t *testing.T) {
	t.Parallel()
	ow := newOvWorld(t, "nftables")
	h := ow.hosts[0]
	ow.makeKeys()
	key := h.keyFile
	loose := h.config + ".loose"
	writeFile(t, loose, readFile(t, h.keyFile), 0o644)
	base := "[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n"
	ov := base + "[network.lab.overlay]\n"
	wgPeer := "[[network.lab.overlay.peer]]\naddress = \"198.51.100.2\"\npublic_key = \"" + h.pubKey + "\"\n"
	other := "[[network.lab.overlay.peer]]\naddress = \"198.51.100.2\"\npublic_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\n"
	dump := h.dumpNeutral()
	for _, c := range []struct{ toml, want string }{
		{ov + "vni = 0\npeers = [\"198.51.100.2\"]", "vni = 0"},
		{ov + "vni = 16777216\npeers = [\"198.51.100.2\"]", "vni = 16777216"},
		{ov + "vni = 1\npeers = [\"198.51.100.1\"]", "peer 198.51.100.1 is this host"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\", \"198.51.100.2\"]", "listed twice"},
		{ov + "vni = 1\nencrypt = \"wireguard\"\n" + other, "needs private_key_file"},
		{ov + "vni = 1\nencrypt = \"wireguard\"\nprivate_key_file = \"/nonexistent/lab.key\"\n" + other, "no such file"},
		{ov + "vni = 1\nencrypt = \"wireguard\"\nprivate_key_file = \"" + loose + "\"\n" + other, "chmod 600"},
		{ov + "vni = 1\nencrypt = \"wireguard\"\nprivate_key_file = \"" + key + "\"\n" + wgPeer, "this host's public key"},
		{base + "mtu = 1451\n[network.lab.overlay]\nvni = 1\npeers = [\"198.51.100.2\"]", "mtu = 1451 does not fit: the underlay (eth0) has MTU 1500, which leaves 1450"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\nlocal = \"198.51.100.9\"", "local = 198.51.100.9 is not an address of this host"},
	} {
		h.writeConfig(c.toml)
		r := h.run("start", "net=lab")
		oneLineError(t, r)
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("want %q in:\n%s", c.want, r)
		}
		if d := diffStates(dump, h.dumpNeutral()); d != "" {
			t.Errorf("%q changed the host:\n%s", c.want, d)
		}
	}
}
