package firewall

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// unitBackend is an nftables backend whose table creation only touches the
// fake connection: unit tests never run nft.
func unitBackend(f *fakeNL) *nftBackend {
	return &nftBackend{
		createPortTables: func(_ string, tables []nftPortTable) error { f.create(tables); return nil },
		createFwdTable:   func(network, _ string, _ []netip.Prefix) error { f.createFwd(network); return nil },
	}
}

// recordingBackend is an nftables backend with complete (empty) records of
// network lab, and no nft: it must not touch the kernel.
func recordingBackend(t *testing.T) *nftBackend {
	b := &nftBackend{rec: testRecords(t)}
	if err := b.noteTables("lab"); err != nil {
		t.Fatal(err)
	}
	return b
}

// dumps runs fn and returns how many sets it read.
func dumps(fn func()) int64 {
	before := nftSetDumps.Load()
	fn()
	return nftSetDumps.Load() - before
}

// reference is the state that the sync without hint reaches from the same start.
func reference(t *testing.T, start *fakeNL, sync func(b *nftBackend, f *fakeNL) error) []string {
	t.Helper()
	f := newFakeNL()
	for k, tb := range start.tables {
		f.tables[k] = tb.clone()
	}
	if err := sync(unitBackend(f), f); err != nil {
		t.Fatalf("reference sync: %v", err)
	}
	return f.dump()
}

// EnsurePort/RemovePort with a right hint read no set and reach the state
// that reading the sets reaches; with a wrong one, they read the sets and
// reach it all the same.
func TestPortHints(t *testing.T) {
	f := newFakeNL()
	b := unitBackend(f)
	g := guest()
	moved := g
	moved.IPs = addrs("10.7.0.21", "fd00:7::11")
	routed := moved
	routed.Bridged = false
	other := guest()
	other.Port, other.MAC, other.IPs = "vif2.0", net.HardwareAddr{2, 0, 0, 0, 0, 2}, addrs("10.7.0.13")
	if err := b.syncPortOn(f, "lab", other.Port, &other, nil); err != nil {
		t.Fatal(err)
	}

	for _, step := range []struct {
		name       string
		want, prev *PortRules
		read       bool // the hint is wrong: the sets are read
	}{
		{"first (nothing installed)", &g, &PortRules{}, false},
		{"unchanged", &g, &g, false},
		{"new addresses", &moved, &g, false},
		{"routed", &routed, &moved, false},
		{"bridged again", &g, &routed, false},
		{"removed", nil, &g, false},
		{"removed again, nothing installed", nil, &PortRules{}, false},
		{"installed, hint says an entry that is not there", &g, &moved, true},
		{"kernel has other entries", &routed, &moved, true},
		{"removed (right hint)", nil, &routed, false},
		{"kernel has none, hint says some", &g, &moved, true},
		{"remove, hint says other entries", nil, &moved, true},
	} {
		want := step.want
		sync := func(b *nftBackend, f *fakeNL) error { return b.syncPortOn(f, "lab", g.Port, want, nil) }
		ref := reference(t, f, sync)
		var err error
		n := dumps(func() { err = b.syncPortOn(f, "lab", g.Port, step.want, step.prev) })
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := f.dump(); !slices.Equal(got, ref) {
			t.Errorf("%s: got\n%s\nwant\n%s", step.name, strings.Join(got, "\n"), strings.Join(ref, "\n"))
		}
		if (n > 0) != step.read {
			t.Errorf("%s: %d sets read, want reading: %v", step.name, n, step.read)
		}
		if !slices.Contains(f.dump(), `bridge brouter-lab as_ports "vif2.0"`) {
			t.Fatalf("%s: the other port lost its entries:\n%s", step.name, strings.Join(f.dump(), "\n"))
		}
	}

	// RemovePort of a port the records say has nothing does not even open a connection.
	nb := recordingBackend(t)
	if err := nb.RemovePort("lab", "vif9.0"); err != nil {
		t.Errorf("RemovePort with nothing installed: %v", err)
	}

	// A failed batch changes nothing and is reported (after the fallback's retries).
	f.failOn = errors.New("boom")
	before := f.dump()
	if err := b.syncPortOn(f, "lab", g.Port, &g, &PortRules{}); err == nil || !strings.HasPrefix(err.Error(), "firewall: nftables: port vif1.0: ") {
		t.Errorf("a failing batch: %v", err)
	}
	f.failOn = nil
	if !slices.Equal(f.dump(), before) {
		t.Errorf("a failed batch changed the state")
	}
}

func TestPortHintUsable(t *testing.T) {
	g := guest()
	for name, tt := range map[string]struct {
		prev   *PortRules
		usable bool
	}{
		"nil":                {nil, false},
		"nothing":            {&PortRules{}, true},
		"same":               {&g, true},
		"no names":           {&PortRules{MAC: g.MAC, IPs: g.IPs, Bridged: true}, true},
		"other port":         {&PortRules{Port: "vif2.0"}, false},
		"other network":      {&PortRules{Network: "other", MAC: g.MAC}, false},
		"addresses, no MAC":  {&PortRules{IPs: g.IPs}, false},
		"bad MAC":            {&PortRules{MAC: net.HardwareAddr{1, 2, 3}}, false},
		"invalid address":    {&PortRules{MAC: g.MAC, IPs: []netip.Addr{{}}}, false},
		"IPv4-mapped record": {&PortRules{MAC: g.MAC, IPs: addrs("::ffff:10.0.0.1")}, false},
	} {
		if got := portHint("lab", g.Port, tt.prev); (got != nil) != tt.usable {
			t.Errorf("%s: portHint = %+v, want usable: %v", name, got, tt.usable)
		}
	}
}

// EnsureForwards/RemoveForwards with a right hint read no map; with a wrong
// one they read the maps; either way they reach the state of the sync
// without hint, the table going with the network's last published port.
func TestForwardHints(t *testing.T) {
	f := newFakeNL()
	b := unitBackend(f)
	a, bb := guestA(), guestB()
	a2 := a
	a2.Forwards = []Forward{
		fwd("tcp", "", 8080, "10.0.0.2", 81),        // changed guest port
		fwd("tcp", "", 8443, "fd00::2", 443),        // unchanged
		fwd("udp", "", 53, "10.0.0.2", 53),          // new
		fwd("tcp", "127.0.0.1", 22, "10.0.0.2", 22), // new, localhost only
	}
	none := Forwards{Network: "lab", Port: "vA"}
	bNone := none
	bNone.Port = "vB"

	for _, s := range []struct {
		name       string
		want, prev *Forwards
		read       bool // the hint is wrong: the maps are read
		gone       bool // the table is gone afterwards
	}{
		{"first port, no table yet", &a, &Forwards{}, false, false},
		{"second port, unhinted", &bb, nil, true, false},
		{"unchanged", &a, &a, false, false},
		{"replaced", &a2, &a, false, false},
		{"removed, another port left", &none, &a2, false, false},
		{"back", &a, &none, false, false},
		{"last but one removed", &bNone, &bb, false, false},
		{"last removed: the table goes", &none, &a, false, true},
		{"nothing, nothing installed", &none, &Forwards{}, false, true},
		{"first again", &a, &Forwards{}, false, false},
		{"hint says nothing, the port has some", &a2, &Forwards{}, true, false},
		{"hint names other forwards", &a, &bb, true, false},
		{"hint says some, kernel has others", &a, &a2, true, false},
		{"remove with a wrong hint", &none, &a2, true, true},
		{"remove, nothing there", &none, nil, false, true},
		{"again", &a2, nil, true, false},
	} {
		want := *s.want
		ref := reference(t, f, func(b *nftBackend, f *fakeNL) error { return b.syncForwardsOn(f, want, nil) })
		var err error
		n := dumps(func() { err = b.syncForwardsOn(f, *s.want, s.prev) })
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := f.dump()
		if !slices.Equal(got, ref) {
			t.Errorf("%s: got\n%s\nwant\n%s", s.name, strings.Join(got, "\n"), strings.Join(ref, "\n"))
		}
		if s.gone != (len(got) == 0) {
			t.Errorf("%s: want the table gone: %v, have\n%s", s.name, s.gone, strings.Join(got, "\n"))
		}
		if (n > 0) != s.read {
			t.Errorf("%s: %d maps read, want reading: %v", s.name, n, s.read)
		}
		if s.want.Port == "vA" && len(s.want.Forwards) > 0 && !slices.Contains(got, "inet brouter-lab.fwd counter vA") {
			t.Errorf("%s: no counter for vA:\n%s", s.name, strings.Join(got, "\n"))
		}
	}
	if !slices.Contains(f.dump(), "inet brouter-lab.fwd fwd4any forward tcp 0.0.0.0:8080 -> 10.0.0.2:81 (port vA)") {
		t.Errorf("unexpected final state:\n%s", strings.Join(f.dump(), "\n"))
	}
}

// A host port published by another port is refused, whatever the hint, and
// the refusal changes nothing.
func TestForwardConflict(t *testing.T) {
	f := newFakeNL()
	b := unitBackend(f)
	a, bb := guestA(), guestB()
	for _, x := range []Forwards{a, bb} {
		if err := b.syncForwardsOn(f, x, &Forwards{}); err != nil {
			t.Fatal(err)
		}
	}
	before := f.dump()
	for name, tt := range map[string]struct {
		fw   Forward
		prev *Forwards
	}{
		"other guest, hint":              {fwd("tcp", "", 8080, "10.0.0.3", 80), &bb},
		"other guest, no hint":           {fwd("tcp", "", 8080, "10.0.0.3", 80), nil},
		"same target (sentinel), hint":   {fwd("tcp", "", 8080, "10.0.0.2", 80), &bb},
		"same target, no hint":           {fwd("tcp", "", 8080, "10.0.0.2", 80), nil},
		"same target, hint says nothing": {fwd("tcp", "", 8080, "10.0.0.2", 80), &Forwards{}},
	} {
		x := bb
		x.Forwards = append(slices.Clone(bb.Forwards), tt.fw)
		err := b.syncForwardsOn(f, x, tt.prev)
		if !errors.Is(err, ErrAlreadyPublished) || err.Error() != "firewall: port vB: tcp 0.0.0.0:8080 is already published by port vA" {
			t.Errorf("%s: %v", name, err)
		}
		if got := f.dump(); !slices.Equal(got, before) {
			t.Errorf("%s: a refused change changed the state:\n%s", name, strings.Join(got, "\n"))
		}
	}
	// Another family, or a specific address, is another key.
	x := bb
	x.Forwards = append(slices.Clone(bb.Forwards), fwd("tcp", "", 8080, "fd00::3", 80), fwd("tcp", "192.0.2.7", 8080, "10.0.0.3", 80))
	if err := b.syncForwardsOn(f, x, &bb); err != nil {
		t.Errorf("different keys: %v", err)
	}
}

func TestFwdHintUsable(t *testing.T) {
	a := guestA()
	for name, tt := range map[string]struct {
		prev   *Forwards
		usable bool
	}{
		"nil":           {nil, false},
		"nothing":       {&Forwards{}, true},
		"same":          {&a, true},
		"no names":      {&Forwards{Forwards: a.Forwards}, true},
		"other port":    {&Forwards{Port: "vB"}, false},
		"other network": {&Forwards{Network: "x"}, false},
		"invalid":       {&Forwards{Forwards: []Forward{{Proto: "tcp"}}}, false},
		"duplicate":     {&Forwards{Forwards: []Forward{a.Forwards[0], a.Forwards[0]}}, false},
	} {
		if got := fwdHint("lab", "vA", tt.prev); (got != nil) != tt.usable {
			t.Errorf("%s: fwdHint = %+v, want usable: %v", name, got, tt.usable)
		}
	}
	// RemoveForwards of a port the records say has none does not even open a connection.
	if err := recordingBackend(t).RemoveForwards("lab", "vA"); err != nil {
		t.Errorf("RemoveForwards with nothing installed: %v", err)
	}
}
