package vnet

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

const routeDoc = `
[network.r]
mode = "route"
address = "10.97.0.1/24"
address6 = "fd00:97::1/64"
`

func TestRouteModePorts(t *testing.T) {
	f := newFixture(t, routeDoc)
	n := f.net(t, "r")
	f.ns.Exec(t, "ip", "link", "add", "vif1.0", "type", "veth", "peer", "name", "g1")
	f.ns.Exec(t, "ip", "link", "set", "vif1.0", "up")
	before := f.ns.Dump(t)
	if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.fw.Rules("r"); !ok {
		t.Fatal("no firewall rules for the route network")
	}
	mac, _ := net.ParseMAC("00:16:3e:00:00:01")
	spec := PortRequest{Name: "vif1.0", GuestMAC: mac, Antispoof: true,
		IPs: []netip.Addr{netip.MustParseAddr("10.97.0.11"), netip.MustParseAddr("fd00:97::11")}}
	if err := f.do(t, func() error { return f.m.Attach(n, PortRequest{Name: "vif1.0"}) }); err == nil || !strings.Contains(err.Error(), "mode route") {
		t.Fatalf("attach without addresses: %v", err)
	}
	if err := f.do(t, func() error { return f.m.Attach(n, spec) }); err != nil {
		t.Fatal(err)
	}
	addrs := f.ns.Exec(t, "ip", "addr", "show", "vif1.0")
	for _, want := range []string{"10.97.0.1/32", "fd00:97::1/128"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("vif1.0 lacks %s:\n%s", want, addrs)
		}
	}
	routes := f.ns.Exec(t, "ip", "route", "show", "dev", "vif1.0") + f.ns.Exec(t, "ip", "-6", "route", "show", "dev", "vif1.0")
	for _, want := range []string{"10.97.0.11 ", "fd00:97::11 "} {
		if !strings.Contains(routes, want) {
			t.Errorf("no host route %s:\n%s", want, routes)
		}
	}
	if v := strings.TrimSpace(f.ns.Exec(t, "cat", "/proc/sys/net/ipv4/conf/vif1.0/proxy_arp")); v != "1" {
		t.Errorf("proxy_arp = %s", v)
	}
	pr, ok := f.fw.Port("r", "vif1.0")
	if !ok || pr.Bridged || pr.MAC.String() != mac.String() || len(pr.IPs) != 2 {
		t.Errorf("antispoof rules %+v (present %v), want routed rules for the guest's MAC and 2 addresses", pr, ok)
	}
	var st *Status
	if err := f.do(t, func() (err error) { st, err = f.m.Status(n); return }); err != nil {
		t.Fatal(err)
	}
	if !st.Running || len(st.Ports) != 1 || len(st.Ports[0].Routed) != 2 {
		t.Errorf("status %+v", st)
	}
	// Re-attach with one address fewer: its route goes.
	spec.IPs = spec.IPs[:1]
	if err := f.do(t, func() error { return f.m.Attach(n, spec) }); err != nil {
		t.Fatal(err)
	}
	if r := f.ns.Exec(t, "ip", "-6", "route", "show", "dev", "vif1.0"); strings.Contains(r, "fd00:97::11") {
		t.Errorf("stale route kept: %s", r)
	}
	if err := f.do(t, func() error { return f.m.DetachPort("vif1.0") }); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.fw.Port("r", "vif1.0"); ok {
		t.Error("antispoof rules left after detach")
	}
	if err := f.do(t, func() error { return f.m.Stop(n) }); err != nil {
		t.Fatal(err)
	}
	after := f.ns.Dump(t)
	if d := diffIgnoring(before, after, "proxy_arp"); d != "" {
		t.Errorf("detach + stop left something behind:\n%s", d)
	}
}

func TestAntispoofNeedsGuestMAC(t *testing.T) {
	f := newFixture(t, natDoc)
	n := f.net(t, "lab")
	f.ns.Exec(t, "ip", "link", "add", "p1", "type", "veth", "peer", "name", "p1g")
	if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
		t.Fatal(err)
	}
	err := f.do(t, func() error { return f.m.Attach(n, PortRequest{Name: "p1", Antispoof: true}) })
	if err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Fatalf("antispoof without a guest MAC: %v", err)
	}
	if out := f.ns.Exec(t, "ip", "link", "show", "p1"); strings.Contains(out, "master") {
		t.Errorf("refused attach left p1 on the bridge: %s", out)
	}
	mac, _ := net.ParseMAC("00:16:3e:00:00:02")
	if err := f.do(t, func() error {
		return f.m.Attach(n, PortRequest{Name: "p1", GuestMAC: mac, Antispoof: true, IPs: []netip.Addr{netip.MustParseAddr("10.98.98.5")}})
	}); err != nil {
		t.Fatal(err)
	}
	if pr, ok := f.fw.Port("lab", "p1"); !ok || !pr.Bridged {
		t.Errorf("bridged antispoof: %+v %v", pr, ok)
	}
	if err := f.do(t, func() error { return f.m.Stop(n) }); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.fw.Port("lab", "p1"); ok {
		t.Error("stop left the port's antispoof rules")
	}
}

// diffIgnoring is nstest.Diff without lines mentioning skip.
func diffIgnoring(before, after, skip string) string {
	keep := func(s string) string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.Contains(l, skip) {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	if keep(before) == keep(after) {
		return ""
	}
	return "before:\n" + keep(before) + "\nafter:\n" + keep(after)
}
