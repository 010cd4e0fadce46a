package vnet

import (
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/nstest"
)

const shapedDoc = natDoc + `
[network.lab.shaping]
to_guest = "20mbit"
from_guest = "10mbit"
total_from_guest = "50mbit"

[[network.lab.shaping.port]]
name = "fast*"
to_guest = "200mbit"
priority = "high"
`

// tcState is what shaping leaves in the kernel: qdiscs, filters and ifbs.
func tcState(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(ns.Exec(t, "tc", "qdisc", "show"))
	for _, dev := range []string{"slow0", "fast0"} {
		b.WriteString(ns.Exec(t, "tc", "filter", "show", "dev", dev, "ingress"))
		b.WriteString(ns.Exec(t, "tc", "filter", "show", "dev", dev, "egress"))
	}
	b.WriteString(ns.Exec(t, "ip", "-br", "link", "show", "type", "ifb"))
	return b.String()
}

func TestAttachShapesFromConfig(t *testing.T) {
	f := newFixture(t, shapedDoc)
	n := f.net(t, "lab")
	f.ns.Exec(t, "ip", "link", "add", "slow0", "type", "veth", "peer", "name", "slow0g")
	f.ns.Exec(t, "ip", "link", "add", "fast0", "type", "veth", "peer", "name", "fast0g")
	// Up before the snapshot: an up veth has a noqueue root that a down one lacks.
	f.ns.Exec(t, "ip", "link", "set", "slow0", "up")
	f.ns.Exec(t, "ip", "link", "set", "fast0", "up")
	before := tcState(t, f.ns)
	if err := f.do(t, func() error { return f.m.Start(n) }); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"slow0", "fast0"} {
		if err := f.do(t, func() error { return f.m.Attach(n, PortRequest{Name: p}) }); err != nil {
			t.Fatal(err)
		}
	}
	slow := f.ns.Exec(t, "tc", "class", "show", "dev", "slow0")
	if !strings.Contains(slow, "rate 20Mbit") {
		t.Errorf("slow0 to-guest class: %s", slow)
	}
	fast := f.ns.Exec(t, "tc", "class", "show", "dev", "fast0")
	if !strings.Contains(fast, "rate 200Mbit") {
		t.Errorf("fast0 to-guest class (per-port rule): %s", fast)
	}
	if ifbs := f.ns.Exec(t, "ip", "-br", "link", "show", "type", "ifb"); strings.TrimSpace(ifbs) == "" {
		t.Errorf("no ifb for the from-guest direction / aggregate")
	}
	// Caller-given shaping (Xen's rate, CNI's bandwidth) wins over the config.
	if err := f.do(t, func() error {
		return f.m.Attach(n, PortRequest{Name: "slow0", Shaping: &config.PortShaping{ToGuest: 5e6}})
	}); err != nil {
		t.Fatal(err)
	}
	if slow := f.ns.Exec(t, "tc", "class", "show", "dev", "slow0"); !strings.Contains(slow, "rate 5Mbit") {
		t.Errorf("slow0 after caller shaping: %s", slow)
	}
	var st *Status
	if err := f.do(t, func() (err error) { st, err = f.m.Status(n); return }); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Ports {
		if p.ToGuest == "" || p.Priority == "" {
			t.Errorf("status of %s lacks its limits: %+v", p.Name, p)
		}
		if p.Name == "fast0" && p.Priority != "high" {
			t.Errorf("fast0 priority %q, want high", p.Priority)
		}
	}
	if err := f.do(t, func() error { return f.m.Detach(n, "slow0") }); err != nil {
		t.Fatal(err)
	}
	if q := f.ns.Exec(t, "tc", "qdisc", "show", "dev", "slow0"); strings.Contains(q, "htb") || strings.Contains(q, "clsact") {
		t.Errorf("detach left shaping on slow0: %s", q)
	}
	if err := f.do(t, func() error { return f.m.Stop(n) }); err != nil {
		t.Fatal(err)
	}
	if d := nstest.Diff(before, tcState(t, f.ns)); d != "" {
		t.Errorf("stop left qdiscs, filters or ifbs behind:\n%s", d)
	}
}
