package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/nstest"
)

// TestSecurityProbe replays, with frames crafted in a container, what an
// attacking guest tried in the independent probe: reaching the host's
// loopback services once a published port turned route_localnet on,
// sending past antispoof with a forged source as "DHCP", and odd
// ethertypes. Every "dropped" has an "allowed" control sent from the same
// container in the same state, so the test fails if the probe itself is
// broken.
func TestSecurityProbe(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testSecurityProbe(t, backend)
		})
	}
}

func testSecurityProbe(t *testing.T, backend string) {
	cw := newCNIWorldWith(t, worldOpts{outside: true})
	cw.writeConfig(fmt.Sprintf("[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\nfirewall = %q\nuplink = %q\n", backend, uplinkDev))
	cw.mustRun(0, "start", "net=lab")
	list, _ := cniConflistWith(t, t.TempDir(), `
    "capabilities": {"portMappings": true},`)

	// pub publishes a port (route_localnet goes on); evil attacks.
	pub, evil := nstest.New(t, "ctr"), nstest.New(t, "ctr")
	rtPub := &libcni.RuntimeConf{ContainerID: "sec-pub-" + pub.Name(), NetNS: pub.Path(), IfName: "eth0",
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}}
	rtEvil := &libcni.RuntimeConf{ContainerID: "sec-evil-" + evil.Name(), NetNS: evil.Path(), IfName: "eth0"}
	if _, err := cw.add(list, rtPub); err != nil {
		t.Fatalf("ADD pub: %v", err)
	}
	res, err := cw.add(list, rtEvil)
	if err != nil {
		t.Fatalf("ADD evil: %v", err)
	}
	t.Cleanup(func() { _ = cw.del(list, rtEvil) })
	evilIP := netip.MustParseAddr(res.IPs[0].Address.IP.String())
	gw, outside := netip.MustParseAddr(gatewayIP), netip.MustParseAddr(outsideIP)
	evilMAC, gwMAC := linkMAC(t, evil, "eth0"), linkMAC(t, cw.dom0, "brlab")
	if v := cw.dom0.Sysctl(t, "net.ipv4.conf.brlab.route_localnet"); v != "1" {
		t.Fatalf("with a published port, route_localnet on brlab = %q, want 1 (the host's 127.0.0.1:8080 needs it)", v)
	}
	serveName(t, cw.dom0, 7777, "dom0") // every address of dom0, 127.0.0.1 too
	toGW := func(ipPacket []byte) []byte { return frame(gwMAC, evilMAC, unix.ETH_P_IP, ipPacket) }

	// 1. The host's loopback is not reachable from a guest, while a port is
	// published and after the last one is gone.
	loopback := func(when string) {
		c := startCapture(t, evil, "eth0")
		sendFrames(t, evil, "eth0",
			toGW(tcpSYN4(evilIP, gw, 40001, 7777)),
			toGW(tcpSYN4(evilIP, netip.MustParseAddr("127.0.0.1"), 40002, 7777)))
		synAck := func(dport uint16) func(packet) bool {
			return func(p packet) bool {
				return p.proto == unix.IPPROTO_TCP && p.sport == 7777 && p.dport == dport && p.tcpFlags&0x12 == 0x12
			}
		}
		if c.count(3*time.Second, synAck(40001)) == 0 {
			t.Errorf("%s: control: a SYN to the gateway %s:7777 got no SYN-ACK (the probe is broken)", when, gw)
		}
		if n := c.count(time.Second, synAck(40002)); n != 0 {
			t.Errorf("%s: a SYN to 127.0.0.1:7777 from the guest got %d SYN-ACK(s): the host's loopback is reachable", when, n)
		}
	}
	loopback("port published")

	// 2. Nothing leaves with a forged or loopback source, "DHCP" included.
	up := startCapture(t, cw.outside, "eth0")
	sends := []struct {
		src          string
		sport, dport uint16
		tag          string
		pass         bool
	}{
		{evilIP.String(), 40003, 4444, "control-own", true},
		{evilIP.String(), 68, 67, "control-own-dhcp", true},
		{"10.98.98.77", 68, 67, "forged-dhcp", false},
		{"0.0.0.0", 68, 67, "unspecified-dhcp-not-broadcast", false},
		{"127.0.0.1", 40004, 4444, "loopback-source", false},
	}
	for _, s := range sends {
		sendFrames(t, evil, "eth0", toGW(udp4(netip.MustParseAddr(s.src), outside, s.sport, s.dport, []byte(s.tag))))
	}
	for _, s := range sends {
		n := up.count(map[bool]time.Duration{true: 3 * time.Second, false: 500 * time.Millisecond}[s.pass],
			func(p packet) bool { return p.proto == unix.IPPROTO_UDP && string(p.payload) == s.tag })
		switch {
		case s.pass && n == 0:
			t.Errorf("%s: UDP %s:%d → %s:%d never reached the outside (the probe is broken)", s.tag, s.src, s.sport, outside, s.dport)
		case !s.pass && n != 0:
			t.Errorf("%s: UDP %s:%d → %s:%d reached the outside past antispoof", s.tag, s.src, s.sport, outside, s.dport)
		}
	}

	// 3. Only IPv4, IPv6 and ARP cross a guarded port: broadcast frames of
	// other ethertypes reach neither another guest nor the host.
	peer, host := startCapture(t, pub, "eth0"), startCapture(t, cw.dom0, "brlab")
	bcast := frame(broadcastMAC, evilMAC, unix.ETH_P_IP,
		udp4(evilIP, netip.MustParseAddr("255.255.255.255"), 40005, 4445, []byte("control-broadcast")))
	odd := []uint16{0x88b5, 0x9100, 0x8100, 0x88a8, 0x88cc, 0x4242}
	frames := [][]byte{bcast}
	for _, et := range odd {
		frames = append(frames, frame(broadcastMAC, evilMAC, et, make([]byte, 46)))
	}
	sendFrames(t, evil, "eth0", frames...)
	for _, c := range []struct {
		where string
		cap   *capture
	}{{"another guest", peer}, {"the host's bridge", host}} {
		ctl := c.cap.count(3*time.Second, func(p packet) bool { return string(p.payload) == "control-broadcast" })
		if ctl == 0 {
			t.Errorf("control: an IPv4 broadcast from the guest never reached %s (the probe is broken)", c.where)
		}
		var passed []string
		for _, et := range odd {
			if c.cap.count(0, func(p packet) bool { return p.etherType == et }) != 0 {
				passed = append(passed, fmt.Sprintf("%#04x", et))
			}
		}
		if len(passed) > 0 {
			t.Errorf("frames of ethertype %s from a guarded port reached %s", strings.Join(passed, ", "), c.where)
		}
	}

	// The last published port gone, route_localnet is off again.
	if err := cw.del(list, rtPub); err != nil {
		t.Fatalf("DEL pub: %v", err)
	}
	if v := cw.dom0.Sysctl(t, "net.ipv4.conf.brlab.route_localnet"); v != "0" {
		t.Errorf("after the last published port went, route_localnet on brlab = %q, want 0", v)
	}
	loopback("no port published")
}

// TestVifRefusesNonGuestAddresses: a vif whose ip= names the gateway, the
// network or broadcast address, an address outside the network, or a
// prefix fails with hotplug-error and leaves dom0 as it was; the guest's own
// address (the control) is accepted on the same vif.
func TestVifRefusesNonGuestAddresses(t *testing.T) {
	h := natVifHost(t, "nftables", `address6 = "fd00:98::1/64"`, "[network.default.dhcp6]", `ipv6_mode = "none"`)
	v := newXvif(7, 0)
	h.vifGuest(t, "g7", v.name(), v.mac, "10.98.98.17/24")
	h.settle(t)
	before := h.fullDump(t, v.name())
	for _, ip := range []string{gatewayIP, "fd00:98::1", "10.98.98.0", "10.98.98.255", "10.97.0.5", "10.98.98.0/24", "10.98.98.17 " + gatewayIP} {
		h.writeBackend(v, "xenbr0", map[string]string{"ip": ip})
		r := h.online(t, v, -1)
		h.failedProperly(t, v, r)
		h.sameAfterOffline(t, "refused ip="+ip, before, v.name())
	}
	h.writeBackend(v, "xenbr0", map[string]string{"ip": "10.98.98.17/24 fd00:98::17"})
	r := h.online(t, v, 0)
	h.connected(t, v, r)
	h.offline(t, v)
}

// TestQemuIfupRefusesNonGuestDevices: qemu-ifup handed the uplink, lo, a
// device with an address, a tun or another bridge's port attaches nothing
// and changes nothing (MAC, master, IPv6 addresses); a fresh tap (the
// control) is attached.
func TestQemuIfupRefusesNonGuestDevices(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{outside: true})
	w.writeConfig(fmt.Sprintf("[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\nuplink = %q\n", uplinkDev))
	w.mustRun(0, "start", "net=lab")
	w.dom0.Exec(t, "ip", "-6", "addr", "add", "fd00:99::1/64", "dev", uplinkDev, "nodad")
	w.dom0.Exec(t, "ip", "tuntap", "add", "mode", "tap", "name", "tapaddr")
	w.dom0.Exec(t, "ip", "addr", "add", "192.0.2.99/32", "dev", "tapaddr")
	w.dom0.Exec(t, "ip", "tuntap", "add", "mode", "tun", "name", "tun0")
	w.dom0.Exec(t, "ip", "tuntap", "add", "mode", "tap", "name", "tapother")
	w.dom0.Exec(t, "ip", "link", "add", "brx", "type", "bridge")
	w.dom0.Exec(t, "ip", "link", "set", "tapother", "master", "brx")
	w.dom0.Exec(t, "ip", "tuntap", "add", "mode", "tap", "name", "tapok")
	before := w.dom0.Dump(t)
	for _, dev := range []string{uplinkDev, "lo", "tapaddr", "tun0", "tapother", "brx"} {
		code, stderr := w.qemuScript("qemu-ifup", nil, dev)
		if code == 0 {
			t.Errorf("qemu-ifup %s: exit 0, want it refused", dev)
		} else if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 {
			t.Errorf("qemu-ifup %s: want one line on stderr, got:\n%s", dev, stderr)
		} else {
			t.Logf("qemu-ifup %s: %s", dev, lines[0])
		}
		if d := nstest.Diff(before, w.dom0.Dump(t)); d != "" {
			t.Errorf("qemu-ifup %s changed dom0 (- before, + after):\n%s", dev, d)
		}
	}
	if code, stderr := w.qemuScript("qemu-ifup", nil, "tapok"); code != 0 {
		t.Fatalf("control: qemu-ifup tapok: exit %d: %s", code, stderr)
	}
	if m := w.dom0.ReadSys(t, "tapok/master/uevent"); !strings.Contains(m, "INTERFACE=brlab") {
		t.Errorf("control: tapok is not on brlab (master: %q)", m)
	}
	w.qemuScript("qemu-ifdown", nil, "tapok")
}
