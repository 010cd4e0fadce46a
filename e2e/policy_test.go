package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/brouter/brouter/shared/nstest"
)

// The network policy of issue 12 in one world per backend: three networks
// (lab nat, rt routed, dmz nat; IPv4 and IPv6), four guests attached
// through qemu-ifup (vnet's Attach), an outside host and dom0's services.
//
//	outside 192.0.2.2, 2001:db8:1::2  --  dom0 up0 192.0.2.1, 2001:db8:1::1
//	lab  brlab  10.98.98.1/24 fd00:98::1/64  g1 .11 ("web"), g2 .12
//	rt   brrt   10.97.0.1/24  fd00:97::1/64  g3 .13   (routed: outside routes to it)
//	dmz  brdmz  10.96.0.1/24  fd00:96::1/64  g4 .14
//
// Phase A: forwards (outside, dom0's address and 127.0.0.1, hairpin, a
// range, IPv6), outgoing tcp/25 denied to all, isolate_guests, host_access
// "services", incoming default deny in rt, no reach. Phase B (start again
// with a changed config): reach, tcp/25 denied to one guest, isolation off,
// a forward moved; a container asking for a forwarded host port is refused;
// bad configs change nothing; stop restores dom0.
func TestPolicy(t *testing.T) {
	forBackends(t, testPolicy)
}

const policyConfigA = `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
address6 = "fd00:98::1/64"
firewall = "%[1]s"
isolate_guests = true
host_access = "services"
host_services = ["tcp/22", "icmp"]
[network.lab.dhcp]
domain = "lab.internal"
[[network.lab.dhcp.host]]
mac = "00:16:3e:98:00:11"
ip = "10.98.98.11"
name = "web"
[[network.lab.forward]]
host_port = %[2]d
guest = "web"
guest_port = 80
[[network.lab.forward]]
proto = "tcp"
host_port = "9000-9002"
guest = "10.98.98.11"
guest_port = "9100"
[[network.lab.forward]]
host_port = 8086
guest = "fd00:98::11"
guest_port = 80
[network.lab.outgoing]
[[network.lab.outgoing.deny]]
proto = "tcp"
port = 25
%[3]s

[network.rt]
bridge = "brrt"
address = "10.97.0.1/24"
address6 = "fd00:97::1/64"
mode = "routed"
firewall = "%[1]s"
[network.rt.incoming]
default = "deny"
[[network.rt.incoming.allow]]
proto = "tcp"
port = 443

[network.dmz]
bridge = "brdmz"
address = "10.96.0.1/24"
address6 = "fd00:96::1/64"
firewall = "%[1]s"
`

// Phase B: lab reaches dmz and rt, no longer isolates its guests, denies
// tcp/25 to g1 only, and forwards 8081 instead of 8080.
func policyConfigB(backend string) string {
	s := fmt.Sprintf(policyConfigA, backend, 8081, `from = ["10.98.98.11"]`)
	s = strings.Replace(s, "isolate_guests = true", "isolate_guests = false\nreach = [\"dmz\", \"rt\"]", 1)
	return s
}

type policyGuest struct {
	ns       *nstest.NS
	port     string // dom0's end
	ip4, ip6 string
}

// policyGuest makes a guest namespace behind dom0's port and attaches the
// port to bridge with qemu-ifup, as QEMU would a tap.
func (w *world) policyGuest(t *testing.T, port, ip4, ip6 string) *policyGuest {
	t.Helper()
	g := &policyGuest{ns: nstest.New(t, port), port: port, ip4: ip4, ip6: ip6}
	nstest.Veth(t, w.dom0, port, g.ns, "eth0")
	gw4 := ip4[:strings.LastIndex(ip4, ".")] + ".1"
	gw6 := ip6[:strings.LastIndex(ip6, ":")] + ":1"
	g.ns.Exec(t, "ip", "link", "set", "lo", "up")
	g.ns.Exec(t, "ip", "addr", "add", ip4+"/24", "dev", "eth0")
	g.ns.Exec(t, "ip", "addr", "add", ip6+"/64", "dev", "eth0", "nodad")
	g.ns.Exec(t, "ip", "route", "add", "default", "via", gw4)
	g.ns.Exec(t, "ip", "-6", "route", "add", "default", "via", gw6)
	return g
}

func (w *world) ifup(t *testing.T, port, bridge string) {
	t.Helper()
	if code, stderr := w.qemuScript("qemu-ifup", nil, port, bridge); code != 0 {
		t.Fatalf("qemu-ifup %s %s: exit %d: %s", port, bridge, code, stderr)
	}
}

// mustNotConnect fails the test if a TCP connection from ns to addr is
// answered within a second (a dropped SYN times out; that is the point).
func mustNotConnect(t *testing.T, from *nstest.NS, what, addr string) {
	t.Helper()
	err := from.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("%s: %s accepts the connection, want it refused", what, addr)
	}
}

// isolated reports the bridge port flag of dom0's port, as the kernel has it.
func (w *world) isolated(t *testing.T, port string) string {
	t.Helper()
	m := regexp.MustCompile(`isolated (on|off)`).FindStringSubmatch(w.dom0.Exec(t, "bridge", "-d", "link", "show", "dev", port))
	if m == nil {
		return "?"
	}
	return m[1]
}

func testPolicy(t *testing.T, backend string) {
	cw := newCNIWorldWith(t, worldOpts{outside: true})
	w := cw.world
	w.openForDnsmasq()
	w.dom0.Exec(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", uplinkDev, "nodad")
	w.dom0.Exec(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:1::2")
	w.dom0.Exec(t, "ip", "link", "set", "lo", "up")
	// Without br_netfilter, as on a host without Docker: with it, the kernel
	// bridges a DNATed connection between two ports of one bridge instead
	// of routing it, and port isolation then drops it (see README).
	for _, k := range []string{"iptables", "ip6tables"} {
		w.dom0.Exec(t, "sh", "-c", "f=/proc/sys/net/bridge/bridge-nf-call-"+k+"; [ ! -e $f ] || echo 0 > $f")
	}
	w.outside.Exec(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
	w.outside.Exec(t, "ip", "route", "add", "10.97.0.0/24", "via", uplinkDom0)
	w.outside.Exec(t, "ip", "-6", "route", "add", "fd00::/8", "via", "2001:db8:1::1")
	g1 := w.policyGuest(t, "vg1", "10.98.98.11", "fd00:98::11")
	g2 := w.policyGuest(t, "vg2", "10.98.98.12", "fd00:98::12")
	g3 := w.policyGuest(t, "vg3", "10.97.0.13", "fd00:97::13")
	g4 := w.policyGuest(t, "vg4", "10.96.0.14", "fd00:96::14")
	qdisc := regexp.MustCompile(` qdisc=[a-z_]+`)
	dump := func() string {
		d := qdisc.ReplaceAllString(strings.ReplaceAll(w.dom0.Dump(t), " linkdown", ""), "")
		for _, br := range []string{"brlab", "brrt", "brdmz"} {
			d = cniNeutral(d, br)
		}
		// A port's link-local address follows the MAC it had when its IPv6
		// came back on (vnet restores the MAC after): not policy's.
		d = regexp.MustCompile(`(?m)^addr vg\d inet6 fe80:.*\n`).ReplaceAllString(d, "")
		if backend == "iptables" {
			// iptables-nft and ebtables-nft create built-in chains on first use
			// and never remove them; empty ones are not brouter's.
			d = nstest.WithoutEmptyBuiltins(d)
		}
		return d
	}
	before := dump()
	t0 := time.Now()

	w.writeConfig(fmt.Sprintf(policyConfigA, backend, 8080, ""))
	for _, n := range []string{"lab", "rt", "dmz"} {
		w.mustRun(0, "start", "net="+n)
	}
	for _, g := range []*policyGuest{g1, g2} {
		w.ifup(t, g.port, "brlab")
	}
	w.ifup(t, g3.port, "brrt")
	w.ifup(t, g4.port, "brdmz")
	serveName(t, g1.ns, 80, "g1")
	serveName(t, g1.ns, 9100, "g1-9100")
	serveName(t, g1.ns, 9102, "g1-9102")
	serveName(t, g3.ns, 80, "g3-80")
	serveName(t, g3.ns, 443, "g3-443")
	serveName(t, g4.ns, 80, "g4")
	serveName(t, w.outside, 25, "out25")
	serveName(t, w.outside, 80, "out80")
	serveName(t, w.dom0, 22, "dom0-22")
	serveName(t, w.dom0, 23, "dom0-23")

	t.Run("forwards", func(t *testing.T) {
		mustReach(t, w.outside, "outside", uplinkDom0+":8080", "g1")
		mustReach(t, w.dom0, "dom0, its uplink address", uplinkDom0+":8080", "g1")
		mustReach(t, w.dom0, "dom0, 127.0.0.1", "127.0.0.1:8080", "g1")
		mustReach(t, g2.ns, "hairpin from g2 (isolated), gateway", "10.98.98.1:8080", "g1")
		mustReach(t, g2.ns, "hairpin from g2 (isolated), uplink address", uplinkDom0+":8080", "g1")
		mustReach(t, g1.ns, "hairpin to itself", "10.98.98.1:8080", "g1")
		mustReach(t, w.outside, "range, first port", uplinkDom0+":9000", "g1-9100")
		mustReach(t, w.outside, "range, last port", uplinkDom0+":9002", "g1-9102")
		mustReach(t, w.outside, "IPv6 forward", "[2001:db8:1::1]:8086", "g1")
		mustReach(t, w.dom0, "IPv6 forward from dom0", "[2001:db8:1::1]:8086", "g1")
		mustNotConnect(t, w.outside, "a port of no forward", uplinkDom0+":9003")
	})
	t.Run("outgoing", func(t *testing.T) {
		for _, g := range []*policyGuest{g1, g2} {
			mustNotConnect(t, g.ns, g.port+" to tcp/25", outsideIP+":25")
			mustReach(t, g.ns, g.port+" to tcp/80", outsideIP+":80", "out80")
		}
	})
	t.Run("isolate_guests", func(t *testing.T) {
		if f := w.isolated(t, g1.port); f != "on" {
			t.Errorf("port %s: isolated %s, want on", g1.port, f)
		}
		mustNotPing(t, g1.ns, "g1", g2.ip4)
		mustPing(t, g1.ns, "g1 to the gateway", "10.98.98.1")
		mustPing(t, g1.ns, "g1 to the outside", outsideIP)
	})
	t.Run("host_access", func(t *testing.T) {
		out, err := g1.ns.Try("busybox", "nslookup", "web.lab.internal", "10.98.98.1")
		if err != nil || !strings.Contains(out, "10.98.98.11") {
			t.Errorf("DNS from a guest: %v\n%s", err, out)
		}
		mustReach(t, g1.ns, "a host service (tcp/22)", uplinkDom0+":22", "dom0-22")
		mustNotConnect(t, g1.ns, "another TCP service of the host from a guest", uplinkDom0+":23")
		mustReach(t, w.outside, "that service from outside", uplinkDom0+":23", "dom0-23")
	})
	t.Run("incoming", func(t *testing.T) {
		mustReach(t, w.outside, "allowed port", g3.ip4+":443", "g3-443")
		mustReach(t, w.outside, "allowed port, IPv6", "["+g3.ip6+"]:443", "g3-443")
		mustNotConnect(t, w.outside, "other port", g3.ip4+":80")
		mustNotConnect(t, w.outside, "other port, IPv6", "["+g3.ip6+"]:80")
		mustReach(t, g3.ns, "replies to the guest's own connections", outsideIP+":80", "out80")
	})
	t.Run("no reach", func(t *testing.T) {
		mustNotConnect(t, g1.ns, "nat to nat, IPv6", "["+g4.ip6+"]:80")
		mustNotConnect(t, g1.ns, "nat to routed, IPv4", g3.ip4+":443")
		mustNotConnect(t, g4.ns, "nat to nat, IPv4", g1.ip4+":80")
	})

	t.Logf("phase A done after %v", time.Since(t0))
	w.writeConfig(policyConfigB(backend))
	for _, n := range []string{"lab", "rt", "dmz"} {
		w.mustRun(0, "start", "net="+n)
	}
	t.Run("changed", func(t *testing.T) {
		if f := w.isolated(t, g1.port); f != "off" {
			t.Errorf("port %s: isolated %s after isolate_guests = false", g1.port, f)
		}
		mustPing(t, g1.ns, "g1 to g2, isolation off", g2.ip4)
		mustNotConnect(t, g1.ns, "g1 to tcp/25", outsideIP+":25")
		mustReach(t, g2.ns, "g2 to tcp/25", outsideIP+":25", "out25")
		mustReach(t, w.outside, "moved forward", uplinkDom0+":8081", "g1")
		mustNotConnect(t, w.outside, "the forward's old port", uplinkDom0+":8080")
	})
	t.Run("reach", func(t *testing.T) {
		mustReach(t, g1.ns, "lab to dmz, IPv6", "["+g4.ip6+"]:80", "g4")
		if got, err := ask(g1.ns, g4.ip4+":80"); err != nil || !strings.Contains(got, g1.ip4+":") {
			t.Errorf("lab to dmz, IPv4: %q %v; want g4 to see g1's own address (no masquerade between networks)", got, err)
		}
		mustReach(t, g1.ns, "lab to routed rt, a port its incoming filter denies", g3.ip4+":80", "g3-80")
		mustNotConnect(t, g4.ns, "dmz to lab (dmz has no reach)", g1.ip4+":80")
		mustNotConnect(t, g4.ns, "dmz to lab, IPv6", "["+g1.ip6+"]:80")
		mustNotConnect(t, g3.ns, "rt to lab", g1.ip4+":80")
	})
	t.Run("container hostPort", func(t *testing.T) {
		list, _ := cniConflistWith(t, t.TempDir(), `
    "capabilities": {"portMappings": true},`)
		ctr := nstest.New(t, "ctr")
		rt := &libcni.RuntimeConf{ContainerID: "policy-" + ctr.Name(), NetNS: ctr.Path(), IfName: "eth0",
			CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}}}}
		mid := dump()
		_, err := cw.add(list, rt)
		if err == nil || !strings.Contains(err.Error(), "already published by network lab") {
			t.Errorf("ADD asking for a forwarded host port: %v, want it refused naming network lab", err)
		}
		if d := nstest.Diff(mid, dump()); d != "" {
			t.Errorf("the refused ADD changed dom0 (- before, + after):\n%s", d)
		}
		mustReach(t, w.outside, "the forward after the refused ADD", uplinkDom0+":8081", "g1")
	})
	t.Run("bad input", func(t *testing.T) {
		good := policyConfigB(backend)
		mid := dump()
		for _, c := range []struct{ what, config string }{
			{"unknown key", good + "[network.extra]\nisolate = true\n"},
			{"forward outside the network", good + "[[network.dmz.forward]]\nhost_port = 2222\nguest = \"10.98.98.11\"\n"},
			{"overlapping host port range", good + "[[network.dmz.forward]]\nhost_port = \"9001-9005\"\nguest = \"10.96.0.14\"\n"},
			{"reach naming an unknown network", strings.Replace(good, `reach = ["dmz", "rt"]`, `reach = ["dmz", "nope"]`, 1)},
			{"port 0", good + "[[network.dmz.forward]]\nhost_port = 0\nguest = \"10.96.0.14\"\n"},
			{"port 70000", good + "[[network.dmz.forward]]\nhost_port = 7000\nguest = \"10.96.0.14\"\nguest_port = 70000\n"},
		} {
			w.writeConfig(c.config)
			r := w.run("start", "net=lab")
			oneLineError(t, r)
			t.Logf("%s: %s", c.what, strings.TrimSpace(r.stderr))
		}
		if d := nstest.Diff(mid, dump()); d != "" {
			t.Errorf("bad configs changed dom0 (- before, + after):\n%s", d)
		}
		w.writeConfig(good)
	})

	t.Logf("phase B done after %v", time.Since(t0))
	for _, n := range []string{"lab", "rt", "dmz"} {
		w.mustRun(0, "stop", "net="+n)
	}
	t.Logf("stopped after %v", time.Since(t0))
	if d := nstest.Diff(before, dump()); d != "" {
		t.Errorf("dom0 after stop differs (- before, + after):\n%s", d)
	}
	if ents, _ := os.ReadDir(filepath.Join(w.runDir, "hostports")); len(ents) != 0 {
		t.Errorf("host port claims left after stop: %d", len(ents))
	}
	mustNotConnect(t, w.outside, "a forward after stop", uplinkDom0+":8081")
}
