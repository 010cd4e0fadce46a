package vnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/shape"
)

// Unit tests of Attach and Detach on fake mechanisms (fakes_test.go): which
// port gets what, rollback, idempotence, re-attach. No root needed.

const unitDoc = `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
address6 = "fd00:98::1/64"
mtu = 1400

[network.lab.dhcp]

[network.lab.shaping]
priority = "low"

[[network.lab.shaping.port]]
name = "tapfast"
to_guest = "100mbit"
priority = "high"

[[network.lab.port]]
name = "taprule"
mac = "00:16:3e:00:00:20"
ips = ["10.98.98.20"]

[network.agg]
bridge = "bragg"
address = "10.97.0.1/24"

[network.agg.shaping]
total_to_guest = "1gbit"

[network.rt]
mode = "route"
address = "10.99.0.1/24"
`

var (
	guestMAC = net.HardwareAddr{0x00, 0x16, 0x3e, 0x00, 0x00, 0x05}
	guestIP  = netip.MustParseAddr("10.98.98.5")
)

func rate(s string) *config.PortShaping {
	r, err := shape.ParseRate(s)
	if err != nil {
		panic(err)
	}
	return &config.PortShaping{ToGuest: r, FromGuest: r}
}

// portCase is one kind of port: what it asks, and what it must get.
type portCase struct {
	name    string
	network string
	dev     string // kind of device; "" = tap
	req     PortRequest
	check   func(t *testing.T, h *host, p PortRequest)
}

var portCases = []portCase{{
	name: "plain tap", network: "lab",
	req: PortRequest{Name: "tap0", MAC: HostPortMAC()},
	check: func(t *testing.T, h *host, p PortRequest) {
		wantLine(t, h, "link tap0 tap master=\"brlab\" up=true mac=fe:ff:ff:ff:ff:ff mtu=1400 ipv6=false hairpin=false")
		noLine(t, h, "firewall port tap0")
		noLine(t, h, "shaped tap0")
		noLine(t, h, "lease ")
		if pr := h.port("lab", "tap0"); pr.Claimed || pr.Guard != nil || pr.Firewall != "" {
			t.Errorf("record %+v: want no claims, guard or firewall", pr)
		}
	},
}, {
	name: "port rule: guard, claim, lease", network: "lab",
	req: PortRequest{Name: "taprule", MAC: HostPortMAC()},
	check: func(t *testing.T, h *host, p PortRequest) {
		wantLine(t, h, "firewall port taprule: 00:16:3e:00:00:20 10.98.98.20")
		wantLine(t, h, "lease lab|00:16:3e:00:00:20 10.98.98.20")
		if pr := h.port("lab", "taprule"); !pr.Claimed || pr.Lease != "00:16:3e:00:00:20" {
			t.Errorf("record %+v: want claimed and the lease", pr)
		}
	},
}, {
	name: "vif with ip and rate", network: "lab", dev: "xen-vif",
	req: PortRequest{Name: "vif3.0", MAC: HostPortMAC(), GuestMAC: guestMAC, IPs: []netip.Addr{guestIP}, Antispoof: true, Shaping: rate("10mbit")},
	check: func(t *testing.T, h *host, p PortRequest) {
		wantLine(t, h, "firewall port vif3.0: 00:16:3e:00:00:05 10.98.98.5")
		// The caller's rates, the config's priority.
		wantLine(t, h, "shaped vif3.0 {Port:vif3.0 ToGuest:{Rate:10000000 Burst:0} FromGuest:{Rate:10000000 Burst:0} Priority:low Network:lab}")
		wantLine(t, h, "file lab/addrs/ip/10.98.98.5 vif3.0")
	},
}, {
	name: "shaping from config", network: "lab",
	req: PortRequest{Name: "tapfast"},
	check: func(t *testing.T, h *host, p PortRequest) {
		wantLine(t, h, "shaped tapfast {Port:tapfast ToGuest:{Rate:100000000 Burst:0} FromGuest:{Rate:0 Burst:0} Priority:high Network:lab}")
	},
}, {
	name: "owned veth with published ports", network: "lab", dev: "veth",
	req: PortRequest{Name: "brv1", Owned: true, GuestMAC: guestMAC, IPs: []netip.Addr{guestIP}, Antispoof: true,
		Forwards: []Forward{{Proto: "tcp", HostPort: 8080, GuestIP: guestIP, GuestPort: 80}}},
	check: func(t *testing.T, h *host, p PortRequest) {
		// Published ports need hairpin, and route_localnet on the bridge.
		wantLine(t, h, "link brv1 veth master=\"brlab\" up=true", "hairpin=true")
		wantLine(t, h, "firewall forward tcp 0.0.0.0:8080 -> 10.98.98.5:80 (port brv1)")
		wantLine(t, h, "file hostports/tcp-any4-8080 lab/brv1")
		wantLine(t, h, "link brlab bridge", "localnet=true")
		noLine(t, h, "shaped brv1") // a fresh device has no shaping to remove
	},
}, {
	name: "aggregate shaping", network: "agg",
	req: PortRequest{Name: "tapagg"},
	check: func(t *testing.T, h *host, p PortRequest) {
		wantLine(t, h, "shaped tapagg {Port:tapagg ToGuest:{Rate:0 Burst:0} FromGuest:{Rate:0 Burst:0} Priority:medium Network:agg}")
		if pr := h.port("agg", "tapagg"); !pr.Aggregate {
			t.Errorf("record %+v: want Aggregate", pr)
		}
	},
}, {
	name: "mode route", network: "rt", dev: "xen-vif",
	req: PortRequest{Name: "vif4.0", MAC: HostPortMAC(), GuestMAC: guestMAC, IPs: []netip.Addr{netip.MustParseAddr("198.51.100.7")}, Antispoof: true},
	check: func(t *testing.T, h *host, p PortRequest) {
		wantLine(t, h, "link vif4.0 xen-vif master=\"\" up=true mac=fe:ff:ff:ff:ff:ff mtu=1500 ipv6=true hairpin=false localnet=false addrs=[10.99.0.1/32] routes=[198.51.100.7 src 10.99.0.1]")
		wantLine(t, h, "firewall port vif4.0: 00:16:3e:00:00:05 198.51.100.7")
	},
}}

// wantLine fails the test unless a line of h's dump has every part.
func wantLine(t *testing.T, h *host, parts ...string) {
	t.Helper()
	d := h.dump()
	for _, l := range strings.Split(d, "\n") {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
			return
		}
	}
	t.Errorf("no line with %q in:\n%s", parts, d)
}

func noLine(t *testing.T, h *host, part string) {
	t.Helper()
	if d := h.dump(); strings.Contains(d, part) {
		t.Errorf("unexpected %q in:\n%s", part, d)
	}
}

// withDevice adds the case's device (down, as Xen's vifs come) to h.
func (c portCase) withDevice(h *host) {
	kind := c.dev
	if kind == "" {
		kind = "tap"
	}
	h.links.add(c.req.Name, kind, 1500)
}

// Each kind of port gets what the policy says; attaching it again changes
// nothing; its record holds its request; Detach puts everything back.
func TestAttachPolicy(t *testing.T) {
	for _, c := range portCases {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t, unitDoc)
			c.withDevice(h)
			n := h.net(c.network)
			before := h.dump()
			if err := h.m.Attach(n, c.req); err != nil {
				t.Fatal(err)
			}
			c.check(t, h, c.req)
			once := h.dump()
			if err := h.m.Attach(n, c.req); err != nil {
				t.Fatal(err)
			}
			if d := diff(once, h.dump()); d != "" {
				t.Errorf("attaching again changed:\n%s", d)
			}
			pr := h.port(c.network, c.req.Name)
			got, ok := pr.request()
			want := withPortRule(n, c.req)
			if !ok || !samePortRequest(got, want) {
				t.Errorf("record's request %+v (%v), want %+v", got, ok, want)
			}
			if err := h.m.Detach(n, c.req.Name); err != nil {
				t.Fatal(err)
			}
			if c.req.Owned {
				// Detach deleted the device, as asked.
				noLine(t, h, "link "+c.req.Name+" ")
				before = withoutLine(before, "link "+c.req.Name+" ")
			}
			if d := diff(before, h.dump()); d != "" {
				t.Errorf("after Detach (- before, + after):\n%s", d)
			}
			if err := h.m.Detach(n, c.req.Name); err != nil {
				t.Errorf("second Detach: %v", err)
			}
		})
	}
}

// withoutLine drops the lines of dump that start with prefix.
func withoutLine(dump, prefix string) string {
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		if !strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func samePortRequest(a, b PortRequest) bool { return reflect.DeepEqual(a, b) }

// A failure at any step of Attach leaves the host as it was: each changing
// call of the mechanisms fails once, in turn.
func TestAttachRollsBackAtEveryStep(t *testing.T) {
	for _, c := range portCases {
		t.Run(c.name, func(t *testing.T) {
			// The calls a successful Attach makes.
			h := newHost(t, unitDoc)
			c.withDevice(h)
			if err := h.m.Attach(h.net(c.network), c.req); err != nil {
				t.Fatal(err)
			}
			steps := h.faults.names()
			if len(steps) < 2 {
				t.Fatalf("only %v: the fakes see nothing", steps)
			}
			for _, step := range steps {
				h := newHost(t, unitDoc)
				c.withDevice(h)
				n := h.net(c.network)
				before := h.dump()
				h.faults.failOn = step
				err := h.m.Attach(n, c.req)
				if !errors.Is(err, errInjected) {
					t.Errorf("failing %s: Attach returned %v", step, err)
				}
				after := h.dump()
				if c.req.Owned {
					// The caller made the device for the attachment: a
					// failed one deletes it, with everything on it.
					before, after = withoutLine(before, "link "+c.req.Name+" "), withoutLine(after, "link "+c.req.Name+" ")
				}
				if d := diff(before, after); d != "" {
					t.Errorf("failing %s left (- before, + after):\n%s", step, d)
				}
			}
			t.Logf("%d steps failed in turn: %v", len(steps), steps)
		})
	}
}

// Re-attaching with other addresses replaces the guard and the claims, and
// moves the lease.
func TestReattachChanges(t *testing.T) {
	h := newHost(t, unitDoc)
	h.links.add("vif5.0", "xen-vif", 1500)
	n := h.net("lab")
	p := PortRequest{Name: "vif5.0", MAC: HostPortMAC(), GuestMAC: guestMAC, IPs: []netip.Addr{guestIP}, Antispoof: true}
	if err := h.m.Attach(n, p); err != nil {
		t.Fatal(err)
	}
	other := netip.MustParseAddr("10.98.98.6")
	p.IPs, p.GuestMAC = []netip.Addr{other}, net.HardwareAddr{0x00, 0x16, 0x3e, 0x00, 0x00, 0x06}
	if err := h.m.Attach(n, p); err != nil {
		t.Fatal(err)
	}
	wantLine(t, h, "firewall port vif5.0: 00:16:3e:00:00:06 10.98.98.6")
	wantLine(t, h, "file lab/addrs/ip/10.98.98.6 vif5.0")
	noLine(t, h, "10.98.98.5")
	wantLine(t, h, "lease lab|00:16:3e:00:00:06 10.98.98.6")
	noLine(t, h, "00:16:3e:00:00:05")
	// Without antispoof: the guard goes.
	p.Antispoof, p.IPs = false, nil
	if err := h.m.Attach(n, p); err != nil {
		t.Fatal(err)
	}
	noLine(t, h, "firewall port vif5.0")
	if pr := h.port("lab", "vif5.0"); pr.Guard != nil || pr.Firewall != "" {
		t.Errorf("record %+v: want no guard", pr)
	}
}

// Bad requests and devices that cannot be guest ports are refused before
// anything changes, as ErrInvalidPort.
func TestAttachRefuses(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(h *host)
		req   PortRequest
	}{
		{"gateway address", func(h *host) { h.links.add("tap1", "tap", 1500) },
			PortRequest{Name: "tap1", GuestMAC: guestMAC, IPs: []netip.Addr{netip.MustParseAddr("10.98.98.1")}, Antispoof: true}},
		{"the uplink", nil, PortRequest{Name: "up0"}},
		{"a tun", func(h *host) { h.links.add("tun0", "tun", 1500) }, PortRequest{Name: "tun0"}},
		{"on another bridge", func(h *host) {
			h.links.add("brother", "bridge", 1500)
			h.links.add("tap2", "tap", 1500).master = "brother"
		}, PortRequest{Name: "tap2"}},
		{"with an address", func(h *host) {
			h.links.add("tap3", "tap", 1500).addrs = []netip.Prefix{netip.MustParsePrefix("192.0.2.9/24")}
		}, PortRequest{Name: "tap3"}},
		{"antispoof without MAC", func(h *host) { h.links.add("tap4", "tap", 1500) },
			PortRequest{Name: "tap4", IPs: []netip.Addr{guestIP}, Antispoof: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t, unitDoc)
			if c.setup != nil {
				c.setup(h)
			}
			before := h.dump()
			err := h.m.Attach(h.net("lab"), c.req)
			if !errors.Is(err, ErrInvalidPort) {
				t.Errorf("Attach: %v, want ErrInvalidPort", err)
			}
			if d := diff(before, h.dump()); d != "" {
				t.Errorf("changed (- before, + after):\n%s", d)
			}
			if calls := h.faults.names(); len(calls) > 0 {
				t.Errorf("mechanisms called: %v", calls)
			}
		})
	}
}

// A record from before version 4 (no request, no aggregate flag) still
// detaches, and says it holds no request.
func TestOldPortRecordDetaches(t *testing.T) {
	h := newHost(t, unitDoc)
	h.links.add("tapold", "tap", 1500)
	n := h.net("lab")
	if err := h.m.Attach(n, PortRequest{Name: "tapold", GuestMAC: guestMAC, IPs: []netip.Addr{guestIP}, Antispoof: true}); err != nil {
		t.Fatal(err)
	}
	pr := h.port("lab", "tapold")
	pr.V, pr.Request, pr.Aggregate = 3, nil, false
	if err := h.m.writePort(&pr); err != nil {
		t.Fatal(err)
	}
	if old := h.port("lab", "tapold"); func() bool { _, ok := old.request(); return ok }() {
		t.Error("a version 3 record gave a request")
	}
	if err := h.m.DetachPort("tapold"); err != nil {
		t.Fatal(err)
	}
	noLine(t, h, "firewall port tapold")
	noLine(t, h, "ports/lab/tapold")
}

// Ports attach and detach at once (each under its own lock, the network's
// shared), and the network's bookkeeping stays whole.
func TestParallelAttachDetach(t *testing.T) {
	h := newHost(t, unitDoc)
	n := h.net("lab")
	const k = 40
	var names []string
	for i := range k {
		name := fmt.Sprintf("vif%d.0", i+10)
		names = append(names, name)
		h.links.add(name, "xen-vif", 1500)
	}
	before := h.dump()
	run := func(fn func(i int) error) {
		var wg sync.WaitGroup
		errs := make([]error, k)
		for i := range k {
			wg.Go(func() { errs[i] = fn(i) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	run(func(i int) error {
		return h.m.Attach(n, PortRequest{Name: names[i], MAC: HostPortMAC(), GuestMAC: net.HardwareAddr{0, 0x16, 0x3e, 0, 1, byte(i)},
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 98, 98, byte(100 + i)})}, Antispoof: true})
	})
	if got := h.fw.Ports("lab"); !slices.Equal(got, sortedCopy(names)) {
		t.Errorf("guarded ports %v, want %v", got, names)
	}
	if got, _ := h.m.Ports("lab"); len(got) != k {
		t.Errorf("%d port records, want %d", len(got), k)
	}
	run(func(i int) error { return h.m.DetachPort(names[i]) })
	if d := diff(before, h.dump()); d != "" {
		t.Errorf("after the detaches (- before, + after):\n%s", d)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
