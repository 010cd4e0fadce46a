package vnet

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/nstest"
)

// ownedVeth begins an owned port's attachment and makes its veth, with the
// peer "eth0" in guest; it fails the test on error.
func (f *fixture) ownedVeth(t *testing.T, a Attachment, guest *nstest.NS) (*OwnedPort, link.VethEnds) {
	t.Helper()
	fd, err := os.Open(guest.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	var o *OwnedPort
	var ends link.VethEnds
	err = f.do(t, func() (err error) {
		if o, err = f.m.BeginOwned(a); err != nil {
			return err
		}
		ends, err = o.CreateVeth(link.VethSpec{PeerName: "eth0", PeerNetns: int(fd.Fd())})
		return err
	})
	if err != nil {
		t.Fatalf("owned veth %s: %v", a.Port, err)
	}
	return o, ends
}

// An owned port's lifecycle: made, given addresses and attached; detached
// with its device, addresses and record; an attach aborted halfway leaves
// nothing; a peer namespace that is the host's is refused; GC removes the
// attachments of its scope that are not valid, and its unrecorded leaks,
// and nothing else. The host is as before at the end.
func TestOwnedPortLifecycle(t *testing.T) {
	// (No mtu: a bridge made with one loses it to 1500 when its last port leaves.)
	f := newFixture(t, "[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n")
	n := f.net(t, "lab")
	if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
		t.Fatal(err)
	}
	before := f.ns.Dump(t)
	record := func(port string) string { return filepath.Join(f.cfg.RunDir, attachmentsDir, port+".json") }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	onBridge := func() string { return f.ns.Exec(t, "ip", "-o", "link", "show", "master", "brlab") }

	// Attached: on the bridge, the peer in the guest with the MAC CreateVeth
	// reported, an address of the network's, a record.
	g1 := nstest.New(t, "guest")
	o1, ends := f.ownedVeth(t, Attachment{Scope: "test/a", ID: "c1", Network: "lab", Port: "own1"}, g1)
	err := f.do(t, func() error {
		got, err := o1.Allocate(n, nil)
		if err != nil {
			return err
		}
		return o1.Attach(n, PortRequest{GuestMAC: ends.Peer.HardwareAddr, IPs: []netip.Addr{got[0].Prefix.Addr()}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(onBridge(), " own1@") {
		t.Errorf("own1 not on brlab: %s", onBridge())
	}
	if out := g1.Exec(t, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "link/ether "+ends.Peer.HardwareAddr.String()) {
		t.Errorf("guest eth0 has not the MAC %s: %s", ends.Peer.HardwareAddr, out)
	}
	if !exists(record("own1")) {
		t.Errorf("no attachment record for own1")
	}

	// Aborted after its device and addresses: nothing left, in the guest either.
	g2 := nstest.New(t, "guest")
	g2before := g2.Dump(t)
	o2, _ := f.ownedVeth(t, Attachment{Scope: "test/a", ID: "c2", Network: "lab", Port: "own2"}, g2)
	if err := f.do(t, func() error { _, err := o2.Allocate(n, nil); return err }); err != nil {
		t.Fatal(err)
	}
	if err := f.do(t, o2.Abort); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if d := nstest.Diff(g2before, g2.Dump(t)); d != "" || exists(record("own2")) {
		t.Errorf("aborted attachment left its record (%v) or the guest's eth0:\n%s", exists(record("own2")), d)
	}
	if owners, _ := f.m.Owners("lab"); len(owners) != 1 || owners[0] != "own1" {
		t.Errorf("address owners after the abort: %v, want own1 only", owners)
	}

	// The host's own namespace as the peer's: refused, nothing made.
	err = f.do(t, func() error {
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		defer self.Close()
		o, err := f.m.BeginOwned(Attachment{Scope: "test/a", ID: "self", Network: "lab", Port: "own9"})
		if err != nil {
			return err
		}
		defer o.Abort()
		if _, err := o.CreateVeth(link.VethSpec{PeerName: "eth9", PeerNetns: int(self.Fd())}); err == nil {
			t.Errorf("a veth whose peer goes to the host's own namespace was made")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// GC of scope test/a keeping c1: c3 goes (with the owner's release),
	// another scope's c1 stays, an unrecorded port the owner's names claim
	// goes, one they do not claim stays.
	f.ownedVeth(t, Attachment{Scope: "test/a", ID: "c3", Network: "lab", Port: "own3"}, nstest.New(t, "guest"))
	f.ownedVeth(t, Attachment{Scope: "test/b", ID: "c1", Network: "lab", Port: "own4"}, nstest.New(t, "guest"))
	for _, p := range []string{"own5", "other6"} {
		f.ns.Exec(t, "ip", "link", "add", p, "type", "veth", "peer", "name", p+"g")
		if err := f.do(t, func() error { return f.m.Attach(n, PortRequest{Name: p, Owned: true}) }); err != nil {
			t.Fatal(err)
		}
	}
	var released []string
	gc := OwnedGC{Scope: "test/a", Network: "lab", Valid: map[string]string{"c1": "own1"},
		Mine:    func(p string) bool { return strings.HasPrefix(p, "own") },
		Release: func(a Attachment) error { released = append(released, a.ID); return nil }}
	if err := f.do(t, func() error { return f.m.GCOwned(gc) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	links := f.ns.Exec(t, "ip", "-o", "link", "show")
	for p, want := range map[string]bool{"own1": true, "own3": false, "own4": true, "own5": false, "other6": true} {
		if got := strings.Contains(links, " "+p+"@"); got != want {
			t.Errorf("after GC: %s there: %v, want %v", p, got, want)
		}
	}
	if len(released) != 1 || released[0] != "c3" {
		t.Errorf("GC released %v, want [c3]", released)
	}
	if exists(record("own3")) || !exists(record("own4")) {
		t.Errorf("after GC: own3's record there: %v (want false), own4's: %v (want true)", exists(record("own3")), exists(record("own4")))
	}

	// Detach, twice; then everything is as before.
	for _, p := range []string{"own1", "own1", "own4", "other6"} {
		if err := f.do(t, func() error { return f.m.DetachOwned(p, "lab") }); err != nil {
			t.Errorf("DetachOwned %s: %v", p, err)
		}
	}
	if d := nstest.Diff(before, f.ns.Dump(t)); d != "" {
		t.Errorf("host after detaching everything (- before, + after):\n%s", d)
	}
	if owners, _ := f.m.Owners("lab"); len(owners) != 0 {
		t.Errorf("address owners left: %v", owners)
	}
	if left, _ := f.m.Records.List(attachmentsDir); len(left) != 0 {
		t.Errorf("attachment records left: %v", left)
	}
}
