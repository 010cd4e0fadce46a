package dhcp

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

// Kernel tests: root, everything inside namespaces nstest creates and deletes.
//
//	guest namespaces --eth0/vgN-- [br0 10.60.0.1/24 | br1 10.61.0.1/24] "dom0" 192.0.2.1 --up0/eth0-- "upstream" 192.0.2.2
//
// dom0 runs the dnsmasq under test; upstream runs a second dnsmasq that plays
// the outside DNS server (outside.example -> 198.51.100.7).

const udhcpcScript = `#!/bin/sh
# udhcpc hook: apply the lease and record what the server handed out.
case "$1" in
deconfig)
	ip addr flush dev "$interface"
	;;
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	echo "ip=$ip mask=$mask router=$router dns=$dns domain=$domain lease=$lease serverid=$serverid" > "$UDHCPC_OUT"
	;;
esac
exit 0
`

type lab struct {
	dom0, upstream *nstest.NS
	dir            string // shared, world-searchable (dnsmasq drops privileges)
	script         string
	logged         map[string]bool // networks whose log is shown when the test fails
}

func newLab(t *testing.T) *lab {
	t.Helper()
	nstest.RequireRoot(t)
	if _, err := os.Stat(Binary); err != nil {
		t.Skipf("%s not installed (package dnsmasq-base)", Binary)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox not installed (package busybox-static)")
	}
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l := &lab{dom0: nstest.New(t, "dom0"), upstream: nstest.New(t, "upstream"), dir: dir, logged: map[string]bool{}}
	l.script = filepath.Join(dir, "udhcpc.sh")
	if err := os.WriteFile(l.script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	// The "outside" DNS server, in its own namespace, reached through dom0's up0.
	nstest.Veth(t, l.dom0, "up0", l.upstream, "eth0")
	l.dom0.Exec(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	l.upstream.Exec(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
	l.upstream.Start(t, Binary, "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=",
		"--no-resolv", "--no-hosts", "--listen-address=192.0.2.2", "--bind-interfaces",
		"--host-record=outside.example,198.51.100.7", "--log-facility=-")
	return l
}

// bridge makes bridge brN with gw in dom0.
func (l *lab) bridge(t *testing.T, name, gw string) {
	t.Helper()
	l.dom0.Exec(t, "ip", "link", "add", name, "type", "bridge")
	l.dom0.Exec(t, "ip", "addr", "add", gw, "dev", name)
	l.dom0.Exec(t, "ip", "link", "set", name, "up")
}

// guest makes a guest namespace whose eth0 (with mac) is a port of bridge.
func (l *lab) guest(t *testing.T, role, port, bridge, mac string) *nstest.NS {
	t.Helper()
	g := nstest.New(t, role)
	nstest.Veth(t, l.dom0, port, g, "eth0")
	g.Exec(t, "ip", "link", "set", "eth0", "address", mac)
	l.dom0.Exec(t, "ip", "link", "set", port, "master", bridge)
	return g
}

func (l *lab) spec(network, bridge string, third int) Spec {
	p := func(s string) netip.Addr { return netip.MustParseAddr(fmt.Sprintf(s, third)) }
	return Spec{
		Network:    network,
		Bridge:     bridge,
		Gateway:    netip.MustParsePrefix(fmt.Sprintf("10.%d.0.1/24", third)),
		RangeStart: p("10.%d.0.100"),
		RangeEnd:   p("10.%d.0.150"),
		LeaseTime:  time.Hour,
		Domain:     "lab.internal",
		RunDir:     filepath.Join(l.dir, "run", network),
		StateDir:   filepath.Join(l.dir, "lib", network),
		Upstream:   []netip.Addr{netip.MustParseAddr("192.0.2.2")},
	}
}

func (l *lab) start(t *testing.T, s Spec) int {
	t.Helper()
	if err := l.dom0.Do(func() error { return Start(s) }); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid, ok := Running(s.Network, s.RunDir)
	if !ok {
		t.Fatalf("Running: false after Start")
	}
	if l.logged[s.Network] {
		return pid
	}
	l.logged[s.Network] = true
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("DHCP_TEST_LOG") != "" {
			if log, err := os.ReadFile(filepath.Join(s.RunDir, LogFile)); err == nil {
				t.Logf("%s of network %s:\n%s", LogFile, s.Network, log)
			}
		}
	})
	return pid
}

type dhcpResult struct {
	ip, mask, router, dns, domain, lease, serverid string
}

// dhcp runs busybox udhcpc in the guest; ok is false if no lease came.
func (l *lab) dhcp(t *testing.T, g *nstest.NS, hostname string, tries int) (dhcpResult, string, bool) {
	t.Helper()
	out := filepath.Join(l.dir, "udhcpc-"+g.Name())
	os.Remove(out)
	cmd := g.Cmd("busybox", "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", strconv.Itoa(tries), "-T", "1",
		"-s", l.script, "-x", "hostname:"+hostname)
	cmd.Env = append(os.Environ(), "UDHCPC_OUT="+out, "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	log, err := cmd.CombinedOutput()
	if err != nil {
		return dhcpResult{}, string(log), false
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("udhcpc succeeded but its script left no record (%v):\n%s", err, log)
	}
	var r dhcpResult
	for _, f := range strings.Fields(string(data)) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "ip":
			r.ip = v
		case "mask":
			r.mask = v
		case "router":
			r.router = v
		case "dns":
			r.dns = v
		case "domain":
			r.domain = v
		case "lease":
			r.lease = v
		case "serverid":
			r.serverid = v
		}
	}
	return r, string(log), true
}

func (l *lab) mustDHCP(t *testing.T, g *nstest.NS, hostname string) dhcpResult {
	t.Helper()
	r, log, ok := l.dhcp(t, g, hostname, 5)
	if !ok {
		t.Fatalf("udhcpc in %s got no lease:\n%s", g.Name(), log)
	}
	return r
}

func inRange(ip string, s Spec) bool {
	a, err := netip.ParseAddr(ip)
	return err == nil && !a.Less(s.RangeStart) && !s.RangeEnd.Less(a)
}

// lookup asks server for name with busybox nslookup from g.
func lookup(g *nstest.NS, name, server string) (string, error) {
	return g.Try("busybox", "nslookup", "-type=a", name, server)
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d still runs", pid)
}

func TestKernelDHCPAndDNS(t *testing.T) {
	l := newLab(t)
	l.bridge(t, "br0", "10.60.0.1/24")
	mac1, mac2 := "02:00:00:00:60:11", "02:00:00:00:60:12"
	g1 := l.guest(t, "guest1", "vg1", "br0", mac1)
	g2 := l.guest(t, "guest2", "vg2", "br0", mac2)
	s := l.spec("lab", "br0", 60)
	s.Hosts = []Host{{MAC: mustMAC(t, mac2), IP: netip.MustParseAddr("10.60.0.20"), Name: "web"}}

	pid := l.start(t, s)
	conf, err := os.ReadFile(filepath.Join(s.RunDir, ConfFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("generated %s:\n%s", ConfFile, conf)

	t.Run("unprivileged", func(t *testing.T) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`).FindStringSubmatch(string(status)); m == nil || m[1] == "0" {
			t.Errorf("dnsmasq runs as uid %v, want an unprivileged user", m)
		}
		// The daemon keeps nothing of its start (the start-error file) open.
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if target, _ := os.Readlink(fd); strings.Contains(target, ".dnsmasq-start") {
				t.Errorf("dnsmasq holds %s open", target)
			}
		}
	})

	t.Run("listens on the bridge only", func(t *testing.T) {
		out := l.dom0.Exec(t, "ss", "-Hlnptu")
		var mine []string
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, fmt.Sprintf("pid=%d,", pid)) {
				mine = append(mine, line)
			}
		}
		t.Logf("sockets of dnsmasq:\n%s", strings.Join(mine, "\n"))
		if len(mine) == 0 {
			t.Fatalf("no socket of dnsmasq %d in:\n%s", pid, out)
		}
		dns := false
		for _, line := range mine {
			f := strings.Fields(line)
			local := f[4]
			switch {
			case strings.HasPrefix(local, "10.60.0.1:"):
				dns = dns || strings.HasSuffix(local, ":53")
			case strings.Contains(local, "%br0:"):
			default:
				t.Errorf("dnsmasq listens on %s, not on br0:\n%s", local, line)
			}
		}
		if !dns {
			t.Errorf("dnsmasq does not serve DNS on 10.60.0.1:53:\n%s", strings.Join(mine, "\n"))
		}
	})

	var first dhcpResult
	t.Run("dynamic lease", func(t *testing.T) {
		r := l.mustDHCP(t, g1, "guest1")
		first = r
		if !inRange(r.ip, s) || r.router != "10.60.0.1" || r.dns != "10.60.0.1" || r.mask != "24" ||
			r.domain != "lab.internal" || r.lease != "3600" || r.serverid != "10.60.0.1" {
			t.Errorf("lease %+v: want an address in %s-%s, router and dns 10.60.0.1, /24, domain lab.internal, 3600 s", r, s.RangeStart, s.RangeEnd)
		}
		ls, err := Leases(s.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, le := range ls {
			if le.MAC.String() == mac1 {
				found = true
				if le.IP.String() != r.ip || le.Hostname != "guest1" || le.Expiry.Before(time.Now().Add(50*time.Minute)) {
					t.Errorf("lease in the database = %+v, want %s guest1 expiring in ~1h", le, r.ip)
				}
			}
		}
		if !found {
			t.Errorf("no lease for %s in %+v", mac1, ls)
		}
	})

	t.Run("static host from the config", func(t *testing.T) {
		r := l.mustDHCP(t, g2, "whatever")
		if r.ip != "10.60.0.20" || r.router != "10.60.0.1" {
			t.Errorf("lease %+v, want 10.60.0.20 via 10.60.0.1", r)
		}
	})

	t.Run("dns", func(t *testing.T) {
		for _, q := range []struct{ name, want string }{
			{"web.lab.internal", "10.60.0.20"},
			{"web", "10.60.0.20"},
			{"guest1.lab.internal", first.ip}, // the name the client sent
			{"outside.example", "198.51.100.7"},
		} {
			out, err := lookup(g1, q.name, "10.60.0.1")
			if err != nil || !strings.Contains(out, "Address: "+q.want) {
				t.Errorf("nslookup %s 10.60.0.1 from the guest: want %s, got %v:\n%s", q.name, q.want, err, out)
			}
		}
		// Names under the network's domain are never forwarded.
		if out, _ := lookup(g1, "nosuch.lab.internal", "10.60.0.1"); !strings.Contains(out, "NXDOMAIN") {
			t.Errorf("nosuch.lab.internal: want NXDOMAIN from the local domain:\n%s", out)
		}
	})

	t.Run("start again: same process", func(t *testing.T) {
		if p := l.start(t, s); p != pid {
			t.Errorf("second Start: pid %d, want %d (no restart)", p, pid)
		}
	})

	t.Run("static lease at run time", func(t *testing.T) {
		h := Host{MAC: mustMAC(t, mac1), IP: netip.MustParseAddr("10.60.0.30"), Name: "db"}
		if err := AddStaticLease(s.RunDir, h); err != nil {
			t.Fatal(err)
		}
		r := l.mustDHCP(t, g1, "guest1")
		if r.ip != "10.60.0.30" {
			t.Errorf("after AddStaticLease: lease %s, want 10.60.0.30", r.ip)
		}
		if out, err := lookup(g2, "db.lab.internal", "10.60.0.1"); err != nil || !strings.Contains(out, "Address: 10.60.0.30") {
			t.Errorf("nslookup db.lab.internal: want 10.60.0.30, got %v:\n%s", err, out)
		}
		if p, _ := Running(s.Network, s.RunDir); p != pid {
			t.Errorf("dnsmasq restarted (pid %d, was %d)", p, pid)
		}
		// Replace the lease: the old address must not be handed out any more.
		h.IP = netip.MustParseAddr("10.60.0.31")
		if err := AddStaticLease(s.RunDir, h); err != nil {
			t.Fatal(err)
		}
		if r := l.mustDHCP(t, g1, "guest1"); r.ip != "10.60.0.31" {
			t.Errorf("after replacing the static lease: lease %s, want 10.60.0.31", r.ip)
		}
		if out, err := lookup(g2, "db.lab.internal", "10.60.0.1"); err != nil || !strings.Contains(out, "Address: 10.60.0.31") || strings.Contains(out, "10.60.0.30") {
			t.Errorf("nslookup db.lab.internal: want 10.60.0.31 only, got %v:\n%s", err, out)
		}
		if err := RemoveStaticLease(s.RunDir, h.MAC); err != nil {
			t.Fatal(err)
		}
		r = l.mustDHCP(t, g1, "guest1")
		if !inRange(r.ip, s) {
			t.Errorf("after RemoveStaticLease: lease %s, want one from the range", r.ip)
		}
		if out, _ := lookup(g2, "db.lab.internal", "10.60.0.1"); !strings.Contains(out, "NXDOMAIN") {
			t.Errorf("db.lab.internal: want NXDOMAIN after RemoveStaticLease:\n%s", out)
		}
		if p, _ := Running(s.Network, s.RunDir); p != pid {
			t.Errorf("dnsmasq restarted (pid %d, was %d)", p, pid)
		}
	})

	t.Run("config change restarts", func(t *testing.T) {
		s2 := s
		s2.LeaseTime = 2 * time.Hour
		p := l.start(t, s2)
		if p == pid {
			t.Fatalf("Start with a new lease time kept pid %d", pid)
		}
		waitGone(t, pid)
		pid = p
		if r := l.mustDHCP(t, g2, "web"); r.lease != "7200" {
			t.Errorf("after restart: lease time %s, want 7200", r.lease)
		}
	})

	t.Run("dead dnsmasq is restarted", func(t *testing.T) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid)
		if _, ok := Running(s.Network, s.RunDir); ok {
			t.Fatalf("Running: true after dnsmasq was killed")
		}
		s2 := s
		s2.LeaseTime = 2 * time.Hour // the config of the dead process
		p := l.start(t, s2)
		if p == pid {
			t.Fatalf("same pid %d", p)
		}
		pid = p
		l.mustDHCP(t, g1, "guest1")
	})

	t.Run("stop", func(t *testing.T) {
		if err := Stop(s.Network, s.RunDir); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid)
		if _, ok := Running(s.Network, s.RunDir); ok {
			t.Errorf("Running: true after Stop")
		}
		for _, f := range []string{ConfFile, PidFile, LogFile, DHCPHostDir, DNSHostDir} {
			if _, err := os.Stat(filepath.Join(s.RunDir, f)); err == nil {
				t.Errorf("%s left after Stop", f)
			}
		}
		ls, err := Leases(s.StateDir)
		if err != nil || len(ls) < 2 {
			t.Errorf("leases after Stop = %+v, %v; want them kept", ls, err)
		}
		if err := Stop(s.Network, s.RunDir); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		if _, _, ok := l.dhcp(t, g1, "guest1", 2); ok {
			t.Errorf("a guest got a lease after Stop")
		}
	})
}

// Two networks in one dom0: two dnsmasq, each answering its own bridge only.
func TestKernelTwoNetworks(t *testing.T) {
	l := newLab(t)
	l.bridge(t, "br0", "10.60.0.1/24")
	l.bridge(t, "br1", "10.61.0.1/24")
	ga := l.guest(t, "guesta", "vga", "br0", "02:00:00:00:60:aa")
	gb := l.guest(t, "guestb", "vgb", "br1", "02:00:00:00:61:bb")
	s0 := l.spec("net0", "br0", 60)
	s1 := l.spec("net1", "br1", 61)
	pid0 := l.start(t, s0)
	pid1 := l.start(t, s1)
	if pid0 == pid1 {
		t.Fatalf("one dnsmasq for two networks")
	}
	ra := l.mustDHCP(t, ga, "guesta")
	rb := l.mustDHCP(t, gb, "guestb")
	if !inRange(ra.ip, s0) || ra.serverid != "10.60.0.1" || ra.router != "10.60.0.1" {
		t.Errorf("guest on br0: %+v, want a lease of net0", ra)
	}
	if !inRange(rb.ip, s1) || rb.serverid != "10.61.0.1" || rb.router != "10.61.0.1" {
		t.Errorf("guest on br1: %+v, want a lease of net1", rb)
	}
	macs := func(s Spec) []string {
		ls, err := Leases(s.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, le := range ls {
			out = append(out, le.MAC.String())
		}
		return out
	}
	if m := macs(s0); len(m) != 1 || m[0] != "02:00:00:00:60:aa" {
		t.Errorf("net0 leases: %v, want guest a only", m)
	}
	if m := macs(s1); len(m) != 1 || m[0] != "02:00:00:00:61:bb" {
		t.Errorf("net1 leases: %v, want guest b only", m)
	}
	// DNS of one network does not answer on the other's address... from the
	// guest's point of view each asks its own gateway; and with net1 stopped,
	// nobody answers guest b.
	if err := Stop(s1.Network, s1.RunDir); err != nil {
		t.Fatal(err)
	}
	if r, log, ok := l.dhcp(t, gb, "guestb", 2); ok {
		t.Errorf("guest b got a lease with net1 stopped: %+v\n%s", r, log)
	}
	if p, ok := Running(s0.Network, s0.RunDir); !ok || p != pid0 {
		t.Errorf("net0's dnsmasq: %d %v after net1 stopped, want %d", p, ok, pid0)
	}
	if m := macs(s0); len(m) != 1 {
		t.Errorf("net0 leases after guest b asked: %v", m)
	}
	// A second network on br0 cannot bind br0's DNS port: a clear error.
	dup := l.spec("dup", "br0", 60)
	err := l.dom0.Do(func() error { return Start(dup) })
	if err == nil || !strings.HasPrefix(err.Error(), "dhcp: network dup: dnsmasq failed to start (exit status 2") ||
		!strings.Contains(err.Error(), "Address already in use") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Start of a second dnsmasq on br0 = %v, want one line saying the address is in use", err)
	}
	t.Logf("second dnsmasq on br0: %v", err)
	if _, ok := Running(dup.Network, dup.RunDir); ok {
		t.Errorf("Running: true for the network that failed to start")
	}
	if err := Stop(s0.Network, s0.RunDir); err != nil {
		t.Fatal(err)
	}
}

// Stop and Running trust a pid file only when /proc shows it is our dnsmasq.
func TestKernelForeignPid(t *testing.T) {
	l := newLab(t)
	sleep := l.dom0.Start(t, "sleep", "60")
	time.Sleep(50 * time.Millisecond) // ip netns exec execs sleep
	run := filepath.Join(l.dir, "run", "foreign")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	pid := sleep.Process.Pid
	if err := os.WriteFile(filepath.Join(run, PidFile), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := Running("foreign", run); ok {
		t.Errorf("Running: true for a pid file naming sleep")
	}
	if err := Stop("foreign", run); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Errorf("Stop signalled a process that is not its dnsmasq: %v", err)
	}
}
