package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/brouter/brouter/e2e/qemu"
	"github.com/brouter/brouter/shared/nstest"
)

// The real-guest scenario: a QEMU guest (TCG) whose tap QEMU hands to
// qemu-ifup/qemu-ifdown, on a brouter NAT network with DHCP and DNS.
//
//	outside 192.0.2.2 <-> dom0 up0 192.0.2.1, brlab 10.98.98.1/24 (dnsmasq) <-> tap-q0 <-> guest eth0 (DHCP)
const (
	qemuTap       = "tap-q0"
	qemuGuestMAC  = "52:54:00:98:00:57"
	qemuRangeLo   = "10.98.98.50"
	qemuRangeHi   = "10.98.98.99"
	qemuDomain    = "lab.internal"
	qemuHostMAC   = "52:54:00:98:00:20" // a static host that is not booted: only its name is resolved
	qemuHostIP    = "10.98.98.20"
	qemuHostName  = "web"
	qemuBootLimit = 150 * time.Second // a boot to poweroff takes 3-6 s here (TCG); a failed DHCP about 33 s
)

// qemuGuest returns the guest's kernel and initrd, or skips the test when this
// machine cannot run one (no QEMU, no /dev/net/tun, the Debian packages
// cannot be had).
func qemuGuest(t *testing.T) (kernel, initrd string) {
	t.Helper()
	if err := qemu.Available(); err != nil {
		t.Skipf("no real guest: %v (apt-get install --no-install-recommends qemu-system-x86)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	g, err := qemu.Build(ctx, qemu.DefaultCacheDir())
	if errors.Is(err, qemu.ErrUnavailable) {
		t.Skipf("no real guest: %v", err)
	}
	if err != nil {
		t.Fatalf("building the guest: %v", err)
	}
	t.Logf("guest %s (cached %v, %s): modules %s", g.Version, g.Cached, time.Since(start).Round(time.Millisecond), strings.Join(g.Modules, " "))
	return g.Kernel, g.Initrd
}

// bootGuest boots the guest in dom0 with the given scripts and reports.
func (w *world) bootGuest(kernel, initrd, ifup, ifdown, mac string, env []string, appendArgs ...string) *qemu.Result {
	w.t.Helper()
	res, err := qemu.Boot(context.Background(), qemu.Options{
		NS: w.dom0, Kernel: kernel, Initrd: initrd,
		Tap: qemuTap, IfUp: ifup, IfDown: ifdown, MAC: mac,
		Append: appendArgs,
		Env: append([]string{
			"BROUTER_CONFIG=" + w.config,
			"BROUTER_RUN_DIR=" + w.runDir,
			"BROUTER_STATE_DIR=" + w.stateDir,
		}, env...),
		Timeout: qemuBootLimit,
	})
	if res != nil {
		w.t.Logf("QEMU exited %d after %s; reports: %q", res.ExitCode, res.Elapsed.Round(100*time.Millisecond), res.Lines)
	}
	if err != nil || res.ExitCode != 0 || !res.Done {
		console := ""
		if res != nil {
			console = res.Console
		}
		w.t.Fatalf("guest run failed (err %v):\n%s", err, console)
	}
	return res
}

// checkGuest asserts the reports every scenario expects: a lease (wantIP, or
// from the range when wantIP is "") with the gateway as router and DNS
// server, both pings through, the static host's name resolved. It returns
// false, having checked nothing else, when the guest got no lease.
func checkGuest(t *testing.T, res *qemu.Result, wantIP string) bool {
	t.Helper()
	for _, l := range res.Lines {
		if strings.HasPrefix(l, "insmod ") || strings.HasPrefix(l, "link ") {
			t.Errorf("guest: %s", l)
		}
	}
	lease, _ := res.Get("lease")
	a, err := netip.ParseAddr(lease)
	switch {
	case err != nil:
		t.Errorf("guest got no DHCP lease (%q); its console:\n%s", lease, res.Console)
		return false
	case wantIP != "" && lease != wantIP:
		t.Errorf("guest lease %s, want its static lease %s", lease, wantIP)
	case wantIP == "" && (a.Less(netip.MustParseAddr(qemuRangeLo)) || netip.MustParseAddr(qemuRangeHi).Less(a)):
		t.Errorf("guest lease %s, want an address from %s to %s", lease, qemuRangeLo, qemuRangeHi)
	}
	for key, want := range map[string]string{"mask": "24", "router": gatewayIP, "dns": gatewayIP, "domain": qemuDomain} {
		if got, _ := res.Get(key); got != want {
			t.Errorf("guest lease %s = %q, want %q", key, got, want)
		}
	}
	for _, p := range []string{gatewayIP, outsideIP} {
		if got, _ := res.Find("ping " + p); got != "ok" {
			t.Errorf("guest ping %s: %q, want ok", p, got)
		}
	}
	for _, n := range []string{qemuHostName + "." + qemuDomain, qemuHostName} {
		if got, _ := res.Find("resolve " + n); got != qemuHostIP {
			t.Errorf("guest resolves %s to %q, want %s", n, got, qemuHostIP)
		}
	}
	return true
}

// qemuDump is dom0's state as the port's traces show: links, addresses,
// routes, firewall and every qdisc. Left out is what the kernel does to the
// bridge when its first port comes and its last goes: routes' "linkdown" (an
// empty bridge loses its carrier) and the IPv6 link-local address and route
// it gets the first time it has a carrier.
func (w *world) qemuDump() string {
	w.t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(w.dom0.Dump(w.t), "\n") {
		if strings.HasPrefix(l, "addr brlab inet6 fe80:") || strings.HasPrefix(l, "route-6 fe80::/64 dev brlab ") {
			continue
		}
		b.WriteString(strings.ReplaceAll(l, " linkdown", "") + "\n")
	}
	b.WriteString("== tc qdisc ==\n")
	var qs []string
	for _, l := range strings.Split(w.dom0.Exec(w.t, "tc", "qdisc", "show"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			qs = append(qs, l)
		}
	}
	sort.Strings(qs)
	b.WriteString(strings.Join(qs, "\n") + "\n")
	return b.String()
}

// portRecords lists the files under the run and state directories that
// belong to a port (ports/..., or named after the tap).
func (w *world) portRecords(port string) []string {
	w.t.Helper()
	var found []string
	for _, root := range []string{w.runDir, w.stateDir} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(p, ".lock") {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if strings.Contains(rel, "ports/") || strings.Contains(filepath.Base(rel), port) {
				found = append(found, rel)
			}
			return nil
		})
		if err != nil {
			w.t.Fatal(err)
		}
	}
	return found
}

// qemuScripts returns the built qemu-ifup and a qemu-ifdown beside it: the
// same program by another name, as `make install` puts them.
func qemuScripts(t *testing.T) (ifup, ifdown string) {
	t.Helper()
	ifup = binary(t, "qemu-ifup")
	ifdown = filepath.Join(t.TempDir(), "qemu-ifdown")
	if err := os.Symlink(ifup, ifdown); err != nil {
		t.Fatal(err)
	}
	return ifup, ifdown
}

// qemuLabConfig is the TOML of network lab: NAT, DHCP with a range, a domain
// and one static host (with an IPv6 address too); IPv6 by SLAAC and DHCPv6,
// with an MTU of 1400 (the guest's NIC has 1500: only the RA tells it);
// plus extra lines.
func qemuLabConfig(extra string) string {
	return fmt.Sprintf(`
[network.lab]
bridge = "brlab"
address = %q
address6 = %q
mtu = 1400
mode = "nat"

[network.lab.dhcp]
range_start = %q
range_end = %q
lease_time = "1h"
domain = %q

[network.lab.dhcp6]
ipv6_mode = "slaac+dhcpv6"
range_start = %q
range_end = %q

[[network.lab.dhcp.host]]
mac = %q
ip = %q
ip6 = %q
name = %q
`, gatewayCIDR, qemuGateway6+"/64", qemuRangeLo, qemuRangeHi, qemuDomain, qemuRange6Lo, qemuRange6Hi, qemuHostMAC, qemuHostIP, qemuHostIP6, qemuHostName) + extra
}

// IPv6 of the real-guest scenario: routed (no nat6), the outside has a
// route back to the guests' prefix through dom0.
const (
	qemuGateway6 = "fd00:98::1"
	qemuRange6Lo = "fd00:98::2:0"
	qemuRange6Hi = "fd00:98::2:ff"
	qemuHostIP6  = "fd00:98::20"
	qemuUplink6  = "2001:db8:1::1"
	qemuOutside6 = "2001:db8:1::2"
)

// ipv6Outside gives dom0's uplink and the outside namespace IPv6.
func (w *world) ipv6Outside() {
	w.t.Helper()
	w.dom0.Exec(w.t, "ip", "-6", "addr", "add", qemuUplink6+"/64", "dev", uplinkDev, "nodad")
	w.outside.Exec(w.t, "ip", "-6", "addr", "add", qemuOutside6+"/64", "dev", "eth0", "nodad")
	w.dom0.Exec(w.t, "ip", "-6", "route", "add", "default", "via", qemuOutside6)
	w.outside.Exec(w.t, "ip", "-6", "route", "add", "fd00:98::/64", "via", qemuUplink6)
}

// checkGuest6 asserts the guest's IPv6 reports: the SLAAC address in the
// prefix (slaac modes), the default route via the bridge's link-local
// address, the RA's MTU, the DHCPv6 lease (wantLease, or from the range
// when ""), both pings, the static host's AAAA.
func checkGuest6(t *testing.T, res *qemu.Result, mode, brLL, wantLease string) {
	t.Helper()
	if strings.HasPrefix(mode, "slaac") {
		a, _ := res.Get("addr6")
		if p, err := netip.ParsePrefix(a); err != nil || p.Bits() != 64 || !netip.MustParsePrefix("fd00:98::/64").Contains(p.Addr()) {
			t.Errorf("guest SLAAC address %q, want one in fd00:98::/64", a)
		}
	} else if a, ok := res.Get("addr6"); ok {
		t.Errorf("guest reported a SLAAC address %q in mode %s", a, mode)
	}
	for key, want := range map[string]string{"route6": brLL, "mtu6": "1400", "dns6": qemuGateway6} {
		if got, _ := res.Get(key); got != want {
			t.Errorf("guest IPv6 %s = %q, want %q", key, got, want)
		}
	}
	lease, _ := res.Get("lease6")
	a, err := netip.ParseAddr(lease)
	switch {
	case err != nil:
		var log []string
		for _, l := range strings.Split(res.Console, "\n") {
			if strings.Contains(l, "dhcp6c") {
				log = append(log, l)
			}
		}
		t.Errorf("guest got no DHCPv6 lease (%q): %s", lease, strings.Join(log, "; "))
	case wantLease != "" && lease != wantLease:
		t.Errorf("guest DHCPv6 lease %s, want its static address %s", lease, wantLease)
	case wantLease == "" && (a.Less(netip.MustParseAddr(qemuRange6Lo)) || netip.MustParseAddr(qemuRange6Hi).Less(a)):
		t.Errorf("guest DHCPv6 lease %s, want one from %s to %s", lease, qemuRange6Lo, qemuRange6Hi)
	}
	for _, p := range []string{qemuGateway6, qemuOutside6} {
		if got, _ := res.Find("ping6 " + p); got != "ok" {
			t.Errorf("guest ping6 %s: %q, want ok", p, got)
		}
	}
	for _, n := range []string{qemuHostName + "." + qemuDomain, qemuHostName} {
		if got, _ := res.Find("resolve6 " + n); got != qemuHostIP6 {
			t.Errorf("guest resolves %s (AAAA) to %q, want %s", n, got, qemuHostIP6)
		}
	}
}

// TestQEMUGuest boots real guests whose NIC QEMU attaches with the built
// qemu-ifup and detaches with qemu-ifdown, on a network with DHCP and DNS:
//   - dynamic: the network comes from $BROUTER_NETWORK in QEMU's environment,
//     the guest is unknown to the config and leases from the range;
//   - known: a [[network.lab.port]] rule matches the tap and gives the guest's
//     MAC and address: the rule picks the network, the guest gets that address
//     as a static lease registered at attach time, behind antispoof.
//
// Each asserts the lease, pings to the gateway and to the outside host
// through NAT, the static host's name resolved through the DNS forwarder, and
// that after the poweroff (QEMU runs qemu-ifdown, then deletes the tap)
// nothing of the port is left.
func TestQEMUGuest(t *testing.T) {
	cases := []struct {
		name    string
		mac     string
		port    string   // extra TOML
		env     []string // QEMU's environment, passed on to its scripts
		wantIP  string   // "" means: from the range
		ipv6    string   // the guest's brtest.ipv6
		wantIP6 string   // the DHCPv6 lease; "" means: from the range
	}{
		{name: "dynamic", mac: qemuGuestMAC, env: []string{"BROUTER_NETWORK=lab"}, ipv6: "slaac+dhcpv6"},
		{name: "known", mac: "52:54:00:98:00:30", wantIP: "10.98.98.30", ipv6: "dhcpv6", wantIP6: "fd00:98::30", port: `
[[network.lab.port]]
name = "tap-q*"
mac = "52:54:00:98:00:30"
ips = ["10.98.98.30", "fd00:98::30"]
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			kernel, initrd := qemuGuest(t)
			w := newWorld(t, worldOpts{outside: true})
			w.ipv6Outside()
			w.writeConfig(qemuLabConfig(c.port))
			w.openForDnsmasq()
			w.mustRun(0, "start", "net=lab")
			ifup, ifdown := qemuScripts(t)
			brLL := linkLocal(linkMAC(t, w.dom0, "brlab")).String()

			before := w.qemuDump()
			uplinkBefore, guestsBefore := w.observed("from_uplink"), w.observed("from_guests")
			res := w.bootGuest(kernel, initrd, ifup, ifdown, c.mac, c.env,
				"brtest.ping="+gatewayIP+","+outsideIP,
				"brtest.resolve="+qemuHostName+"."+qemuDomain+","+qemuHostName,
				"brtest.ipv6="+c.ipv6, "brtest.ping6="+qemuGateway6+","+qemuOutside6,
				"brtest.resolve6="+qemuGateway6+","+qemuHostName+"."+qemuDomain+","+qemuHostName)
			checkGuest6(t, res, c.ipv6, brLL, c.wantIP6)
			if mac, _ := res.Get("mac"); mac != c.mac {
				t.Errorf("guest eth0 MAC %q, want %s", mac, c.mac)
			}
			if _, ok := res.Get("static"); ok {
				t.Errorf("guest configured statically, want DHCP")
			}
			if checkGuest(t, res, c.wantIP) {
				// NAT: the outside host saw the guest's echo requests from dom0's uplink address.
				if n := w.observed("from_uplink") - uplinkBefore; n < 1 {
					t.Errorf("outside saw %d echo requests from %s, want at least 1 (masqueraded guest)", n, uplinkDom0)
				}
				if n := w.observed("from_guests") - guestsBefore; n != 0 {
					t.Errorf("outside saw %d echo requests from %s, want 0 (NAT)", n, guestNet)
				}
			} else {
				st := w.run("status", "net=lab")
				t.Logf("no lease; network-virtual status net=lab:\n%s%s\ndom0 processes: %s", st.stdout, st.stderr, w.dom0Procs())
			}

			// The guest powered off: QEMU ran qemu-ifdown and deleted its tap.
			if out, err := w.dom0.Try("ip", "link", "show", qemuTap); err == nil {
				t.Errorf("tap %s still exists after QEMU exited:\n%s", qemuTap, out)
			}
			w.bridgeSettled("brlab")
			if d := nstest.Diff(before, w.qemuDump()); d != "" {
				t.Errorf("dom0 state after the guest's poweroff differs from before its start (- before, + after):\n%s", d)
			}
			if recs := w.portRecords(qemuTap); len(recs) > 0 {
				t.Errorf("port records left after qemu-ifdown: %v", recs)
			}
			// A static lease registered at attach is gone with the port (the
			// lease database under the state directory may remember the guest).
			if files := w.runFilesMentioning(c.mac); len(files) > 0 {
				t.Errorf("files under the run directory still name the guest's MAC %s after qemu-ifdown: %v", c.mac, files)
			}

			// The leases are what the DHCP server recorded, IPv4 and DHCPv6.
			st := w.mustRun(0, "status", "net=lab")
			for _, key := range []string{"lease", "lease6"} {
				if lease, _ := res.Get(key); net.ParseIP(lease) != nil && !strings.Contains(st.stdout, lease) {
					t.Errorf("network-virtual status does not list the guest's %s %s:\n%s", key, lease, st.stdout)
				}
			}
			w.mustRun(0, "stop", "net=lab")
			if procs := w.dom0Procs(); strings.Contains(procs, "dnsmasq") {
				t.Errorf("dnsmasq still runs in dom0 after stop: %s", procs)
			}
		})
	}
}

// bridgeSettled waits (up to 3 s) for a bridge whose last port went to lose
// its carrier, as the kernel does a moment later.
func (w *world) bridgeSettled(bridge string) {
	w.t.Helper()
	for i := 0; i < 30; i++ {
		if out, err := w.dom0.Try("cat", "/sys/class/net/"+bridge+"/carrier"); err != nil || strings.TrimSpace(out) == "0" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dom0Procs names the processes running in dom0 ("pid:comm ...").
func (w *world) dom0Procs() string {
	out, err := exec.Command("ip", "netns", "pids", w.dom0.Name()).Output()
	if err != nil {
		return err.Error()
	}
	var procs []string
	for _, pid := range strings.Fields(string(out)) {
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		procs = append(procs, pid+":"+strings.TrimSpace(string(comm)))
	}
	return strings.Join(procs, " ")
}

// runFilesMentioning lists the files under the run directory, logs aside,
// whose content contains s (case-insensitive): after a detach, no static
// lease (dhcp-hosts.d) or DNS name (dns-hosts.d) of the guest is left.
func (w *world) runFilesMentioning(s string) []string {
	w.t.Helper()
	var found []string
	err := filepath.WalkDir(w.runDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".log") {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(strings.ToLower(string(b)), strings.ToLower(s)) {
			rel, _ := filepath.Rel(w.runDir, p)
			found = append(found, rel)
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return found
}

// TestQEMUHarness checks the harness itself, with nothing of brouter's in the
// guest's path but the bridge and NAT of network-virtual: a shell script as
// QEMU's ifup and a dnsmasq the test runs. When TestQEMUGuest fails and this
// passes, the fault is brouter's, not the guest's. It costs a boot, so it runs
// only when asked (BROUTER_E2E_QEMU_HARNESS=1) or when qemu-ifup is not there.
func TestQEMUHarness(t *testing.T) {
	if os.Getenv("BROUTER_E2E_QEMU_HARNESS") == "" {
		if _, err := os.Stat("../hooks/qemu-ifup"); err == nil {
			t.Skip("harness self-check: set BROUTER_E2E_QEMU_HARNESS=1 to run it (TestQEMUGuest covers the same path)")
		}
	}
	t.Parallel()
	kernel, initrd := qemuGuest(t)
	w := newWorld(t, worldOpts{outside: true})
	w.writeConfig(fmt.Sprintf("[network.lab]\nbridge = \"brlab\"\naddress = %q\nmode = \"nat\"\n", gatewayCIDR))
	w.mustRun(0, "start", "net=lab")

	dir := t.TempDir()
	ifup := filepath.Join(dir, "ifup")
	if err := os.WriteFile(ifup, []byte("#!/bin/sh\nset -e\nip link set \"$1\" master brlab\nip link set \"$1\" up\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	w.dom0.Start(t, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--interface=brlab", "--bind-interfaces", "--except-interface=lo",
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--dhcp-range="+qemuRangeLo+","+qemuRangeHi+",255.255.255.0,1h",
		"--domain="+qemuDomain, "--local=/"+qemuDomain+"/", "--expand-hosts",
		"--dhcp-option=option:router,"+gatewayIP, "--dhcp-option=option:dns-server,"+gatewayIP,
		"--dhcp-host="+qemuHostMAC+","+qemuHostIP+","+qemuHostName,
		"--host-record="+qemuHostName+"."+qemuDomain+","+qemuHostName+","+qemuHostIP)

	res := w.bootGuest(kernel, initrd, ifup, "", qemuGuestMAC, nil,
		"brtest.ping="+gatewayIP+","+outsideIP,
		"brtest.resolve="+qemuHostName+"."+qemuDomain+","+qemuHostName)
	checkGuest(t, res, "")
	if out, err := w.dom0.Try("ip", "link", "show", qemuTap); err == nil {
		t.Errorf("tap %s still exists after QEMU exited:\n%s", qemuTap, out)
	}
}
