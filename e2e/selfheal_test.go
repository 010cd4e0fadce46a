package e2e

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/brouter/brouter/shared/nstest"
)

// healDeadline bounds how long a test waits for the watcher to repair what
// another tool broke. The goal is a second; a loaded test machine gets more
// before the test calls it a failure, and the time it took is logged.
const healDeadline = 8 * time.Second

// TestSelfHealing: with guests attached (a guarded VM through qemu-ifup with
// a [[network.lab.forward]] to it, a container publishing a port) and
// `network-virtual watch` running, a flushed ruleset (and, with iptables,
// flushed filter and nat tables) is repaired without any command: the guest
// reaches the outside, the forward and the published port answer and a
// spoofed packet is dropped again; a port whose
// device disappears without a detach loses its record and its antispoof
// entries. `reconcile` on an intact network changes nothing. At the end dom0
// is as it was before the network started.
func TestSelfHealing(t *testing.T) {
	forBackends(t, testSelfHealing)
}

func testSelfHealing(t *testing.T, backend string) {
	cw := newCNIWorldWith(t, worldOpts{outside: true, guests: 1})
	cw.writeConfig(fmt.Sprintf(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
uplink = %q
firewall = %q
[[network.lab.port]]
name = "vg1"
mac = "00:16:3e:00:00:11"
ips = ["10.98.98.11"]
[[network.lab.forward]]
proto = "tcp"
host_port = "2222"
guest = "10.98.98.11"
guest_port = "22"
[[network.lab.port]]
name = "tap-k*"
mac = "00:16:3e:00:00:30"
ips = ["10.98.98.30"]
`, uplinkDev, backend))
	dump := func() string { return nstest.WithoutEmptyBuiltins(cniNeutral(cw.dom0.Dump(t), "brlab")) }
	before := dump()
	cw.mustRun(0, "start", "net=lab")
	g := cw.guests[0]
	g.ns.Exec(t, "ip", "link", "set", "eth0", "address", "00:16:3e:00:00:11")
	g.ns.Exec(t, "ip", "addr", "add", "10.98.98.77/24", "dev", "eth0") // what it will forge
	if code, stderr := cw.qemuScript("qemu-ifup", nil, g.port, "brlab"); code != 0 {
		t.Fatalf("qemu-ifup %s: exit %d: %s", g.port, code, stderr)
	}
	cw.dom0.Exec(t, "ip", "tuntap", "add", "mode", "tap", "name", "tap-k1")
	if code, stderr := cw.qemuScript("qemu-ifup", nil, "tap-k1", "brlab"); code != 0 {
		t.Fatalf("qemu-ifup tap-k1: exit %d: %s", code, stderr)
	}
	list, _ := cniConflistWith(t, t.TempDir(), `
    "capabilities": {"portMappings": true},`)
	ctr := nstest.New(t, "ctr")
	rt := &libcni.RuntimeConf{ContainerID: "heal-" + ctr.Name(), NetNS: ctr.Path(), IfName: "eth0",
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}}
	if _, err := cw.add(list, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	serveName(t, ctr, 80, "ctr")
	serveName(t, g.ns, 22, "vm")

	// A spoofed echo request that gets out reaches the outside host, NATed
	// or not (with the NAT rules flushed too, it arrives with its forged
	// source and no reply can come back): count arrivals there.
	spoofed := func() bool {
		n := cw.observed("from_uplink") + cw.observed("from_guests")
		_, _ = g.ns.Try("ping", "-c1", "-W0.3", "-I", "10.98.98.77", outsideIP)
		return cw.observed("from_uplink")+cw.observed("from_guests") > n
	}
	healthy := func() (bool, string) {
		if _, err := g.ns.Try("ping", "-c1", "-W0.3", outsideIP); err != nil {
			return false, "the guest does not reach the outside"
		}
		if got, err := askWithin(cw.outside, uplinkDom0+":8080", 300*time.Millisecond); err != nil || !strings.HasPrefix(got, "ctr ") {
			return false, fmt.Sprintf("the published port does not answer (%q, %v)", got, err)
		}
		if got, err := askWithin(cw.outside, uplinkDom0+":2222", 300*time.Millisecond); err != nil || !strings.HasPrefix(got, "vm ") {
			return false, fmt.Sprintf("the forward to the VM does not answer (%q, %v)", got, err)
		}
		if spoofed() {
			return false, "a spoofed packet gets through"
		}
		return true, ""
	}
	if ok, why := healthy(); !ok {
		t.Fatalf("control, before anything broke: %s", why)
	}
	attached := dump()

	r := cw.mustRun(0, "reconcile")
	if !strings.Contains(r.stdout, "nothing to repair") {
		t.Errorf("reconcile of an intact network: want nothing to repair, got:\n%s", r)
	}
	if d := nstest.Diff(attached, dump()); d != "" {
		t.Errorf("reconcile of an intact network changed dom0 (- before, + after):\n%s", d)
	}

	breakages := [][][]string{{{"nft", "flush", "ruleset"}}}
	if backend == "iptables" {
		breakages = append(breakages, [][]string{{"iptables", "-F"}, {"iptables", "-t", "nat", "-F"}})
	}
	breakAll := func(br [][]string) string {
		for _, cmd := range br {
			cw.dom0.Exec(t, cmd...)
		}
		return fmt.Sprintf("%q", br)
	}
	// By hand first: what breaks it (the control), and reconcile repairs it.
	for _, br := range breakages {
		what := breakAll(br)
		if ok, _ := healthy(); ok {
			t.Errorf("after %s: control: everything still works (nothing was broken?)", what)
		}
		r := cw.mustRun(0, "reconcile", "net=lab")
		if ok, why := healthy(); !ok {
			t.Errorf("after %s and reconcile: %s\n%s", what, why, r)
		}
		if d := nstest.Diff(attached, dump()); d != "" {
			t.Errorf("after %s and reconcile, dom0 differs from before (- before, + after):\n%s", what, d)
		}
	}

	// Then with the watcher, without any command.
	logs := cw.startWatch(t)
	time.Sleep(300 * time.Millisecond) // its first reconcile of every network
	for _, br := range breakages {
		what := breakAll(br)
		took, why := waitFor(healDeadline, healthy)
		if why != "" {
			t.Fatalf("after %s: not repaired within %s: %s\nwatch log:\n%s", what, healDeadline, why, logs)
		}
		t.Logf("after %s: repaired by the watcher in %s", what, took.Round(10*time.Millisecond))
		if d := nstest.Diff(attached, dump()); d != "" {
			t.Errorf("after %s and its repair, dom0 differs from before (- before, + after):\n%s", what, d)
		}
	}

	// A tap whose owner died without qemu-ifdown: the tap goes, and so do its
	// record and antispoof entries.
	tapState := func() bool {
		_, err := os.Stat(cw.runDir + "/ports/lab/tap-k1.json")
		return err == nil || strings.Contains(cw.dom0.Exec(t, "nft", "list", "ruleset"), "tap-k1") ||
			backend == "iptables" && strings.Contains(cw.dom0.Exec(t, "ebtables", "-L"), "tap-k1")
	}
	if !tapState() {
		t.Fatal("control: tap-k1 has no record or antispoof entries")
	}
	cw.dom0.Exec(t, "ip", "link", "del", "tap-k1")
	took, why := waitFor(healDeadline, func() (bool, string) {
		if tapState() {
			return false, "tap-k1's record or antispoof entries are still there"
		}
		return true, ""
	})
	if why != "" {
		t.Errorf("deleted tap: %s after %s\nwatch log:\n%s", why, healDeadline, logs)
	} else {
		t.Logf("deleted tap: its state removed by the watcher in %s", took.Round(10*time.Millisecond))
	}
	t.Logf("watch log:\n%s", logs)

	if err := cw.del(list, rt); err != nil {
		t.Errorf("DEL: %v", err)
	}
	if code, stderr := cw.qemuScript("qemu-ifdown", nil, g.port, "brlab"); code != 0 {
		t.Errorf("qemu-ifdown: exit %d: %s", code, stderr)
	}
	cw.mustRun(0, "stop", "net=lab")
	if d := nstest.Diff(before, dump()); d != "" {
		t.Errorf("after stop, dom0 differs from before start (- before, + after):\n%s", d)
	}
}

// waitFor polls ok until it holds or d has passed; it returns how long that
// took, or why it still does not hold.
func waitFor(d time.Duration, ok func() (bool, string)) (time.Duration, string) {
	start := time.Now()
	for {
		good, why := ok()
		if good {
			return time.Since(start), ""
		}
		if time.Since(start) > d {
			return time.Since(start), why
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWatch runs `network-virtual watch` in dom0 until the test ends; its
// log (one line per repair) is returned.
func (w *world) startWatch(t *testing.T) *syncBuffer {
	t.Helper()
	logs := &syncBuffer{}
	c := w.dom0.Cmd(w.bin, "watch")
	c.Env = append(os.Environ(), "BROUTER_CONFIG="+w.config, "BROUTER_RUN_DIR="+w.runDir, "BROUTER_STATE_DIR="+w.stateDir)
	c.Stdout, c.Stderr = logs, logs
	w.dom0.StartCmd(t, c)
	return logs
}
