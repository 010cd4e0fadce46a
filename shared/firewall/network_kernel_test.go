package firewall

import (
	"crypto/rand"
	"encoding/hex"
	"github.com/brouter/brouter/shared/nstest"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// inNewNetns moves the test goroutine, locked to its thread, into a fresh
// network namespace for the rest of the test; commands it execs inherit it.
// The machine's own namespace is never touched.
// It returns the namespace's name.
func inNewNetns(t *testing.T) string {
	t.Helper()
	name := addNetns(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	if err := netns.Set(ns); err != nil {
		t.Fatalf("enter netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		// Cleanups run on this goroutine. If restoring fails, stay locked: the
		// thread then dies with the goroutine instead of being reused.
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		ns.Close()
		orig.Close()
	})
	return name
}

// addNetns creates a network namespace, deleted when the test ends.
func addNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and installs firewall rules in them")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "brfwtest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dump is the whole packet-filter state of the namespace, as nft and the
// iptables tools see it (iptables-save comments carry timestamps: dropped).
func dump(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	// Tables in a stable order: nft lists them in creation order, and
	// replacing a network's table (delete + add) moves it to the end.
	var tables []string
	for _, blk := range strings.Split(sh(t, "nft", "list", "ruleset"), "\ntable ") {
		if blk = strings.TrimPrefix(strings.TrimSpace(blk), "table "); blk != "" {
			tables = append(tables, "table "+blk+"\n")
		}
	}
	sort.Strings(tables)
	b.WriteString(strings.Join(tables, ""))
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		for _, l := range strings.Split(sh(t, tool), "\n") {
			if !strings.HasPrefix(l, "#") {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

// foreign installs rules that are not ours, as a real host has, in the tables we use.
func foreign(t *testing.T) {
	sh(t, "nft", "add table inet other; add chain inet other fw { type filter hook forward priority 10; }; add rule inet other fw counter")
	for _, tool := range []string{"iptables", "ip6tables"} {
		sh(t, tool, "-A", "FORWARD", "-i", "lo", "-j", "ACCEPT")
	}
	sh(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "RETURN")
}

func kernelNet() NetworkRules {
	return NetworkRules{Network: "fwtest", Bridge: "brfwtest", Subnets: prefixes("10.7.0.0/24", "fd00:7::/64"),
		Forward: true, Masquerade: true, Antispoof: true}
}

func newBackend(t *testing.T, kind string) Backend {
	t.Helper()
	b, err := New(kind, testRecords(t))
	if err != nil {
		t.Fatal(err)
	}
	if b.Name() != kind {
		t.Fatalf("New(%s).Name() = %s", kind, b.Name())
	}
	return b
}

func mustContain(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("missing %q in:\n%s", sub, s)
		}
	}
}

// lifecycle: Ensure installs, Ensure again changes nothing, a mode change
// replaces, Remove restores the exact previous state, Remove again is fine.
func lifecycle(t *testing.T, b Backend, check func(state string)) {
	before := dump(t)
	r := kernelNet()
	if err := b.Ensure(r); err != nil {
		t.Fatal(err)
	}
	first := dump(t)
	check(first)
	if err := b.Ensure(r); err != nil {
		t.Fatal(err)
	}
	if again := dump(t); again != first {
		t.Errorf("second Ensure changed the ruleset:\n%s\n---\n%s", first, again)
	}
	lines, err := b.List(r.Network)
	if err != nil || len(lines) == 0 {
		t.Errorf("List = %q, %v", lines, err)
	}
	t.Logf("List:\n%s", strings.Join(lines, "\n"))

	routed := r
	routed.Masquerade = false
	if err := b.Ensure(routed); err != nil {
		t.Fatal(err)
	}
	if s := dump(t); strings.Contains(s, "masquerade") || strings.Contains(s, "MASQUERADE") {
		t.Errorf("routed mode kept a masquerade rule:\n%s", s)
	}
	if err := b.Ensure(r); err != nil {
		t.Fatal(err)
	}
	if s := dump(t); s != first {
		t.Errorf("nat → routed → nat differs from nat:\n%s\n---\n%s", first, s)
	}

	for range 2 {
		if err := b.Remove(r.Network); err != nil {
			t.Fatal(err)
		}
		// iptables-nft leaves the built-in chains of a table it created
		// (raw, for the loopback guard): empty, policy accept, no residue.
		if after := dump(t); nstest.WithoutEmptyBuiltins(after) != nstest.WithoutEmptyBuiltins(before) {
			t.Errorf("Remove did not restore the ruleset:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
	if lines, err := b.List(r.Network); err != nil || lines != nil {
		t.Errorf("List after Remove = %q, %v", lines, err)
	}
}

func TestKernelNftables(t *testing.T) {
	inNewNetns(t)
	foreign(t)
	b := newBackend(t, KindNftables)
	lifecycle(t, b, func(s string) {
		mustContain(t, s, "table inet brouter-fwtest", "masquerade", "ct state established,related accept",
			`ip6 saddr fd00:7::/64 accept`, "table inet other")
		if strings.Contains(s, "BR-FWD") {
			t.Errorf("Docker compatibility chain installed on a host without Docker:\n%s", s)
		}
		t.Log(sh(t, "nft", "list", "table", "inet", "brouter-fwtest"))
	})
}

func TestKernelIPTables(t *testing.T) {
	inNewNetns(t)
	foreign(t)
	b := newBackend(t, KindIPTables)
	lifecycle(t, b, func(s string) {
		mustContain(t, s, "-A FORWARD -j BR-FWD-fwtest", "-A POSTROUTING -j BR-NAT-fwtest",
			"-A BR-NAT-fwtest -s 10.7.0.0/24 ! -d 10.7.0.0/24 ! -o brfwtest -j MASQUERADE",
			"-A BR-FWD-fwtest -s fd00:7::/64 -i brfwtest ! -o brfwtest -j ACCEPT")
	})
}

// docker sets up what Docker leaves on a host, in the namespace.
func docker(t *testing.T) {
	for _, tool := range []string{"iptables", "ip6tables"} {
		sh(t, tool, "-N", "DOCKER-USER")
		sh(t, tool, "-A", "DOCKER-USER", "-j", "RETURN")
		sh(t, tool, "-I", "FORWARD", "-j", "DOCKER-USER")
		sh(t, tool, "-P", "FORWARD", "DROP")
	}
}

func TestKernelDocker(t *testing.T) {
	for _, kind := range []string{KindNftables, KindIPTables} {
		t.Run(kind, func(t *testing.T) {
			inNewNetns(t)
			foreign(t)
			docker(t)
			b := newBackend(t, kind)
			lifecycle(t, b, func(s string) {
				mustContain(t, s, "-A DOCKER-USER -j BR-FWD-fwtest", "-A BR-FWD-fwtest -i brfwtest -o brfwtest -j ACCEPT",
					":FORWARD DROP")
				if kind == KindNftables {
					if strings.Contains(s, "-A FORWARD -j BR-FWD-fwtest") || strings.Contains(s, "-j DROP") {
						t.Errorf("nftables Docker compatibility should be accept rules jumped from DOCKER-USER only:\n%s", s)
					}
				}
			})
		})
	}
	t.Run("policy-drop-only", func(t *testing.T) {
		inNewNetns(t)
		sh(t, "iptables", "-P", "FORWARD", "DROP")
		b := newBackend(t, KindNftables)
		lifecycle(t, b, func(s string) {
			mustContain(t, s, "-A FORWARD -j BR-FWD-fwtest", "table inet brouter-fwtest")
		})
	})
}

// TestKernelTraffic pings from a guest behind the bridge to an "outside" host
// that has no route back to the guest subnet, on a Docker-like host (filter
// FORWARD policy DROP): it works only with forwarding, masquerade and the
// Docker compatibility in place.
//
//	guest (10.7.0.2) -- brfwtest (10.7.0.1) [router ns] (192.0.2.1) -- outside (192.0.2.2)
func TestKernelTraffic(t *testing.T) {
	for _, kind := range []string{KindNftables, KindIPTables} {
		t.Run(kind, func(t *testing.T) {
			router := inNewNetns(t)
			guest, outside := addNetns(t), addNetns(t)
			for _, c := range [][]string{
				{"ip", "link", "add", "brfwtest", "type", "bridge"},
				{"ip", "addr", "add", "10.7.0.1/24", "dev", "brfwtest"},
				{"ip", "link", "set", "brfwtest", "up"},
				{"ip", "link", "add", "vguest", "type", "veth", "peer", "name", "eth0", "netns", guest},
				{"ip", "link", "set", "vguest", "master", "brfwtest", "up"},
				{"ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside},
				{"ip", "addr", "add", "192.0.2.1/24", "dev", "uplink"},
				{"ip", "link", "set", "uplink", "up"},
				{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
				{"ip", "-n", guest, "addr", "add", "10.7.0.2/24", "dev", "eth0"},
				{"ip", "-n", guest, "link", "set", "eth0", "up"},
				{"ip", "-n", guest, "route", "add", "default", "via", "10.7.0.1"},
				{"ip", "-n", outside, "addr", "add", "192.0.2.2/24", "dev", "eth0"},
				{"ip", "-n", outside, "link", "set", "eth0", "up"},
			} {
				sh(t, c[0], c[1:]...)
			}
			docker(t)
			ping := func() bool {
				return exec.Command("ip", "netns", "exec", guest, "ping", "-c1", "-W1", "192.0.2.2").Run() == nil
			}
			if ping() {
				t.Fatalf("ping %s -> outside works without rules (router %s)", guest, router)
			}
			b := newBackend(t, kind)
			r := NetworkRules{Network: "fwtest", Bridge: "brfwtest", Subnets: prefixes("10.7.0.0/24"),
				Forward: true, Masquerade: true, Antispoof: true, Uplink: "uplink"}
			if err := b.Ensure(r); err != nil {
				t.Fatal(err)
			}
			if !ping() {
				t.Errorf("nat: guest cannot reach outside:\n%s", dump(t))
			}
			if kind == KindNftables { // the Docker compatibility chain is what lets it through
				sh(t, "iptables", "-D", "DOCKER-USER", "-j", "BR-FWD-fwtest")
				if ping() {
					t.Errorf("nat: guest reaches outside without the Docker compatibility jump")
				}
				if err := b.Ensure(r); err != nil || !ping() {
					t.Errorf("Ensure did not repair the Docker compatibility jump (err %v)", err)
				}
			}
			r.Forward = false
			if err := b.Ensure(r); err != nil {
				t.Fatal(err)
			}
			if ping() {
				t.Errorf("isolated: guest still reaches outside")
			}
			if err := b.Remove(r.Network); err != nil {
				t.Fatal(err)
			}
		})
	}
}
