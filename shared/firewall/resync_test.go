package firewall

import (
	"net"
	"slices"
	"strings"
	"testing"
)

// TestPlanResync: after the network's tables were recreated empty behind the
// backend's back (a flushed ruleset), a resync brings back every listed
// port's entries whatever the records say, in one batch that reads each set
// once; a port's stale entries go; a port not listed keeps its own.
func TestPlanResync(t *testing.T) {
	f := newFakeNL()
	b := unitBackend(f)
	g, other, bystander := guest(), guest(), guest()
	other.Port, other.MAC, other.IPs = "vif2.0", net.HardwareAddr{2, 0, 0, 0, 0, 2}, addrs("10.7.0.13")
	bystander.Port, bystander.MAC, bystander.IPs = "vif3.0", net.HardwareAddr{2, 0, 0, 0, 0, 3}, addrs("10.7.0.14")
	for _, p := range []PortRules{g, other, bystander} {
		if err := b.syncPortOn(f, "lab", p.Port, &p, nil); err != nil {
			t.Fatal(err)
		}
	}
	want := f.dump()
	slices.Sort(want)

	// The bridge table recreated empty; vif2.0 then re-added with a wrong
	// address (a stale entry that must go), and vif3.0 put back by hand.
	for k, tb := range f.tables {
		if strings.HasPrefix(k, "bridge ") {
			for s := range tb.sets {
				tb.sets[s] = nil
			}
		}
	}
	wrong := other
	wrong.IPs = addrs("10.7.0.99")
	for _, p := range []PortRules{wrong, bystander} {
		if err := b.syncPortOn(f, "lab", p.Port, &p, nil); err != nil {
			t.Fatal(err)
		}
	}
	n := dumps(func() {
		missing, err := planResync(f, "lab", []PortRules{g, other})
		if err != nil || len(missing) > 0 {
			t.Fatalf("planResync: missing %v, %v", missing, err)
		}
	})
	got := f.dump()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("after the resync:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	sets := 0
	for _, pt := range nftPortTables("lab") {
		if _, ok := f.tables[fkey(pt.nl, pt.name)]; ok {
			sets += len(pt.sets)
		}
	}
	if n != int64(sets) {
		t.Errorf("the resync read %d sets, want each set of the existing tables (%d) once", n, sets)
	}

	// A table that is gone is reported, and nothing changes.
	delete(f.tables, "bridge brouter-lab")
	before := f.dump()
	missing, err := planResync(f, "lab", []PortRules{g})
	if err != nil || len(missing) != 1 || !missing[0].bridged {
		t.Errorf("planResync without the bridge table: missing %v, %v", missing, err)
	}
	if !slices.Equal(f.dump(), before) {
		t.Error("planResync changed something although a table was missing")
	}
}
