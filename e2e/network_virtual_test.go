package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/brouter/brouter/shared/nstest"
)

var backends = []string{"nftables", "iptables"}

// forBackends runs f as a parallel subtest per firewall backend.
func forBackends(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

// status is what `network-virtual status --json` prints.
type status struct {
	Network string `json:"network"`
	Bridge  string `json:"bridge"`
	Running bool   `json:"running"`
	Mode    string `json:"mode"`
	Address string `json:"address"`
	Backend string `json:"backend"`
	Ports   []struct {
		Name  string `json:"name"`
		MAC   string `json:"mac"`
		MTU   int    `json:"mtu"`
		State string `json:"state"`
	} `json:"ports"`
	Routes   []string `json:"routes"`
	Firewall []string `json:"firewall"`
}

// firewallPresent reports which backends' objects for network NET exist in dom0.
func (w *world) firewallPresent(network string) (nft, ipt bool) {
	w.t.Helper()
	_, err := w.dom0.Try("nft", "list", "table", "inet", "brouter-"+network)
	nft = err == nil
	save := w.dom0.Exec(w.t, "iptables-save")
	ipt = strings.Contains(save, ":BR-FWD-"+network+" ") || strings.Contains(save, ":BR-NAT-"+network+" ")
	return nft, ipt
}

// checkBridge asserts the kernel state of a started bridge in dom0.
func (w *world) checkBridge(bridge, cidr string) {
	t := w.t
	t.Helper()
	out, err := w.dom0.Try("ip", "-o", "link", "show", "dev", bridge, "type", "bridge")
	if err != nil || !strings.Contains(out, bridge) {
		t.Fatalf("bridge %s missing after start: %v %s", bridge, err, out)
	}
	if !strings.Contains(out, ",UP") && !strings.Contains(out, "<UP") {
		t.Errorf("bridge %s is not up: %s", bridge, out)
	}
	if addrs := w.dom0.Exec(t, "ip", "-o", "-4", "addr", "show", "dev", bridge); !strings.Contains(addrs, " "+cidr+" ") {
		t.Errorf("bridge %s lacks address %s: %s", bridge, cidr, addrs)
	}
	if v := w.dom0.ReadSys(t, bridge+"/bridge/stp_state"); v != "0" {
		t.Errorf("%s stp_state = %s, want 0", bridge, v)
	}
	if v := w.dom0.ReadSys(t, bridge+"/bridge/forward_delay"); v != "0" {
		t.Errorf("%s forward_delay = %s, want 0", bridge, v)
	}
}

// The whole life of a nat network: start, traffic, start again, status, stop, stop again.
func TestNATLifecycle(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		w := newWorld(t, worldOpts{outside: true, guests: 2})
		w.writeConfig(netConfig("nat", backend, `uplink = "up0"`))
		g1, g2 := w.guests[0], w.guests[1]
		before := w.dom0.Dump(t)
		fwdBefore := w.dom0.Sysctl(t, "net.ipv4.ip_forward")

		if r := w.run("status"); r.code != 3 {
			t.Errorf("status before start: want exit 3, got:\n%s", r)
		}
		w.mustRun(0, "start")
		w.checkBridge("br-e2e", gatewayCIDR)
		if v := w.dom0.Sysctl(t, "net.ipv4.ip_forward"); v != "1" {
			t.Errorf("net.ipv4.ip_forward = %s after start, want 1", v)
		}
		nft, ipt := w.firewallPresent("e2e")
		switch backend {
		case "nftables":
			if !nft {
				t.Errorf("firewall = nftables: no table inet brouter-e2e in dom0:\n%s", w.dom0.Exec(t, "nft", "list", "ruleset"))
			}
		case "iptables":
			if !ipt {
				t.Errorf("firewall = iptables: no BR-FWD-e2e/BR-NAT-e2e chains in dom0:\n%s", w.dom0.Exec(t, "iptables-save"))
			}
			if nft {
				t.Errorf("firewall = iptables, but table inet brouter-e2e exists")
			}
		}

		w.attach("br-e2e")
		mustPing(t, g1.ns, "guest1", g2.ip)
		mustPing(t, g2.ns, "guest2", g1.ip)
		mustPing(t, g1.ns, "guest1", gatewayIP)
		mustPing(t, g2.ns, "guest2", gatewayIP)
		mustPing(t, g1.ns, "guest1", outsideIP)
		mustPing(t, g2.ns, "guest2", outsideIP)
		if n := w.observed("from_uplink"); n == 0 {
			t.Errorf("outside saw no echo request from %s: guests are not masqueraded", uplinkDom0)
		}
		if n := w.observed("from_guests"); n != 0 {
			t.Errorf("outside saw %d echo requests from %s: guests leaked without NAT", n, guestNet)
		}

		// start again: nothing changes.
		running := w.dom0.Dump(t)
		w.mustRun(0, "start")
		w.sameState("second start", running)

		// status while running.
		w.mustRun(0, "status")
		r := w.mustRun(0, "status", "--json")
		var st status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Errorf("status --json: %v\n%s", err, r.stdout)
		}
		if !st.Running || st.Network != "e2e" || st.Bridge != "br-e2e" || st.Mode != "nat" || st.Backend != backend {
			t.Errorf("status --json: got network=%q bridge=%q running=%v mode=%q backend=%q; want e2e br-e2e true nat %s\n%s",
				st.Network, st.Bridge, st.Running, st.Mode, st.Backend, backend, r.stdout)
		}
		if !strings.Contains(st.Address, gatewayCIDR) {
			t.Errorf("status --json: address = %q, want %s", st.Address, gatewayCIDR)
		}
		var ports []string
		for _, p := range st.Ports {
			ports = append(ports, p.Name)
			if p.MAC == "" || p.MTU != 1500 || p.State == "" {
				t.Errorf("status --json: port %+v: want a MAC, mtu 1500 and a state", p)
			}
		}
		if !slices.ContainsFunc(st.Routes, func(r string) bool { return strings.Contains(r, guestNet) }) {
			t.Errorf("status --json: routes %q lack %s", st.Routes, guestNet)
		}
		for _, g := range w.guests {
			if !slices.Contains(ports, g.port) {
				t.Errorf("status --json: ports %v lack guest port %s", ports, g.port)
			}
		}
		if len(st.Firewall) == 0 {
			t.Errorf("status --json: no firewall rules listed\n%s", r.stdout)
		}

		// stop with the guests still attached: dom0 is as before start.
		w.mustRun(0, "stop")
		w.sameStateAfterStop("after stop", before)
		if r := w.run("status"); r.code != 3 {
			t.Errorf("status after stop: want exit 3, got:\n%s", r)
		}
		// The guests' veths survive, but the bridge between them is gone.
		mustNotPing(t, g1.ns, "guest1 after stop", g2.ip)
		w.mustRun(0, "stop")
		w.sameStateAfterStop("after second stop", before)
		if v := w.dom0.Sysctl(t, "net.ipv4.ip_forward"); v != fwdBefore {
			t.Logf("note: net.ipv4.ip_forward is %s after stop (was %s before start)", v, fwdBefore)
		}
	})
}

// A Docker host: FORWARD policy DROP and a DOCKER-USER chain. Guests still get
// out, and stop leaves Docker's iptables exactly as they were.
func TestDockerHost(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		w := newWorld(t, worldOpts{outside: true, guests: 1})
		w.writeConfig(netConfig("nat", backend))
		w.dom0.Exec(t, "iptables", "-N", "DOCKER-USER")
		w.dom0.Exec(t, "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
		w.dom0.Exec(t, "iptables", "-P", "FORWARD", "DROP")
		before := w.dom0.Dump(t)
		iptBefore := w.dom0.Exec(t, "iptables-save")

		w.mustRun(0, "start")
		w.attach("br-e2e")
		mustPing(t, w.guests[0].ns, "guest1", gatewayIP)
		mustPing(t, w.guests[0].ns, "guest1", outsideIP)
		if n := w.observed("from_uplink"); n == 0 {
			t.Errorf("outside saw no masqueraded echo request")
		}
		if p := w.dom0.Exec(t, "iptables", "-S", "FORWARD"); !strings.Contains(p, "-P FORWARD DROP") {
			t.Errorf("start changed the FORWARD policy: %s", p)
		}

		w.mustRun(0, "stop")
		w.sameStateAfterStop("after stop", before)
		iptAfter := w.dom0.Exec(t, "iptables-save")
		if d := dumpDiffIptables(iptBefore, iptAfter); d != "" {
			if dumpDiffIptables(nstest.WithoutEmptyBuiltins(iptBefore), nstest.WithoutEmptyBuiltins(iptAfter)) != "" {
				t.Errorf("iptables-save after stop differs from before start:\n%s", d)
			} else {
				t.Logf("note: iptables-save after stop has only extra empty built-in tables:\n%s", d)
			}
		}
	})
}

// dumpDiffIptables compares two iptables-save outputs without comments and counters.
func dumpDiffIptables(a, b string) string {
	clean := func(s string) string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			if i := strings.LastIndex(l, " ["); strings.HasPrefix(l, ":") && i > 0 {
				l = l[:i]
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	if clean(a) == clean(b) {
		return ""
	}
	return fmt.Sprintf("before:\n%s\nafter:\n%s", clean(a), clean(b))
}

// Routed: no masquerade; the outside has a route back and sees the guest's own address.
func TestRoutedMode(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		w := newWorld(t, worldOpts{outside: true, guests: 1})
		w.writeConfig(netConfig("routed", backend))
		w.outside.Exec(t, "ip", "route", "add", guestNet, "via", uplinkDom0)
		before := w.dom0.Dump(t)
		w.mustRun(0, "start")
		w.attach("br-e2e")
		mustPing(t, w.guests[0].ns, "guest1", gatewayIP)
		mustPing(t, w.guests[0].ns, "guest1", outsideIP)
		if n := w.observed("from_guests"); n == 0 {
			t.Errorf("routed: outside saw no echo request from %s", guestNet)
		}
		if n := w.observed("from_uplink"); n != 0 {
			t.Errorf("routed: outside saw %d echo requests from %s: guests were masqueraded", n, uplinkDom0)
		}
		w.mustRun(0, "stop")
		w.sameStateAfterStop("after stop", before)
	})
}

// Isolated: guests reach the host and each other, nothing is forwarded.
func TestIsolatedMode(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		w := newWorld(t, worldOpts{outside: true, guests: 2})
		w.writeConfig(netConfig("isolated", backend))
		// Even with forwarding already on, the firewall must keep guests in.
		w.dom0.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		before := w.dom0.Dump(t)
		w.mustRun(0, "start")
		w.attach("br-e2e")
		mustPing(t, w.guests[0].ns, "guest1", gatewayIP)
		mustPing(t, w.guests[0].ns, "guest1", w.guests[1].ip)
		mustNotPing(t, w.guests[0].ns, "guest1", outsideIP)
		if n := w.observed("from_uplink") + w.observed("from_guests"); n != 0 {
			t.Errorf("isolated: outside saw %d echo requests from the guest network", n)
		}
		w.mustRun(0, "stop")
		w.sameStateAfterStop("after stop", before)
	})
}

// Mode bridge: an existing bridge is used as is and never deleted.
func TestBridgeModeKeepsBridge(t *testing.T) {
	w := newWorld(t, worldOpts{guests: 1})
	w.dom0.Exec(t, "ip", "link", "add", "brx", "type", "bridge")
	w.dom0.Exec(t, "ip", "link", "set", "brx", "up")
	w.writeConfig("[network.lan]\nbridge = \"brx\"\nmode = \"bridge\"\n")
	before := w.dom0.Dump(t)
	w.mustRun(0, "start")
	w.mustRun(0, "start")
	w.sameState("start in bridge mode", before)
	w.mustRun(0, "status")
	w.mustRun(0, "stop")
	w.mustRun(0, "stop")
	if _, err := w.dom0.Try("ip", "link", "show", "brx"); err != nil {
		t.Fatalf("stop deleted the pre-existing bridge brx: %v", err)
	}
	w.sameState("after stop in bridge mode", before)
}

// Bad input: one line on stderr, a failing exit code, and dom0 untouched.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		setup  func(w *world)
		args   []string
		want   []string // substrings of the message
	}{
		{name: "invalid CIDR", args: []string{"start", "bridgeip=10.0.0.300/24"}, want: []string{"10.0.0.300/24"}},
		{name: "address outside network", args: []string{"start", "bridgeip=10.1.1.1/24", "brnet=10.2.2.0/24"}, want: []string{"10.1.1.1", "10.2.2.0/24"}},
		{name: "bridge name too long", args: []string{"start", "bridge=abcdefghijklmnop"}, want: []string{"abcdefghijklmnop"}},
		{name: "bridge name with slash", args: []string{"start", "bridge=br/0"}},
		{name: "bridge name with space", args: []string{"start", "bridge=br 0"}},
		{name: "unknown TOML key", config: "[network.e2e]\nbridge = \"br-e2e\"\ncolour = \"blue\"\n", args: []string{"start"}, want: []string{"colour"}},
		{name: "bad TOML value", config: "[network.e2e]\nbridge = \"br-e2e\"\nmode = \"nope\"\n", args: []string{"start"}, want: []string{"nope"}},
		{name: "TOML syntax", config: "[network.e2e\n", args: []string{"start"}},
		{name: "shaping: unknown unit", config: "[network.e2e]\nbridge = \"br-e2e\"\n[network.e2e.shaping]\nto_guest = \"10 furlongs\"\n", args: []string{"start"}, want: []string{"to_guest", "10 furlongs"}},
		{name: "shaping: zero rate", config: "[network.e2e]\nbridge = \"br-e2e\"\n[network.e2e.shaping]\nfrom_guest = \"0mbit\"\n", args: []string{"start"}, want: []string{"from_guest", "0mbit"}},
		{name: "shaping: negative rate", config: "[network.e2e]\nbridge = \"br-e2e\"\n[network.e2e.shaping]\nfrom_guest = \"-10mbit\"\n", args: []string{"start"}, want: []string{"-10mbit"}},
		{name: "shaping: burst too large", config: "[network.e2e]\nbridge = \"br-e2e\"\n[network.e2e.shaping]\nto_guest = \"10mbit\"\nto_guest_burst = \"4gb\"\n", args: []string{"start"}, want: []string{"to_guest_burst", "4gb"}},
		{
			name: "overlapping subnet",
			setup: func(w *world) {
				// (a veth: the dummy module may be missing)
				w.dom0.Exec(w.t, "ip", "link", "add", "dum0", "type", "veth", "peer", "name", "dum0p")
				w.dom0.Exec(w.t, "ip", "link", "set", "dum0", "up")
				w.dom0.Exec(w.t, "ip", "route", "add", "10.98.0.0/16", "dev", "dum0")
			},
			args: []string{"start", "bridgeip=10.98.98.1/24", "brnet=10.98.98.0/24", "bridge=br-e2e"},
			want: []string{"dum0", "10.98.0.0/16"},
		},
		{
			name: "non-bridge link with the bridge's name",
			setup: func(w *world) {
				w.dom0.Exec(w.t, "ip", "link", "add", "br-e2e", "type", "veth", "peer", "name", "br-e2e-peer")
			},
			args: []string{"start", "bridgeip=10.98.98.1/24", "bridge=br-e2e"},
			want: []string{"br-e2e"},
		},
		{name: "mode bridge without the bridge", config: "[network.lan]\nbridge = \"brnone\"\nmode = \"bridge\"\n", args: []string{"start"}, want: []string{"brnone"}},
		{name: "unknown operation", args: []string{"frobnicate"}},
		{name: "unknown network", config: "[network.e2e]\nbridge = \"br-e2e\"\n", args: []string{"start", "net=other"}, want: []string{"other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, worldOpts{})
			w.writeConfig(tc.config)
			if tc.setup != nil {
				tc.setup(w)
			}
			before := w.dom0.Dump(t)
			r := w.run(tc.args...)
			oneLineError(t, r)
			for _, s := range tc.want {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("message %q does not mention %q", strings.TrimSpace(r.stderr), s)
				}
			}
			t.Logf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
			w.sameState("after a failed "+strings.Join(tc.args, " "), before)
		})
	}
}

// xend's (network-script network-virtual) calls: argv VAR=VAL words, no config.
func TestLegacyXendCalls(t *testing.T) {
	t.Run("bridgeip brnet bridge", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOpts{guests: 1})
		before := w.dom0.Dump(t)
		args := []string{"bridgeip=10.98.98.1/24", "brnet=10.98.98.0/24", "bridge=xbr0"}
		w.mustRun(0, append([]string{"start"}, args...)...)
		w.checkBridge("xbr0", "10.98.98.1/24")
		w.attach("xbr0")
		mustPing(t, w.guests[0].ns, "guest1", gatewayIP)
		w.mustRun(0, append([]string{"status"}, args...)...)
		w.mustRun(0, append([]string{"stop"}, args...)...)
		w.sameStateAfterStop("after stop", before)
		if r := w.run(append([]string{"status"}, args...)...); r.code != 3 {
			t.Errorf("status after stop: want 3, got:\n%s", r)
		}
	})
	t.Run("no arguments", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOpts{})
		before := w.dom0.Dump(t)
		w.mustRun(0, "start")
		w.checkBridge("xenbr0", "10.6.7.1/24")
		w.mustRun(0, "status")
		w.mustRun(0, "stop")
		w.sameStateAfterStop("after stop", before)
	})
	t.Run("vifnum netdev antispoof", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOpts{outside: true, guests: 1})
		before := w.dom0.Dump(t)
		args := []string{"vifnum=3", "netdev=" + uplinkDev, "antispoof=yes", "bridgeip=10.98.98.1/24"}
		w.mustRun(0, append([]string{"start"}, args...)...)
		w.checkBridge("xenbr3", "10.98.98.1/24")
		w.attach("xenbr3")
		mustPing(t, w.guests[0].ns, "guest1", outsideIP)
		w.mustRun(0, append([]string{"stop"}, args...)...)
		w.sameStateAfterStop("after stop", before)
	})
	t.Run("net selects a TOML network, args override", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOpts{})
		w.writeConfig("[network.a]\nbridge = \"bra\"\naddress = \"10.98.97.1/24\"\n[network.b]\nbridge = \"brb\"\naddress = \"10.98.96.1/24\"\n")
		before := w.dom0.Dump(t)
		w.mustRun(0, "start", "net=b", "bridgeip=10.98.95.1/24")
		w.checkBridge("brb", "10.98.95.1/24")
		if _, err := w.dom0.Try("ip", "link", "show", "bra"); err == nil {
			t.Errorf("net=b also started bridge bra")
		}
		w.mustRun(0, "status", "net=b")
		w.mustRun(0, "stop", "net=b")
		w.sameStateAfterStop("after stop", before)
	})
	t.Run("--config flag", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, worldOpts{})
		other := t.TempDir() + "/other.toml"
		w.writeConfig("") // BROUTER_CONFIG: empty, must lose to --config
		if err := os.WriteFile(other, []byte("[network.c]\nbridge = \"brc\"\naddress = \"10.98.94.1/24\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := w.dom0.Dump(t)
		w.mustRun(0, "--config", other, "start")
		w.checkBridge("brc", "10.98.94.1/24")
		w.mustRun(0, "--config", other, "stop")
		w.sameStateAfterStop("after stop", before)
	})
}

// Many callers at once (xend, systemd and an admin racing): one network, no duplicates.
func TestConcurrentStartStop(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		w := newWorld(t, worldOpts{outside: true})
		w.writeConfig(netConfig("nat", backend))
		before := w.dom0.Dump(t)

		w.mustRun(0, "start")
		once := bridgeNeutral(w.dom0.Dump(t), "br-e2e")
		w.mustRun(0, "restart")
		if d := nstest.Diff(once, bridgeNeutral(w.dom0.Dump(t), "br-e2e")); d != "" {
			t.Errorf("restart: state differs from one start:\n%s", d)
		}
		w.mustRun(0, "stop")
		w.sameStateAfterStop("after stop", before)

		parallel := func(op string) {
			var wg sync.WaitGroup
			results := make([]result, 8)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := w.runNoFatal(op)
					if err != nil {
						r.code, r.stderr = -1, err.Error()
					}
					results[i] = r
				}()
			}
			wg.Wait()
			for _, r := range results {
				if r.code != 0 {
					t.Errorf("parallel %s:\n%s", op, r)
				}
			}
		}
		parallel("start")
		if d := nstest.Diff(once, bridgeNeutral(w.dom0.Dump(t), "br-e2e")); d != "" {
			t.Errorf("8 parallel starts: state differs from one start:\n%s", d)
		}
		parallel("stop")
		w.sameStateAfterStop("after 8 parallel stops", before)
	})
}
