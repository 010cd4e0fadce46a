package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/brouter/brouter/shared/nstest"
)

// [[network.NAME.port]] rules apply to every kind of port, because vnet's
// Attach applies them: a QEMU tap, a Xen vif and a CNI veth whose name (and
// guest MAC) match a rule get its antispoof entries; a port beside it that
// the rule does not match gets none (the control).

// antispoofSet is the nftables set of a network's guarded (port, IPv4) pairs.
func antispoofSet(t *testing.T, dom0 *nstest.NS, network string) string {
	t.Helper()
	out, err := dom0.Try("nft", "list", "set", "bridge", "brouter-"+network, "as_ip4")
	if err != nil {
		return "" // no guarded port yet: no table
	}
	return out
}

func TestPortRuleQemuTap(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.writeConfig(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
firewall = "nftables"
[[network.lab.port]]
name = "tap-r*"
mac = "00:16:3e:00:00:30"
ips = ["10.98.98.30"]
[[network.lab.shaping.port]]
mac = "00:16:3e:00:00:30"
to_guest = "5mbit"
`)
	w.mustRun(0, "start", "net=lab")
	for _, tap := range []string{"tap-r0", "tap-c0"} {
		w.dom0.Exec(t, "ip", "tuntap", "add", "mode", "tap", "name", tap)
		if code, stderr := w.qemuScript("qemu-ifup", nil, tap, "brlab"); code != 0 {
			t.Fatalf("qemu-ifup %s: exit %d: %s", tap, code, stderr)
		}
	}
	set := antispoofSet(t, w.dom0, "lab")
	if !strings.Contains(set, `"tap-r0" . 10.98.98.30`) {
		t.Errorf("the rule's tap has no antispoof entry:\n%s", set)
	}
	if strings.Contains(set, `"tap-c0"`) {
		t.Errorf("the control tap has an antispoof entry:\n%s", set)
	}
	// The guest MAC the rule gives selects the MAC's shaping rule.
	if cls := w.dom0.Exec(t, "tc", "class", "show", "dev", "tap-r0"); !strings.Contains(cls, "rate 5Mbit") {
		t.Errorf("tap-r0: no 5Mbit to-guest class:\n%s", cls)
	}
	if cls := w.dom0.Exec(t, "tc", "class", "show", "dev", "tap-c0"); strings.Contains(cls, "rate") {
		t.Errorf("the control tap is shaped:\n%s", cls)
	}
	for _, tap := range []string{"tap-r0", "tap-c0"} {
		if code, stderr := w.qemuScript("qemu-ifdown", nil, tap); code != 0 {
			t.Fatalf("qemu-ifdown %s: exit %d: %s", tap, code, stderr)
		}
	}
	if set := antispoofSet(t, w.dom0, "lab"); strings.Contains(set, "tap-r0") {
		t.Errorf("ifdown left tap-r0's antispoof entry:\n%s", set)
	}
}

func TestPortRuleXenVif(t *testing.T) {
	t.Parallel()
	v, other := newXvif(7, 0), newXvif(8, 0)
	// The rule names the guest by its MAC: a vif whose name matches but whose
	// guest is another gets nothing from it.
	h := natVifHost(t, "nftables", fmt.Sprintf("[[network.default.port]]\nname = \"vif*\"\nmac = %q\nips = [\"10.98.98.17\"]", v.mac))
	h.vifGuest(t, "g7", v.name(), v.mac, "10.98.98.17/24")
	h.vifGuest(t, "g8", other.name(), other.mac, "10.98.98.18/24")
	for _, x := range []xvif{v, other} {
		h.writeBackend(x, "xenbr0", nil) // no ip key: only the rule knows the address
	}
	h.settle(t)
	before := h.fullDump(t, v.name(), other.name())
	for _, x := range []xvif{v, other} {
		h.connected(t, x, h.online(t, x, 0))
	}
	set := antispoofSet(t, h.dom0, "default")
	if !strings.Contains(set, fmt.Sprintf("%q . 10.98.98.17", v.name())) {
		t.Errorf("%s (the rule's guest) has no antispoof entry:\n%s", v.name(), set)
	}
	if strings.Contains(set, fmt.Sprintf("%q", other.name())) {
		t.Errorf("%s (another guest) has an antispoof entry:\n%s", other.name(), set)
	}
	for _, x := range []xvif{v, other} {
		h.offline(t, x)
	}
	h.sameAfterOffline(t, "after offline", before, v.name(), other.name())
}

func TestPortRuleCNIVeth(t *testing.T) {
	t.Parallel()
	cw, _ := newLabCNIWorld(t)
	const ruleMAC, otherMAC = "00:16:3e:00:00:40", "00:16:3e:00:00:41"
	// A CNI veth's name is brv<hash>: a rule selects a container by its MAC.
	cw.writeConfig(fmt.Sprintf(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
firewall = "nftables"
[[network.lab.port]]
name = "*"
mac = %q
antispoof = true
`, ruleMAC))
	cw.mustRun(0, "start", "net=lab")
	// The CNI config turns per-container antispoof off; the host's rule turns it back on.
	list, _ := cniConflistWith(t, t.TempDir(), `
    "antispoof": false,
    "capabilities": {"mac": true},`)
	var veths, addrs []string
	var rts []*libcni.RuntimeConf
	for i, mac := range []string{ruleMAC, otherMAC} {
		c := nstest.New(t, "ctr")
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("rule%d-%s", i, c.Name()), NetNS: c.Path(), IfName: "eth0",
			CapabilityArgs: map[string]any{"mac": mac}}
		res, err := cw.add(list, rt)
		if err != nil {
			t.Fatalf("ADD %s: %v", mac, err)
		}
		rts = append(rts, rt)
		veths = append(veths, cniHostVeth(rt.ContainerID, "eth0"))
		addrs = append(addrs, res.IPs[0].Address.IP.String())
	}
	set := antispoofSet(t, cw.dom0, "lab")
	if !strings.Contains(set, fmt.Sprintf("%q . %s", veths[0], addrs[0])) {
		t.Errorf("the rule's container (%s, %s) has no antispoof entry:\n%s", veths[0], addrs[0], set)
	}
	if strings.Contains(set, fmt.Sprintf("%q", veths[1])) {
		t.Errorf("the control container (%s) has an antispoof entry:\n%s", veths[1], set)
	}
	for _, rt := range rts {
		if err := cw.check(list, rt); err != nil {
			t.Errorf("CHECK %s: %v", rt.ContainerID, err)
		}
		if err := cw.del(list, rt); err != nil {
			t.Errorf("DEL %s: %v", rt.ContainerID, err)
		}
	}
	if set := antispoofSet(t, cw.dom0, "lab"); strings.Contains(set, veths[0]) {
		t.Errorf("DEL left %s's antispoof entry:\n%s", veths[0], set)
	}
}
