package vnet

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/nstest"
	"github.com/brouter/brouter/shared/shape"
)

const tapDoc = `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
allow_users = [1000]
[network.lab.shaping]
from_guest = "10mbit"
[[network.lab.port]]
name = "tap1000.*"
mac = "52:54:00:98:00:30"
ips = ["10.98.98.30"]

[network.shut]
bridge = "brshut"
address = "10.98.99.1/24"

[network.rt]
mode = "route"
address = "10.98.97.1/24"

[network.down]
bridge = "brdown"
address = "10.98.96.1/24"
`

// A helper's tap: refused to a user the network does not allow, attached
// like every port for one it does (bridge, shaping with its ifb, the port
// rule's antispoof); once the tap is gone (its QEMU exited) the user's next
// tap takes its name and starts clean, and Reconcile removes what outlived
// the last one; a port whose device lives stays.
func TestAttachTapAndReconcile(t *testing.T) {
	f := newFixture(t, tapDoc)
	lab, shut := f.net(t, "lab"), f.net(t, "shut")
	for _, n := range []string{"lab", "shut"} {
		if err := f.do(t, func() error { return f.m.Start(f.net(t, n)) }); err != nil {
			t.Fatal(err)
		}
	}
	f.ns.Exec(t, "ip", "link", "add", "vg1", "type", "veth", "peer", "name", "vg1g")
	if err := f.do(t, func() error { return f.m.Attach(lab, PortRequest{Name: "vg1"}) }); err != nil {
		t.Fatal(err)
	}
	before := f.dump(t)
	user := Caller{UID: 1000, Groups: []uint32{1000}}

	// Denied: a network without allow lists, a user not in this one's.
	for _, c := range []struct {
		n  string
		c  Caller
		ok bool
	}{{"shut", user, false}, {"lab", Caller{UID: 1001, Groups: []uint32{1001}}, false}, {"shut", Caller{UID: 0}, true}} {
		var fd int
		var name string
		err := f.do(t, func() (err error) { fd, name, err = f.m.AttachTap(f.net(t, c.n), c.c, true); return })
		if c.ok {
			if err != nil || name != "tap0.0" {
				t.Fatalf("root on %s: %s, %v; want tap0.0", c.n, name, err)
			}
			unix.Close(fd)
			continue
		}
		if !errors.Is(err, ErrAccessDenied) {
			t.Errorf("uid %d on %s: %v, want access denied", c.c.UID, c.n, err)
		}
	}
	// A network that is not running: refused, and the tap made for it goes.
	down := f.net(t, "down")
	if err := f.do(t, func() error { _, _, err := f.m.AttachTap(down, Caller{UID: 0}, false); return err }); err == nil || !strings.Contains(err.Error(), "network down is not running") {
		t.Errorf("a tap on a network that is not running: %v", err)
	}
	// Root's tap went with its descriptor; reconcile detaches what is left.
	if r, err := f.do2(t, func() ([]string, error) { return f.m.Reconcile(shut) }); err != nil || len(r) != 1 || !strings.HasPrefix(r[0], "port tap0.0: its device is gone") {
		t.Fatalf("reconcile after root's closed tap: %q, %v", r, err)
	}
	if d := nstest.Diff(before, f.dump(t)); d != "" {
		t.Errorf("refusals and root's closed tap changed the host:\n%s", d)
	}

	attach := func() (int, string) {
		t.Helper()
		var fd int
		var name string
		if err := f.do(t, func() (err error) { fd, name, err = f.m.AttachTap(lab, user, true); return }); err != nil {
			t.Fatal(err)
		}
		return fd, name
	}
	fd, name := attach()
	if name != "tap1000.0" {
		t.Errorf("tap named %s, want tap1000.0", name)
	}
	if out := f.ns.Exec(t, "ip", "-d", "link", "show", name); !strings.Contains(out, "master brlab") || !strings.Contains(out, "vnet_hdr on") || !strings.Contains(out, "fe:ff:ff:ff:ff:ff") {
		t.Errorf("%s is not a vnet_hdr tap on brlab with the host port MAC:\n%s", name, out)
	}
	if p, ok := f.fw.Port("lab", name); !ok || p.MAC.String() != "52:54:00:98:00:30" {
		t.Errorf("antispoof of %s: %+v (present %v), want the port rule's guest", name, p, ok)
	}
	ifb := shape.PortIfb(name)
	if _, err := f.ns.Try("ip", "link", "show", ifb); err != nil {
		t.Errorf("no ifb %s for the tap's from_guest shaping", ifb)
	}

	// QEMU exits: the tap goes, what outlives it stays until pruned. A new
	// tap of the same user first prunes it and gets the same name, clean.
	unix.Close(fd)
	if _, err := f.ns.Try("ip", "link", "show", ifb); err != nil {
		t.Errorf("the ifb went with the tap; this test needs state that outlives it")
	}
	fd, name = attach()
	if name != "tap1000.0" {
		t.Errorf("second tap named %s, want tap1000.0 again", name)
	}
	unix.Close(fd)
	repairs, err := f.do2(t, func() ([]string, error) { return f.m.Reconcile(lab) })
	if err != nil || len(repairs) != 1 || !strings.HasPrefix(repairs[0], "port tap1000.0: its device is gone") {
		t.Errorf("Reconcile = %q, %v; want tap1000.0 detached", repairs, err)
	}
	if d := nstest.Diff(before, f.dump(t)); d != "" {
		t.Errorf("after the tap went and reconcile, the host differs (- before, + after):\n%s", d)
	}
	if _, ok := f.fw.Port("lab", "tap1000.0"); ok {
		t.Errorf("antispoof entries of the gone tap left")
	}
	if ports, _ := f.m.Ports("lab"); !slices.Equal(ports, []string{"vg1"}) {
		t.Errorf("ports recorded after reconcile: %v, want the live vg1 only", ports)
	}

	// A tap that cannot be handed over is taken back entirely.
	fd, name = attach()
	if err := f.do(t, func() error { return f.m.DetachTap(lab, fd, name) }); err != nil {
		t.Fatal(err)
	}
	if d := nstest.Diff(before, f.dump(t)); d != "" {
		t.Errorf("DetachTap left (- before, + after):\n%s", d)
	}
}

func TestHelperNetwork(t *testing.T) {
	f := newFixture(t, tapDoc)
	if n, err := f.m.HelperNetwork("brlab"); err != nil || n.Name != "lab" {
		t.Errorf("brlab: %v, %v", n, err)
	}
	for br, want := range map[string]string{
		"virbr0":  "bridge virbr0 is not a brouter network: no [network.NAME] in test.toml has bridge = \"virbr0\"",
		"rt":      "bridge rt is not a brouter network",
		"br/0":    "contains '/'",
		"-brlab":  "starts with '-'",
		"brshut ": "whitespace",
	} {
		if _, err := f.m.HelperNetwork(br); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", br, err, want)
		}
	}
}

// do2 is do for a function that returns a value.
func (f *fixture) do2(t *testing.T, fn func() ([]string, error)) ([]string, error) {
	t.Helper()
	var out []string
	err := f.ns.Do(func() (err error) { out, err = fn(); return })
	return out, err
}

// dump is the namespace's state without what the kernel gives a bridge
// when its first port comes up (an IPv6 link-local address and route) and
// takes, a moment after the last goes (its carrier).
func (f *fixture) dump(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(f.ns.Dump(t), "\n") {
		if strings.Contains(l, " inet6 fe80:") || strings.HasPrefix(l, "route-6 fe80::/64 ") {
			continue
		}
		l = strings.ReplaceAll(strings.ReplaceAll(l, " linkdown", ""), "NO-CARRIER,", "")
		b.WriteString(l + "\n")
	}
	return b.String()
}
