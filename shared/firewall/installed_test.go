package firewall

import (
	"net"
	"net/netip"
	"testing"
)

// pretendGuard makes the nftables backend's record of the port's antispoof
// entries say g is installed (nil: unknown; a PortRules without MAC: none),
// to test what happens when the records and the kernel disagree. Backends
// without records ignore it.
func pretendGuard(t testing.TB, b Backend, network, port string, g *PortRules) {
	t.Helper()
	nb, ok := b.(*nftBackend)
	if !ok || nb.rec == nil {
		return
	}
	var err error
	switch {
	case g == nil:
		err = nb.rec.Write(recGuard(network, port), guardRec{})
	case !g.installed():
		err = nb.rec.Remove(recGuard(network, port))
	default:
		err = nb.installedGuard(network, port, g)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// pretendForwards is pretendGuard for the port's published ports (nil:
// unknown; no Forwards: none).
func pretendForwards(t testing.TB, b Backend, network, port string, f *Forwards) {
	t.Helper()
	nb, ok := b.(*nftBackend)
	if !ok || nb.rec == nil {
		return
	}
	var err error
	if f == nil {
		err = nb.rec.Write(recFwd(network, port), fwdRec{})
	} else {
		err = nb.installedForwards(network, port, f.Forwards)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// The records say what is installed: unknown without records or a network
// record, nothing for a port without a record once the network's records
// are complete, and exactly what was written otherwise.
func TestInstalledRecords(t *testing.T) {
	b := &nftBackend{}
	if b.guardInstalled("lab", "vif1.0") != nil || b.fwdInstalled("lab", "vif1.0") != nil {
		t.Fatalf("without records, what is installed must be unknown")
	}
	b.rec = testRecords(t)
	if b.guardInstalled("lab", "vif1.0") != nil || b.fwdInstalled("lab", "vif1.0") != nil {
		t.Fatalf("without a network record (tables of an older version), a port without record must be unknown")
	}
	if err := b.noteTables("lab"); err != nil {
		t.Fatal(err)
	}
	if g := b.guardInstalled("lab", "vif1.0"); g == nil || g.installed() {
		t.Errorf("complete records, no port record: guard %+v, want nothing installed", g)
	}
	if f := b.fwdInstalled("lab", "vif1.0"); f == nil || len(f.Forwards) != 0 {
		t.Errorf("complete records, no port record: forwards %+v, want none", f)
	}
	g := guest()
	if err := b.installedGuard("lab", g.Port, &g); err != nil {
		t.Fatal(err)
	}
	got := b.guardInstalled("lab", g.Port)
	if got == nil || got.MAC.String() != g.MAC.String() || len(got.IPs) != len(g.IPs) || !got.Bridged {
		t.Errorf("guard record: got %+v, want %+v", got, g)
	}
	fw := []Forward{{Proto: "tcp", HostPort: 8080, GuestIP: netip.MustParseAddr("10.7.0.11"), GuestPort: 80}}
	if err := b.installedForwards("lab", g.Port, fw); err != nil {
		t.Fatal(err)
	}
	if f := b.fwdInstalled("lab", g.Port); f == nil || len(f.Forwards) != 1 || f.Forwards[0] != fw[0] {
		t.Errorf("forwards record: got %+v", f)
	}
	// A change under way: unknown until it is done.
	if err := b.changing(recGuard("lab", g.Port), guardRec{}); err != nil {
		t.Fatal(err)
	}
	if b.guardInstalled("lab", g.Port) != nil {
		t.Errorf("a record marked unknown still gave a hint")
	}
	// A record that could not have been written is no hint.
	if err := b.rec.Write(recGuard("lab", g.Port), guardRec{Known: true, MAC: "nonsense"}); err != nil {
		t.Fatal(err)
	}
	if b.guardInstalled("lab", g.Port) != nil {
		t.Errorf("a corrupt record gave a hint")
	}
	bad := guardRec{Known: true, MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}.String()}
	if err := b.rec.Write(recGuard("lab", g.Port), bad); err != nil {
		t.Fatal(err)
	}
	if b.guardInstalled("lab", g.Port) != nil {
		t.Errorf("a record with a multicast MAC gave a hint")
	}
	// Forgetting the network forgets its ports, and the records are no longer complete.
	if err := b.forgetNetwork("lab"); err != nil {
		t.Fatal(err)
	}
	if b.guardInstalled("lab", g.Port) != nil || b.fwdInstalled("lab", g.Port) != nil {
		t.Errorf("records survived forgetNetwork")
	}
	if names, _ := b.rec.List("nftables/lab/fwd"); len(names) != 0 {
		t.Errorf("port records left: %q", names)
	}
}
