package link

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/nstest"
)

// EnsureVxlan creates the device on its bridge and keeps it when asked
// again; SyncFlood changes only the flood entries that differ and leaves
// learnt ones; another VNI replaces the device.
func TestVxlanFlood(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "vxlan")
	ns.Exec(t, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul0p")
	ns.Exec(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "ul0")
	ns.Exec(t, "ip", "link", "set", "ul0", "up", "mtu", "1400")
	ns.Exec(t, "ip", "link", "add", "br0", "type", "bridge")
	a := netip.MustParseAddr
	spec := VxlanSpec{Name: "vx-t", VNI: 42, Local: a("198.51.100.1"), Port: 4789, MTU: 1350, Bridge: "br0"}
	var index int
	err := ns.Do(func() error {
		l, created, err := EnsureVxlan(spec)
		if err != nil || !created {
			t.Fatalf("EnsureVxlan: created %v, %v", created, err)
		}
		index = l.Attrs().Index
		added, removed, err := SyncFlood("vx-t", []netip.Addr{a("198.51.100.2"), a("198.51.100.3")})
		if err != nil || len(added) != 2 || len(removed) != 0 {
			t.Fatalf("SyncFlood: +%v -%v %v", added, removed, err)
		}
		p, err := RouteTo(a("198.51.100.2"))
		if err != nil || p.Dev != "ul0" || p.MTU != 1400 || p.Src != a("198.51.100.1") {
			t.Errorf("RouteTo = %+v, %v", p, err)
		}
		if ok, err := IsLocalAddr(a("198.51.100.1")); !ok || err != nil {
			t.Errorf("IsLocalAddr(own) = %v, %v", ok, err)
		}
		if ok, err := IsLocalAddr(a("198.51.100.2")); ok || err != nil {
			t.Errorf("IsLocalAddr(peer) = %v, %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Learnt entries (as the kernel makes them) of a peer that stays
	// survive a sync; those of a peer removed go with it.
	ns.Exec(t, "bridge", "fdb", "add", "02:00:00:00:00:07", "dev", "vx-t", "dst", "198.51.100.2", "self")
	ns.Exec(t, "bridge", "fdb", "add", "02:00:00:00:00:08", "dev", "vx-t", "dst", "198.51.100.3", "self")
	err = ns.Do(func() error {
		l, created, err := EnsureVxlan(spec)
		if err != nil || created || l.Attrs().Index != index {
			t.Fatalf("EnsureVxlan again: created %v index %d (was %d), %v", created, l.Attrs().Index, index, err)
		}
		added, removed, err := SyncFlood("vx-t", []netip.Addr{a("198.51.100.2"), a("198.51.100.4")})
		if err != nil || !slices.Equal(added, []netip.Addr{a("198.51.100.4")}) || !slices.Equal(removed, []netip.Addr{a("198.51.100.3")}) {
			t.Fatalf("SyncFlood: +%v -%v %v", added, removed, err)
		}
		got, err := Flood("vx-t")
		if err != nil || !slices.Equal(got, []netip.Addr{a("198.51.100.2"), a("198.51.100.4")}) {
			t.Errorf("Flood = %v, %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fdb := ns.Exec(t, "bridge", "fdb", "show", "dev", "vx-t")
	if !strings.Contains(fdb, "02:00:00:00:00:07 dst 198.51.100.2") || strings.Contains(fdb, "02:00:00:00:00:08") {
		t.Errorf("learnt entries: want 07 kept, 08 gone:\n%s", fdb)
	}
	link := ns.Exec(t, "ip", "-d", "link", "show", "vx-t")
	for _, want := range []string{"mtu 1350", "master br0", "vxlan id 42", "local 198.51.100.1", "dstport 4789"} {
		if !strings.Contains(link, want) {
			t.Errorf("vx-t lacks %q:\n%s", want, link)
		}
	}
	spec.VNI = 43
	if err := ns.Do(func() error {
		_, created, err := EnsureVxlan(spec)
		if err != nil || !created {
			t.Errorf("another VNI: created %v, %v", created, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if link := ns.Exec(t, "ip", "-d", "link", "show", "vx-t"); !strings.Contains(link, "vxlan id 43") || !strings.Contains(link, "master br0") {
		t.Errorf("vx-t not replaced:\n%s", link)
	}
}
