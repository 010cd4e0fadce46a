package vnet

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/nstest"
)

// Mode route with IPv6 (Xen's vif-route): two guests on one on-link prefix
// reach each other, and a router beyond the uplink that has their prefix
// on-link reaches them, through the proxy NDP entries their attaches make;
// detach takes every entry away.
func TestRouteModeProxyNDP(t *testing.T) {
	f := newFixture(t, routeDoc+"uplink = \"up0\"\n")
	n := f.net(t, "r")
	out := nstest.New(t, "out")
	nstest.Veth(t, f.ns, "up0", out, "eth0")
	out.Exec(t, "ip", "-6", "addr", "add", "2001:db8:9::2/64", "dev", "eth0", "nodad")
	out.Exec(t, "ip", "-6", "route", "add", "fd00:97::/64", "dev", "eth0") // the guests' prefix is on its link
	f.ns.Exec(t, "ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", "up0", "nodad")
	guests := map[string]*nstest.NS{}
	for i, a := range []string{"fd00:97::11", "fd00:97::12"} {
		g := nstest.New(t, "g")
		port := []string{"vif1.0", "vif2.0"}[i]
		nstest.Veth(t, f.ns, port, g, "eth0")
		g.Exec(t, "ip", "-6", "addr", "add", a+"/64", "dev", "eth0", "nodad")
		g.Exec(t, "ip", "-6", "route", "add", "default", "via", "fd00:97::1")
		guests[a] = g
	}
	if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
		t.Fatal(err)
	}
	for i, a := range []string{"fd00:97::11", "fd00:97::12"} {
		mac, _ := net.ParseMAC([]string{"00:16:3e:00:00:01", "00:16:3e:00:00:02"}[i])
		p := PortRequest{Name: []string{"vif1.0", "vif2.0"}[i], GuestMAC: mac, IPs: []netip.Addr{netip.MustParseAddr(a)}}
		if err := f.do(t, func() error { return f.m.Attach(n, p) }); err != nil {
			t.Fatal(err)
		}
	}
	proxies := f.ns.Exec(t, "ip", "-6", "neigh", "show", "proxy")
	for _, want := range []string{"fd00:97::11 dev up0", "fd00:97::12 dev up0", "fd00:97::11 dev vif2.0", "fd00:97::12 dev vif1.0"} {
		if !strings.Contains(proxies, want) {
			t.Errorf("no proxy NDP entry %q in:\n%s", want, proxies)
		}
	}
	g1, g2 := guests["fd00:97::11"], guests["fd00:97::12"]
	if err := g1.Ping(t, "fd00:97::12"); err != nil {
		t.Errorf("guest fd00:97::11 cannot reach the other routed guest fd00:97::12: %v", err)
	}
	if err := g2.Ping(t, "2001:db8:9::2"); err != nil {
		t.Errorf("guest fd00:97::12 cannot reach 2001:db8:9::2 beyond the uplink: %v", err)
	}
	if err := out.Ping(t, "fd00:97::11"); err != nil {
		t.Errorf("2001:db8:9::2 beyond the uplink cannot reach guest fd00:97::11: %v", err)
	}
	for _, port := range []string{"vif1.0", "vif2.0"} {
		if err := f.do(t, func() error { return f.m.DetachPort(port) }); err != nil {
			t.Fatal(err)
		}
	}
	if p := strings.TrimSpace(f.ns.Exec(t, "ip", "-6", "neigh", "show", "proxy")); p != "" {
		t.Errorf("proxy NDP entries left after detach:\n%s", p)
	}
	if err := f.do(t, func() error { return f.m.Stop(n) }); err != nil {
		t.Fatal(err)
	}
}
