package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

// openForDnsmasq lets dnsmasq, which drops root, reach the test's run and
// state directories (t.TempDir makes them 0700).
func (w *world) openForDnsmasq() {
	w.t.Helper()
	for _, dir := range []string{w.runDir, w.stateDir} {
		for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				w.t.Fatal(err)
			}
		}
	}
}

// udhcpc asks for a lease from the guest and returns the address it got.
func udhcpc(t *testing.T, g *nstest.NS) (string, error) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "lease.sh")
	out := script + ".out"
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip $router $dns\" > "+out+"\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Try("busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "6", "-T", "2", "-s", script); err != nil {
		return "", err
	}
	b, err := os.ReadFile(out)
	return strings.TrimSpace(string(b)), err
}

func TestDHCPTwoNetworks(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.openForDnsmasq()
	w.writeConfig(`
[network.a]
bridge = "bra"
address = "10.98.98.1/24"
[network.a.dhcp]
range_start = "10.98.98.100"
range_end = "10.98.98.120"
domain = "a.internal"
[network.b]
bridge = "brb"
address = "10.97.0.1/24"
[network.b.dhcp]
range_start = "10.97.0.100"
range_end = "10.97.0.120"
`)
	ga, gb := nstest.New(t, "ga"), nstest.New(t, "gb")
	nstest.Veth(t, w.dom0, "pa", ga, "eth0")
	nstest.Veth(t, w.dom0, "pb", gb, "eth0")
	before := w.dom0.Dump(t)
	w.mustRun(0, "start", "net=a")
	w.mustRun(0, "start", "net=b")
	w.dom0.Exec(t, "ip", "link", "set", "pa", "master", "bra")
	w.dom0.Exec(t, "ip", "link", "set", "pb", "master", "brb")

	for _, c := range []struct {
		g                *nstest.NS
		prefix, gw, name string
	}{{ga, "10.98.98.1", "10.98.98.1", "a"}, {gb, "10.97.0.1", "10.97.0.1", "b"}} {
		got, err := udhcpc(t, c.g)
		if err != nil {
			t.Fatalf("network %s: no lease: %v", c.name, err)
		}
		f := strings.Fields(got)
		if len(f) != 3 || !strings.HasPrefix(f[0], c.prefix) || f[1] != c.gw || f[2] != c.gw {
			t.Errorf("network %s: lease %q, want an address from its own range with router and DNS %s", c.name, got, c.gw)
		}
	}
	var st struct {
		DHCP struct {
			Running bool `json:"running"`
			PID     int  `json:"pid"`
			Leases  []struct {
				IP  string `json:"ip"`
				MAC string `json:"mac"`
			} `json:"leases"`
		} `json:"dhcp"`
		Problems []string `json:"problems"`
	}
	r := w.mustRun(0, "--json", "status", "net=a")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if !st.DHCP.Running || len(st.DHCP.Leases) != 1 || !strings.HasPrefix(st.DHCP.Leases[0].IP, "10.98.98.1") || !strings.Contains(st.DHCP.Leases[0].MAC, ":") {
		t.Errorf("status of a: %s", r.stdout)
	}
	// dnsmasq dying: status says so, start restarts it.
	if err := syscall.Kill(st.DHCP.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	// A running network with a problem: status exits 1 (LSB "dead but state exists").
	if r := w.mustRun(1, "status", "net=a"); !strings.Contains(r.stdout, "not running") {
		t.Errorf("status after dnsmasq died does not say so:\n%s", r.stdout)
	}
	w.mustRun(0, "start", "net=a")
	if r := w.mustRun(0, "status", "net=a"); !strings.Contains(r.stdout, "dhcp:     running") {
		t.Errorf("start did not restart dnsmasq:\n%s", r.stdout)
	}
	// Network a's server does not answer b's guest once b's is gone.
	w.mustRun(0, "stop", "net=b")
	if got, err := udhcpc(t, gb); err == nil {
		t.Errorf("b's guest got a lease %q with b's server stopped", got)
	}
	w.mustRun(0, "stop", "net=a")
	if out := w.dom0.Exec(t, "sh", "-c", "ss -lunp | grep dnsmasq || true"); strings.TrimSpace(out) != "" {
		t.Errorf("dnsmasq still listening after stop:\n%s", out)
	}
	if d := nstest.Diff(before, w.dom0.Dump(t)); d != "" {
		t.Errorf("stop left something behind:\n%s", d)
	}
}

// A Xen vif with ip= gets that address from DHCP: vif-brouter registers a
// static lease at online and removes it at offline, without restarting dnsmasq.
func TestDHCPStaticLeaseFromVif(t *testing.T) {
	t.Parallel()
	h := newVifHost(t, worldOpts{})
	h.openForDnsmasq()
	h.writeConfig("[network.default]\nbridge = \"xenbr0\"\naddress = \"10.98.98.1/24\"\n" +
		"[network.default.dhcp]\nrange_start = \"10.98.98.100\"\nrange_end = \"10.98.98.120\"\n")
	h.mustRun(0, "start")
	h.anchor(t, "xenbr0")
	v := newXvif(7, 0)
	g := h.vifGuest(t, "g7", v.name(), "00:16:3e:00:00:77")
	h.writeBackend(v, "xenbr0", map[string]string{"mac": "00:16:3e:00:00:77", "ip": "10.98.98.77"})
	pid := func() string {
		return strings.TrimSpace(h.dom0.Exec(t, "sh", "-c", "cat "+filepath.Join(h.runDir, "default", "dnsmasq.pid")))
	}
	before := pid()
	h.connected(t, v, h.online(t, v, 0))
	got, err := udhcpc(t, g)
	if err != nil || !strings.HasPrefix(got, "10.98.98.77 ") {
		t.Fatalf("lease %q (%v), want the vif's ip= address 10.98.98.77", got, err)
	}
	if after := pid(); after != before {
		t.Errorf("dnsmasq restarted (pid %s -> %s) to learn a static lease", before, after)
	}
	h.offline(t, v)
	if got, err := udhcpc(t, g); err == nil {
		t.Errorf("after offline the guest still got a lease %q through a detached port", got)
	}
	entries, _ := os.ReadDir(filepath.Join(h.runDir, "default", "dhcp-hosts.d"))
	if len(entries) != 0 {
		t.Errorf("static lease files left after offline: %v", entries)
	}
}
