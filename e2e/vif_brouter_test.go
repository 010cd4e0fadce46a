package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

// vif-brouter end to end: the built binary called exactly as libxl calls a
// vif hotplug script (argv, "env -i" environment, backend keys in a xenstore
// that speaks the wire protocol), inside a dom0 namespace whose brouter
// network network-virtual started, with the guest behind a veth whose dom0
// end is named like netback's device.

const portMAC = "fe:ff:ff:ff:ff:ff"

// natVifHost is the standard scenario: dom0 with an uplink to the outside,
// network "default" (mode nat, bridge xenbr0, 10.98.98.1/24) started by
// network-virtual, and a dummy port keeping the bridge's own state stable.
func natVifHost(t *testing.T, backend string, extra ...string) *vifHost {
	t.Helper()
	h := newVifHost(t, worldOpts{outside: true})
	toml := fmt.Sprintf("[network.default]\nbridge = \"xenbr0\"\naddress = %q\nmode = \"nat\"\nfirewall = %q\nuplink = %q\n",
		gatewayCIDR, backend, uplinkDev)
	for _, e := range extra {
		toml += e + "\n"
	}
	h.writeConfig(toml)
	h.mustRun(0, "start")
	h.anchor(t, "xenbr0")
	return h
}

// pingFrom pings dst from the guest with source address src; tries 3 when a
// reply is expected, 1 when not.
func vifPingFrom(g *nstest.NS, src, dst string, tries int) error {
	var err error
	for i := 0; i < tries; i++ {
		if _, err = g.Try("ping", "-n", "-q", "-c", "1", "-W", "1", "-I", src, dst); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

func flushNeigh(t *testing.T, nss ...*nstest.NS) {
	for _, ns := range nss {
		ns.Exec(t, "ip", "neigh", "flush", "all")
	}
}

// dhcpLease runs busybox udhcpd in dom0 on iface and a udhcpc in the guest
// (DISCOVER from 0.0.0.0); nil when a lease came back.
func dhcpLease(t *testing.T, dom0, g *nstest.NS, iface string, tries int) error {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "udhcpd.conf")
	body := fmt.Sprintf("interface %s\nstart 10.98.98.100\nend 10.98.98.150\nlease_file %s\npidfile %s\noption subnet 255.255.255.0\n",
		iface, filepath.Join(dir, "leases"), filepath.Join(dir, "pid"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "leases"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := dom0.Start(t, "busybox", "udhcpd", "-f", conf)
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(200 * time.Millisecond)
	_, err := g.Try("busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", strconv.Itoa(tries), "-T", "1", "-s", "/bin/true")
	return err
}

// 1. A PV vif, online and offline, as libxl runs them.
func TestVifOnlineOffline(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := natVifHost(t, backend, `address6 = "fd00:98::1/64"`, "[network.default.dhcp6]", `ipv6_mode = "none"`)
		v := newXvif(5, 0)
		const own, spoof = "10.98.98.11", "10.98.98.99"
		const own6, spoof6 = "fd00:98::11", "fd00:98::99"
		g := h.vifGuest(t, "g5", v.name(), v.mac, own+"/24", own6+"/64")
		h.writeBackend(v, "xenbr0", map[string]string{"ip": own + " " + own6})
		h.settle(t)
		before := h.fullDump(t, v.name())

		r := h.online(t, v, 0)
		t.Logf("online took %v", r.took)
		h.connected(t, v, r)
		li := h.link(t, v.name())
		if li.master != "xenbr0" {
			t.Errorf("%s master = %q, want xenbr0", v.name(), li.master)
		}
		if li.mac != portMAC {
			t.Errorf("%s MAC = %s, want %s", v.name(), li.mac, portMAC)
		}
		if !li.up {
			t.Errorf("%s is not up", v.name())
		}
		if br := h.link(t, "xenbr0"); li.mtu != br.mtu {
			t.Errorf("%s mtu = %s, want the bridge's %s", v.name(), li.mtu, br.mtu)
		}
		if m, _ := h.xs.Get(v.frontend() + "/mtu"); m != li.mtu {
			t.Errorf("frontend mtu key = %q, want %s", m, li.mtu)
		}
		if br := h.link(t, "xenbr0"); br.mac == portMAC {
			t.Errorf("the bridge took the port's MAC %s", portMAC)
		}

		// Connectivity: gateway and, masqueraded, the outside.
		mustPing(t, g, "guest", gatewayIP)
		mustPing(t, g, "guest", outsideIP)
		if n := h.observed("from_uplink"); n == 0 {
			t.Errorf("outside saw no masqueraded echo request")
		}

		// Antispoof: ip = 10.98.98.11 and the guest's MAC.
		g.Exec(t, "ip", "addr", "add", spoof+"/24", "dev", "eth0")
		g.Exec(t, "ip", "addr", "add", spoof6+"/64", "dev", "eth0", "nodad")
		flushNeigh(t, h.dom0, g)
		if err := vifPingFrom(g, own6, "fd00:98::1", 3); err != nil {
			t.Errorf("guest from its own IPv6 address %s: no reply: %v", own6, err)
		}
		if err := vifPingFrom(g, spoof6, "fd00:98::1", 1); err == nil {
			t.Errorf("guest from %s (not in ip=): got a reply, want it dropped", spoof6)
		}
		if err := vifPingFrom(g, own, gatewayIP, 3); err != nil {
			t.Errorf("guest from its own address %s: no reply: %v", own, err)
		}
		if err := vifPingFrom(g, spoof, gatewayIP, 1); err == nil {
			t.Errorf("guest from %s (not in ip=): got a reply, want it dropped", spoof)
		}
		if err := vifPingFrom(g, spoof, outsideIP, 1); err == nil {
			t.Errorf("guest from %s to the outside: got a reply, want it dropped", spoof)
		}
		if _, err := g.Try("busybox", "arping", "-q", "-c", "2", "-w", "2", "-I", "eth0", "-s", spoof, gatewayIP); err == nil {
			t.Errorf("ARP from the spoofed sender %s got a reply", spoof)
		}
		if _, err := g.Try("busybox", "arping", "-q", "-c", "2", "-w", "2", "-I", "eth0", "-s", own, gatewayIP); err != nil {
			t.Errorf("ARP from the guest's own address got no reply: %v", err)
		}
		if err := dhcpLease(t, h.dom0, g, "xenbr0", 3); err != nil {
			t.Errorf("DHCP from 0.0.0.0 got no lease: %v", err)
		}
		g.Exec(t, "ip", "link", "set", "eth0", "address", "00:16:3e:00:99:99")
		flushNeigh(t, h.dom0, g)
		if err := vifPingFrom(g, own, gatewayIP, 1); err == nil {
			t.Errorf("guest with another MAC: got a reply, want it dropped")
		}
		g.Exec(t, "ip", "link", "set", "eth0", "address", v.mac)
		g.Exec(t, "ip", "addr", "del", spoof+"/24", "dev", "eth0")
		g.Exec(t, "ip", "addr", "del", spoof6+"/64", "dev", "eth0")
		flushNeigh(t, h.dom0, g)
		if err := vifPingFrom(g, own, gatewayIP, 3); err != nil {
			t.Errorf("guest back on its MAC: no reply: %v", err)
		}

		// offline: everything undone, twice.
		h.offline(t, v)
		if s, _ := h.key(v, "hotplug-status"); s != "connected" {
			t.Errorf("offline changed hotplug-status to %q (it must not write it)", s)
		}
		if li := h.link(t, v.name()); li.master != "" {
			t.Errorf("after offline %s is still on %s", v.name(), li.master)
		}
		h.sameAfterOffline(t, "after offline", before, v.name())
		h.noRecords(t, "after offline", v.name())
		h.offline(t, v)
		h.sameAfterOffline(t, "after second offline", before, v.name())

		// The device gone (netback destroyed it) and offline again: fine.
		h.dom0.Exec(t, "ip", "link", "del", v.name())
		h.offline(t, v)
	})
}

// 1b. The mtu key wins over the bridge's MTU and is written to the frontend.
func TestVifMTUKey(t *testing.T) {
	h := natVifHost(t, "nftables")
	v := newXvif(5, 0)
	g := h.vifGuest(t, "g5", v.name(), v.mac, "10.98.98.11/24")
	g.Exec(t, "ip", "link", "set", "eth0", "mtu", "1400")
	h.writeBackend(v, "xenbr0", map[string]string{"mtu": "1400"})
	r := h.online(t, v, 0)
	h.connected(t, v, r)
	if li := h.link(t, v.name()); li.mtu != "1400" || li.master != "xenbr0" {
		t.Errorf("%s: mtu %s master %q, want 1400 on xenbr0", v.name(), li.mtu, li.master)
	}
	if m, _ := h.xs.Get(v.frontend() + "/mtu"); m != "1400" {
		t.Errorf("frontend mtu key = %q, want 1400", m)
	}
	mustPing(t, g, "guest", gatewayIP)
	h.offline(t, v)
	h.noRecords(t, "after offline", v.name())

	// A malformed mtu is rejected, not passed on.
	h.writeBackend(v, "xenbr0", map[string]string{"mtu": "1400; reboot"})
	r = h.online(t, v, -1)
	h.failedProperly(t, v, r)
	h.offline(t, v)
}

// 2. vifname: the device is renamed and offline (vif=vif5.0) still finds it.
func TestVifName(t *testing.T) {
	h := natVifHost(t, "nftables")
	v := newXvif(5, 0)
	g := h.vifGuest(t, "g5", v.name(), v.mac, "10.98.98.11/24")
	h.writeBackend(v, "xenbr0", map[string]string{"vifname": "web0", "ip": "10.98.98.11"})
	h.settle(t)
	before := h.fullDump(t, v.name(), "web0")

	r := h.online(t, v, 0)
	h.connected(t, v, r)
	if h.link(t, v.name()).exists {
		t.Errorf("%s still exists after online with vifname=web0", v.name())
	}
	li := h.link(t, "web0")
	if li.master != "xenbr0" || li.mac != portMAC {
		t.Errorf("web0: exists %v master %q mac %s; want on xenbr0 with %s", li.exists, li.master, li.mac, portMAC)
	}
	mustPing(t, g, "guest", gatewayIP)
	if rec := h.records(t, "web0"); len(rec) == 0 {
		t.Logf("note: no record naming web0 under the run dir (records: %v)", h.records(t))
	}

	h.offline(t, v) // libxl passes vif=vif5.0, the original name
	if li := h.link(t, "web0"); li.master != "" {
		t.Errorf("after offline web0 is still on %s", li.master)
	}
	h.noRecords(t, "after offline", v.name(), "web0")
	// The device keeps its new name (netback destroys it anyway): compare
	// with the snapshot under that name.
	h.dom0.Exec(t, "ip", "link", "set", "web0", "name", v.name())
	h.sameAfterOffline(t, "after offline (renamed back)", before, v.name(), "web0")
	h.dom0.Exec(t, "ip", "link", "set", v.name(), "name", "web0")
	h.offline(t, v)

	// vifname taken by another link: error, and the other link is untouched.
	v2 := newXvif(6, 0)
	h.vifGuest(t, "g6", v2.name(), v2.mac, "10.98.98.12/24")
	h.writeBackend(v2, "xenbr0", map[string]string{"vifname": "web0"})
	before = h.fullDump(t, v2.name(), "web0")
	r = h.online(t, v2, -1)
	h.failedProperly(t, v2, r)
	if !h.link(t, v2.name()).exists {
		t.Errorf("%s vanished after a failed rename", v2.name())
	}
	if d := nstest.Diff(before, h.fullDump(t, v2.name(), "web0")); d != "" {
		t.Errorf("failed online changed dom0:\n%s", d)
	}
	h.offline(t, v2)
	if d := nstest.Diff(before, h.fullDump(t, v2.name(), "web0")); d != "" {
		t.Errorf("offline after a failed online changed dom0 (web0 belongs to another guest):\n%s", d)
	}
	h.noRecords(t, "after failed online", v2.name())

	// An invalid vifname is rejected.
	h.writeBackend(v2, "xenbr0", map[string]string{"vifname": "a/b c"})
	r = h.online(t, v2, -1)
	h.failedProperly(t, v2, r)
	h.offline(t, v2)
}

// 3. HVM emulated NIC: the tap call.
func TestVifTap(t *testing.T) {
	h := natVifHost(t, "nftables")
	v := newXvif(5, 0)
	g := h.vifGuest(t, "g5", v.emu(), v.mac, "10.98.98.11/24")
	h.writeBackend(v, "xenbr0", map[string]string{"type": "vif_ioemu"})
	h.settle(t)
	before := h.fullDump(t, v.emu())

	env := h.libxlEnv(v, "tap")
	r := h.vifRunT(t, 0, env, "add", "type_if=tap")
	if s, _ := h.key(v, "hotplug-status"); s != "connected" {
		t.Errorf("after add type_if=tap: hotplug-status = %q, want connected", s)
	}
	li := h.link(t, v.emu())
	if li.master != "xenbr0" || li.mac != portMAC {
		t.Errorf("%s: master %q mac %s; want xenbr0 and %s\n%s", v.emu(), li.master, li.mac, portMAC, r)
	}
	mustPing(t, g, "guest", gatewayIP)

	h.vifRunT(t, 0, env, "remove", "type_if=tap")
	if li := h.link(t, v.emu()); li.master != "" {
		t.Errorf("after remove %s is still on %s", v.emu(), li.master)
	}
	h.sameAfterOffline(t, "after remove", before, v.emu())
	h.noRecords(t, "after remove", v.emu())
	h.vifRunT(t, 0, env, "remove", "type_if=tap")

	// libxl also calls online/offline type_if=vif for that NIC; with no
	// vif device (the guest has no PV driver yet) online may wait and fail,
	// but the tap must stay where it is.
	h.vifRunT(t, 0, env, "add", "type_if=tap")
	if r, err := h.vifCmd(h.libxlEnv(v, "vif"), "offline", "type_if=vif"); err != nil || r.code != 0 {
		t.Errorf("offline type_if=vif of a vif that never came: %v\n%s", err, r)
	}
	if li := h.link(t, v.emu()); li.master != "xenbr0" {
		t.Errorf("offline type_if=vif took the tap %s off the bridge (master %q)", v.emu(), li.master)
	}
	h.vifRunT(t, 0, env, "remove", "type_if=tap")
}

// 4. Mode route: no bridge, /32 on the vif, proxy ARP, host routes.
func TestVifRouteMode(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := newVifHost(t, worldOpts{outside: true})
		h.writeConfig(fmt.Sprintf("[network.r]\nmode = \"route\"\naddress = %q\naddress6 = \"fd00:98::1/64\"\nfirewall = %q\n", gatewayCIDR, backend))
		h.outside.Exec(t, "ip", "route", "add", guestNet, "via", uplinkDom0)
		h.settle(t)
		beforeStart := h.fullDump(t)
		h.mustRun(0, "start", "net=r")

		v5, v6 := newXvif(5, 0), newXvif(6, 0)
		g5 := h.vifGuest(t, "g5", v5.name(), v5.mac, "10.98.98.11/24", "fd00:98::11/64")
		g6 := h.vifGuest(t, "g6", v6.name(), v6.mac, "10.98.98.12/24", "fd00:98::12/64")
		for _, g := range []*nstest.NS{g5, g6} {
			g.Exec(t, "ip", "-6", "route", "add", "default", "via", "fd00:98::1")
		}
		h.writeBackend(v5, "r", map[string]string{"ip": "10.98.98.11 fd00:98::11"})
		h.writeBackend(v6, "r", map[string]string{"ip": "10.98.98.12 fd00:98::12"})
		h.settle(t)
		before := h.fullDump(t, v5.name(), v6.name())

		for _, v := range []xvif{v5, v6} {
			r := h.online(t, v, 0)
			h.connected(t, v, r)
		}
		for _, c := range []struct {
			v  xvif
			ip string
		}{{v5, "10.98.98.11"}, {v6, "10.98.98.12"}} {
			n := c.v.name()
			addrs := h.dom0.Exec(t, "ip", "-o", "addr", "show", "dev", n)
			if !strings.Contains(addrs, " 10.98.98.1/32 ") {
				t.Errorf("%s lacks 10.98.98.1/32:\n%s", n, addrs)
			}
			if pa := proxyARP(t, h, n); pa != "1" {
				t.Errorf("%s proxy_arp = %s, want 1", n, pa)
			}
			routes := h.dom0.Exec(t, "ip", "route", "show", c.ip)
			if !strings.Contains(routes, "dev "+n) {
				t.Errorf("no host route %s dev %s: %q", c.ip, n, routes)
			}
			routes6 := h.dom0.Exec(t, "ip", "-6", "route", "show", "fd00:98::"+strings.TrimPrefix(c.ip, "10.98.98."))
			if !strings.Contains(routes6, "dev "+n) {
				t.Errorf("no IPv6 host route for %s dev %s: %q", c.ip, n, routes6)
			}
			if li := h.link(t, n); li.master != "" {
				t.Errorf("route mode: %s is on a bridge (%s)", n, li.master)
			}
			if m, _ := h.xs.Get(c.v.frontend() + "/mtu"); m == "" {
				t.Errorf("%s: frontend mtu key not written", n)
			}
		}
		mustPing(t, g5, "guest5", gatewayIP)
		mustPing(t, g6, "guest6", gatewayIP)
		mustPing(t, g5, "guest5", "10.98.98.12")
		mustPing(t, g6, "guest6", "10.98.98.11")
		mustPing(t, g5, "guest5", outsideIP)
		mustPing(t, g5, "guest5", "fd00:98::1")
		// Two routed guests on one on-link /64: proxy NDP on each other's vifs.
		mustPing(t, g5, "guest5", "fd00:98::12")
		mustPing(t, g6, "guest6", "fd00:98::11")
		// Antispoof on a routed port: another source address is dropped.
		g5.Exec(t, "ip", "addr", "add", "10.98.98.99/24", "dev", "eth0")
		if err := vifPingFrom(g5, "10.98.98.99", gatewayIP, 1); err == nil {
			t.Errorf("route mode: guest5 from 10.98.98.99 got a reply, want it dropped")
		}
		g5.Exec(t, "ip", "addr", "del", "10.98.98.99/24", "dev", "eth0")

		for _, v := range []xvif{v5, v6} {
			h.offline(t, v)
		}
		after := h.dom0.Exec(t, "ip", "route", "show")
		if strings.Contains(after, "10.98.98.11") || strings.Contains(after, "10.98.98.12") {
			t.Errorf("host routes left after offline:\n%s", after)
		}
		for _, v := range []xvif{v5, v6} {
			if pa := proxyARP(t, h, v.name()); pa != "0" {
				t.Logf("note: %s proxy_arp = %s after offline (the device is netback's and goes away)", v.name(), pa)
			}
		}
		h.sameAfterOffline(t, "after offline", before, v5.name(), v6.name())
		h.noRecords(t, "after offline", v5.name(), v6.name())
		mustNotPing(t, g5, "guest5 after offline", gatewayIP)

		// netback destroys the devices after offline; then stop.
		h.dom0.Exec(t, "ip", "link", "del", v5.name())
		h.dom0.Exec(t, "ip", "link", "del", v6.name())
		h.mustRun(0, "stop", "net=r")
		if d := nstest.Diff(withoutEmptyTables(beforeStart), withoutEmptyTables(h.fullDump(t))); d != "" {
			t.Errorf("after stop: dom0 differs from before start:\n%s", d)
		}
	})
}

// 5. The legacy path: udev's vif-setup passes xend's VAR=VAL arguments;
// arguments override xenstore, the environment overrides arguments.
func TestVifLegacyArgs(t *testing.T) {
	h := newVifHost(t, worldOpts{})
	h.writeConfig(fmt.Sprintf("[network.a]\nbridge = \"xenbr0\"\naddress = %q\nfirewall = \"nftables\"\n\n[network.b]\nbridge = \"xenbr1\"\naddress = \"10.97.97.1/24\"\nfirewall = \"nftables\"\n", gatewayCIDR))
	h.mustRun(0, "start", "net=a")
	h.mustRun(0, "start", "net=b")
	v := newXvif(5, 0)
	g := h.vifGuest(t, "g5", v.name(), v.mac, "10.97.97.11/24")
	h.writeBackend(v, "xenbr0", nil)
	// udev's environment: no netdev; XENBUS_PATH etc. as the kernel's uevent gives them.
	udev := func(over ...string) []string { return h.libxlEnv(v, "vif", append([]string{"-netdev"}, over...)...) }

	r := h.vifRunT(t, 0, udev(), "online", "type_if=vif", "bridge=xenbr1")
	h.connected(t, v, r)
	if li := h.link(t, v.name()); li.master != "xenbr1" {
		t.Errorf("argument bridge=xenbr1: %s is on %q, want xenbr1 (arguments override xenstore)", v.name(), li.master)
	}
	mustPing(t, g, "guest", "10.97.97.1")
	h.vifRunT(t, 0, udev(), "offline", "type_if=vif", "bridge=xenbr1")
	if li := h.link(t, v.name()); li.master != "" {
		t.Errorf("after offline %s is on %q", v.name(), li.master)
	}
	h.noRecords(t, "after offline", v.name())

	h.xs.Set(v.backend()+"/hotplug-status", "")
	r = h.vifRunT(t, 0, udev("bridge=xenbr0"), "online", "type_if=vif", "bridge=xenbr1")
	h.connected(t, v, r)
	if li := h.link(t, v.name()); li.master != "xenbr0" {
		t.Errorf("env bridge=xenbr0, argument bridge=xenbr1: %s is on %q, want xenbr0 (environment overrides arguments)", v.name(), li.master)
	}
	h.vifRunT(t, 0, udev("bridge=xenbr0"), "offline", "type_if=vif", "bridge=xenbr1")
	h.noRecords(t, "after offline", v.name())

	// ip= as an argument turns on antispoof.
	g.Exec(t, "ip", "addr", "add", "10.97.97.99/24", "dev", "eth0")
	h.vifRunT(t, 0, udev(), "online", "type_if=vif", "bridge=xenbr1", "ip=10.97.97.11")
	if err := vifPingFrom(g, "10.97.97.11", "10.97.97.1", 3); err != nil {
		t.Errorf("legacy ip=: own address gets no reply: %v", err)
	}
	if err := vifPingFrom(g, "10.97.97.99", "10.97.97.1", 1); err == nil {
		t.Errorf("legacy ip=10.97.97.11: spoofed source got a reply")
	}
	h.vifRunT(t, 0, udev(), "offline", "type_if=vif", "bridge=xenbr1", "ip=10.97.97.11")
	h.noRecords(t, "after offline", v.name())
	// A shell metacharacter in an argument is just a bad value.
	r = h.vifRunT(t, -1, udev(), "online", "type_if=vif", "bridge=xenbr1;touch /tmp/pwned")
	h.failedProperly(t, v, r)
}

// 6. The failure path: a bridge nobody configured and that does not exist.
func TestVifMissingBridge(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := natVifHost(t, backend)
		v := newXvif(5, 0)
		h.vifGuest(t, "g5", v.name(), v.mac, "10.98.98.11/24")
		h.writeBackend(v, "nosuchbr0", map[string]string{"ip": "10.98.98.11", "rate": "1250000,1000000"})
		h.settle(t)
		before := h.fullDump(t, v.name())
		r := h.online(t, v, -1)
		h.failedProperly(t, v, r)
		h.sameAfterOffline(t, "after failed online", before, v.name())
		if d := nstest.Diff(before, h.fullDump(t, v.name())); d != "" {
			t.Logf("note: failed online left the device changed:\n%s", d)
		}
		h.noRecords(t, "after failed online", v.name())
		if h.link(t, "nosuchbr0").exists {
			t.Errorf("a failed online created bridge nosuchbr0")
		}
		h.offline(t, v)
		h.sameAfterOffline(t, "offline after failed online", before, v.name())

		// A bridge no config names but that exists is attached as is.
		h.dom0.Exec(t, "ip", "link", "add", "adhoc0", "type", "bridge")
		h.dom0.Exec(t, "ip", "link", "set", "adhoc0", "up")
		h.xs.Set(v.backend()+"/bridge", "adhoc0")
		h.xs.Set(v.backend()+"/hotplug-status", "")
		h.xs.Remove(v.backend() + "/hotplug-error")
		h.xs.Remove(v.backend() + "/rate")
		r = h.online(t, v, 0)
		h.connected(t, v, r)
		if li := h.link(t, v.name()); li.master != "adhoc0" {
			t.Errorf("existing unconfigured bridge adhoc0: %s is on %q", v.name(), li.master)
		}
		h.offline(t, v)
		if li := h.link(t, v.name()); li.master != "" {
			t.Errorf("after offline %s is on %q", v.name(), li.master)
		}
		h.noRecords(t, "after offline (adhoc0)", v.name())
	})
}

// 7. rate: Xen limits what the guest sends.
func TestVifRate(t *testing.T) {
	h := natVifHost(t, "nftables")
	v := newXvif(5, 0)
	g := h.vifGuest(t, "g5", v.name(), v.mac, "10.98.98.11/24")
	h.writeBackend(v, "xenbr0", map[string]string{"rate": "1250000,1000000"}) // 1.25 MB per second = 10 Mbit/s
	h.settle(t)
	before := h.fullDump(t, v.name())
	r := h.online(t, v, 0)
	h.connected(t, v, r)

	ifb := fromGuestIfb(t, h, v.name())
	if ifb == "" {
		t.Fatalf("no ifb shaping what %s sends (ifb with alias ...port=%s dir=from-guest):\n%s\n%s",
			v.name(), v.name(), h.dom0.Exec(t, "ip", "-d", "link", "show"), h.dom0.Exec(t, "tc", "qdisc", "show"))
	}
	classes := h.dom0.Exec(t, "tc", "class", "show", "dev", ifb)
	if !strings.Contains(classes, "rate 10Mbit") {
		t.Errorf("from-guest class on %s is not 10Mbit:\n%s", ifb, classes)
	}
	if q := h.dom0.Exec(t, "tc", "qdisc", "show", "dev", v.name()); strings.Contains(q, "htb") {
		t.Errorf("rate limits the guest's sending only, but %s has an HTB root (to-guest shaping):\n%s", v.name(), q)
	}

	// Measure: the guest sends to an iperf3 server in dom0 for 3 s.
	srv := h.dom0.Start(t, "iperf3", "-s", "-1", "-B", gatewayIP)
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	out, err := g.Try("iperf3", "-c", gatewayIP, "-t", "3", "-J")
	if err != nil {
		t.Errorf("iperf3: %v", err)
	} else {
		var res struct {
			End struct {
				SumReceived struct {
					BPS float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Errorf("iperf3 -J: %v", err)
		}
		bps := res.End.SumReceived.BPS
		t.Logf("guest → dom0 TCP goodput %.2f Mbit/s (limit 10 Mbit/s at layer 2; TCP goodput ≈ 95.6%%)", bps/1e6)
		if bps < 0.9*9.56e6 || bps > 1.1*10e6 {
			t.Errorf("guest → dom0 goodput %.2f Mbit/s, want 10 Mbit/s ±10%% (≈9.56 goodput)", bps/1e6)
		}
	}

	h.offline(t, v)
	if ifb := fromGuestIfb(t, h, v.name()); ifb != "" {
		t.Errorf("ifb %s left after offline", ifb)
	}
	h.sameAfterOffline(t, "after offline", before, v.name())
	h.noRecords(t, "after offline", v.name())

	// A malformed rate is an error, not silently ignored.
	h.writeBackend(v, "xenbr0", map[string]string{"rate": "lots"})
	r = h.online(t, v, -1)
	h.failedProperly(t, v, r)
	h.offline(t, v)
	h.sameAfterOffline(t, "after bad rate", before, v.name())
}

// proxyARP reads net.ipv4.conf.PORT.proxy_arp in dom0 (PORT has a dot, so
// not through nstest's Sysctl).
func proxyARP(t *testing.T, h *vifHost, port string) string {
	t.Helper()
	return strings.TrimSpace(h.dom0.Exec(t, "cat", "/proc/sys/net/ipv4/conf/"+port+"/proxy_arp"))
}

// fromGuestIfb finds the ifb that shapes what port sends, by its alias.
func fromGuestIfb(t *testing.T, h *vifHost, port string) string {
	t.Helper()
	var links []struct {
		Ifname  string `json:"ifname"`
		Ifalias string `json:"ifalias"`
	}
	if err := json.Unmarshal([]byte(h.dom0.Exec(t, "ip", "-j", "link", "show", "type", "ifb")), &links); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.Contains(l.Ifalias, "port="+port+" ") && strings.Contains(l.Ifalias, "dir=from-guest") {
			return l.Ifname
		}
	}
	return ""
}

// 8. 20 vifs at once (xl attaches a domain's NICs in parallel), then 20 offline at once.
func TestVifParallel(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := natVifHost(t, backend)
		const n = 20
		guests := nstest.New(t, "guests")
		var vifs []xvif
		var names []string
		for i := 0; i < n; i++ {
			v := newXvif(10+i, 0)
			vifs = append(vifs, v)
			names = append(names, v.name())
			nstest.Veth(t, h.dom0, v.name(), guests, fmt.Sprintf("eth%d", i))
			h.writeBackend(v, "xenbr0", map[string]string{"ip": fmt.Sprintf("10.98.98.%d", 100+i)})
		}
		h.settle(t)
		before := h.fullDump(t, names...)

		runAll := func(cmd string) []vifRun {
			runs := make([]vifRun, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, v := range vifs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					runs[i], errs[i] = h.vifCmd(h.libxlEnv(v, "vif"), cmd, "type_if=vif")
				}()
			}
			t0 := time.Now()
			close(start)
			wg.Wait()
			t.Logf("%d × %s in %v", n, cmd, time.Since(t0).Round(time.Millisecond))
			for i := range vifs {
				if errs[i] != nil {
					t.Errorf("%s: %v", vifs[i].name(), errs[i])
				} else if runs[i].code != 0 {
					t.Errorf("%s %s:\n%s", vifs[i].name(), cmd, runs[i])
				}
			}
			return runs
		}
		runs := runAll("online")
		var slowest time.Duration
		for i, v := range vifs {
			h.connected(t, v, runs[i])
			slowest = max(slowest, runs[i].took)
			if li := h.link(t, v.name()); li.master != "xenbr0" || li.mac != portMAC {
				t.Errorf("%s: master %q mac %s, want xenbr0 %s", v.name(), li.master, li.mac, portMAC)
			}
		}
		t.Logf("slowest online: %v", slowest)
		if rec := h.records(t); len(rec) != n {
			t.Logf("note: %d port records for %d vifs: %v", len(rec), n, rec)
		}
		runAll("offline")
		for _, v := range vifs {
			if li := h.link(t, v.name()); li.master != "" {
				t.Errorf("%s still on %s after offline", v.name(), li.master)
			}
		}
		h.sameAfterOffline(t, "after 20 offline", before, names...)
		h.noRecords(t, "after 20 offline", names...)
	})
}

// 9. The device appears after the script started (the known race in Xen's scripts).
func TestVifLateDevice(t *testing.T) {
	h := natVifHost(t, "nftables")
	v := newXvif(5, 0)
	h.writeBackend(v, "xenbr0", nil)
	g := nstest.New(t, "g5")
	type res struct {
		r   vifRun
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := h.vifCmd(h.libxlEnv(v, "vif"), "online", "type_if=vif")
		done <- res{r, err}
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("online returned before the device existed: %v\n%s", r.err, r.r)
	default:
	}
	nstest.Veth(t, h.dom0, v.name(), g, "eth0")
	g.Exec(t, "ip", "link", "set", "eth0", "address", v.mac)
	g.Exec(t, "ip", "addr", "add", "10.98.98.11/24", "dev", "eth0")
	r := <-done
	if r.err != nil || r.r.code != 0 {
		t.Fatalf("online with a device that came 300 ms late: %v\n%s", r.err, r.r)
	}
	t.Logf("online took %v", r.r.took)
	h.connected(t, v, r.r)
	if li := h.link(t, v.name()); li.master != "xenbr0" {
		t.Errorf("%s master %q, want xenbr0", v.name(), li.master)
	}
	mustPing(t, g, "guest", gatewayIP)
	h.offline(t, v)

	// A device that never comes: an error well before libxl's 40 s.
	v2 := newXvif(6, 0)
	h.writeBackend(v2, "xenbr0", nil)
	r2 := h.online(t, v2, -1)
	h.failedProperly(t, v2, r2)
	if r2.took > 30*time.Second {
		t.Errorf("online waited %v for a missing device; libxl kills the script at 40 s", r2.took)
	}
	t.Logf("missing device: failed after %v", r2.took)
	h.offline(t, v2)
}
