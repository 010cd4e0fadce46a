package shape

import (
	"errors"
	"strings"
	"testing"
)

// ApplyPort and RemovePortIn run once per container ADD/DEL; their cost must
// not grow with the number of ports on the host. A qdisc dump does (the
// kernel sends every qdisc of every device, whatever device was asked for),
// and so does a link dump. Every helper that makes one counts it in
// hostDumps; this test holds the hot paths to zero, with and without network
// aggregates. (Class and filter dumps are per device and allowed.)
func TestNoHostWideDumps(t *testing.T) {
	h := newHost(t, 3)
	h.must(t, func() error {
		if err := ApplyNetwork(NetworkSpec{Network: "lan", ToGuest: Limit{Rate: 100e6}, FromGuest: Limit{Rate: 60e6}}); err != nil {
			return err
		}
		return ApplyNetwork(NetworkSpec{Network: "wan", ToGuest: Limit{Rate: 50e6}})
	})
	lanTo, lanFrom := NetworkIfbs("lan")
	wanTo, _ := NetworkIfbs("wan")
	apply := func(s PortLimits) func() error { return func() error { return ApplyPort(s) } }
	removeIn := func(port, network string) func() error {
		return func() error { return RemovePortIn(port, network) }
	}
	steps := []struct {
		what string
		fn   func() error
	}{
		{"ApplyPort, new port", apply(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 10e6}, FromGuest: Limit{Rate: 20e6}})},
		{"ApplyPort, same spec again", apply(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 10e6}, FromGuest: Limit{Rate: 20e6}})},
		{"ApplyPort, changed rates", apply(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 30e6}, FromGuest: Limit{Rate: 40e6, Burst: 64 << 10}})},
		{"ApplyPort, one direction dropped", apply(PortLimits{Port: "vp1", FromGuest: Limit{Rate: 40e6}})},
		{"ApplyPort, joins an aggregate", apply(PortLimits{Port: "vp1", Network: "lan", Priority: High, ToGuest: Limit{Rate: 10e6}})},
		{"ApplyPort, aggregate member again", apply(PortLimits{Port: "vp1", Network: "lan", Priority: High, ToGuest: Limit{Rate: 10e6}})},
		{"ApplyPort, aggregate member changed", apply(PortLimits{Port: "vp1", Network: "lan", Priority: Low, FromGuest: Limit{Rate: 5e6}})},
		{"ApplyPort, second member", apply(PortLimits{Port: "vp2", Network: "lan"})},
		{"ApplyPort, moves to another network", apply(PortLimits{Port: "vp1", Network: "wan", FromGuest: Limit{Rate: 5e6}})},
		{"ApplyPort, leaves every network", apply(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 1e6}})},
		{"ApplyPort, back into a network", apply(PortLimits{Port: "vp1", Network: "wan", FromGuest: Limit{Rate: 5e6}})},
		{"ApplyPort, network without aggregates", apply(PortLimits{Port: "vp3", Network: "plain", ToGuest: Limit{Rate: 5e6}, FromGuest: Limit{Rate: 5e6}})},
		{"RemovePortIn, aggregate member", removeIn("vp2", "lan")},
		{"RemovePortIn, again", removeIn("vp2", "lan")},
		{"RemovePortIn, network without aggregates", removeIn("vp3", "plain")},
		{"RemovePortIn, port never shaped", removeIn("vp3", "lan")},
	}
	for _, s := range steps {
		before := hostDumps.Load()
		h.must(t, s.fn)
		if n := hostDumps.Load() - before; n != 0 {
			t.Errorf("%s: %d host-wide dumps (qdisc or link lists of every device), want none", s.what, n)
		}
	}
	for ifb, port := range map[string]string{lanTo: "vp1", lanFrom: "vp1", wanTo: "vp2"} {
		if tags := h.dom0.Exec(t, "tc", "filter", "show", "dev", ifb, "parent", "1:"); strings.Contains(tags, "port="+port+" ") {
			t.Errorf("%s still has a tag of %s:\n%s", ifb, port, tags)
		}
	}
	if tags := h.dom0.Exec(t, "tc", "filter", "show", "dev", wanTo, "parent", "1:"); !strings.Contains(tags, "port=vp1 ") {
		t.Errorf("%s has no tag of vp1, which was applied to wan:\n%s", wanTo, tags)
	}

	// A port whose device is gone: its own ifb and its class in the named
	// network's aggregate still go, without a dump.
	if err := h.do(t, apply(PortLimits{Port: "vp2", Network: "wan", FromGuest: Limit{Rate: 7e6}})); err != nil {
		t.Fatal(err)
	}
	h.dom0.Exec(t, "ip", "link", "del", "vp2")
	before := hostDumps.Load()
	h.must(t, removeIn("vp2", "wan"))
	if n := hostDumps.Load() - before; n != 0 {
		t.Errorf("RemovePortIn of a deleted port: %d host-wide dumps, want none", n)
	}
	if _, err := h.dom0.Try("ip", "link", "show", PortIfb("vp2")); err == nil {
		t.Errorf("ifb %s of the deleted port vp2 left after RemovePortIn", PortIfb("vp2"))
	}
	if tags := h.dom0.Exec(t, "tc", "filter", "show", "dev", wanTo, "parent", "1:"); strings.Contains(tags, "port=vp2 ") {
		t.Errorf("%s still has a tag of the deleted port vp2:\n%s", wanTo, tags)
	}
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", wanTo); strings.Count(c, "parent 1:1 ") != 1 {
		t.Errorf("%s: want the class of vp1 alone under the aggregate, the deleted vp2's gone:\n%s", wanTo, c)
	}

	// The counter is live: RemovePort, which does not know the network,
	// lists all links.
	before = hostDumps.Load()
	h.must(t, func() error { return RemovePort("vp1") })
	if hostDumps.Load() == before {
		t.Errorf("RemovePort (network unknown) counted no dump: is hostDumps still counted?")
	}
	if tags := h.dom0.Exec(t, "tc", "filter", "show", "dev", wanTo, "parent", "1:"); strings.Contains(tags, "port=") {
		t.Errorf("tags left on %s:\n%s", wanTo, tags)
	}
	h.must(t, func() error { return errors.Join(RemoveNetwork("lan"), RemoveNetwork("wan")) })
	if out := h.dom0.Exec(t, "ip", "-o", "link", "show", "type", "ifb"); out != "" {
		t.Errorf("ifbs left:\n%s", out)
	}
}
