package shape

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/nstest"
)

// Kernel tests: root, each in its own namespaces (nstest deletes them, and
// with them every veth and ifb, also when a test fails).

// host is a "dom0" namespace with guest namespaces behind veth ports vp1, vp2...
type host struct {
	dom0   *nstest.NS
	guests []*nstest.NS
}

func newHost(t *testing.T, guests int) *host {
	t.Helper()
	nstest.RequireRoot(t)
	h := &host{dom0: nstest.New(t, "dom0")}
	for i := 1; i <= guests; i++ {
		g := nstest.New(t, fmt.Sprintf("guest%d", i))
		nstest.Veth(t, h.dom0, fmt.Sprintf("vp%d", i), g, "eth0")
		h.guests = append(h.guests, g)
	}
	return h
}

// do runs fn in dom0.
func (h *host) do(t *testing.T, fn func() error) error {
	t.Helper()
	return h.dom0.Do(fn)
}

func (h *host) must(t *testing.T, fn func() error) {
	t.Helper()
	if err := h.do(t, fn); err != nil {
		t.Fatal(err)
	}
}

// tcDump is a stable text snapshot of everything tc-related in dom0: links
// (with kind and alias), qdiscs, classes, and filters on every hook (including
// bpf program ids, so that a filter replaced by an identical one shows), but
// no counters.
func (h *host) tcDump(t *testing.T, skip ...string) string {
	t.Helper()
	var links []struct {
		Ifname   string `json:"ifname"`
		Ifalias  string `json:"ifalias"`
		Qdisc    string `json:"qdisc"`
		Linkinfo *struct {
			InfoKind string `json:"info_kind"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal([]byte(h.dom0.Exec(t, "ip", "-j", "-d", "link", "show")), &links); err != nil {
		t.Fatal(err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Ifname < links[j].Ifname })
	counters := regexp.MustCompile(`direct_packets_stat [0-9]+ `)
	var b strings.Builder
	for _, l := range links {
		if slices.Contains(skip, l.Ifname) {
			continue
		}
		kind := ""
		if l.Linkinfo != nil {
			kind = l.Linkinfo.InfoKind
		}
		fmt.Fprintf(&b, "link %s kind=%s qdisc=%s alias=%q\n", l.Ifname, kind, l.Qdisc, l.Ifalias)
		b.WriteString(counters.ReplaceAllString(h.dom0.Exec(t, "tc", "-d", "qdisc", "show", "dev", l.Ifname), ""))
		b.WriteString(h.dom0.Exec(t, "tc", "-d", "class", "show", "dev", l.Ifname))
		for _, hook := range []string{"ingress", "egress"} {
			if out, err := h.dom0.Try("tc", "filter", "show", "dev", l.Ifname, hook); err == nil {
				b.WriteString(hook + ":\n" + out)
			}
		}
		if out, err := h.dom0.Try("tc", "filter", "show", "dev", l.Ifname, "parent", "1:"); err == nil {
			b.WriteString("parent 1:\n" + out)
		}
	}
	return b.String()
}

func TestApplyPortCreatesExpectedObjects(t *testing.T) {
	h := newHost(t, 1)
	h.must(t, func() error {
		return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 10e6}, FromGuest: Limit{Rate: 20e6, Burst: 64 << 10}})
	})
	ifb := PortIfb("vp1")
	q := h.dom0.Exec(t, "tc", "qdisc", "show", "dev", "vp1")
	for _, want := range []string{"qdisc htb 1: root", "default 0x1", "parent 1:1", "qdisc clsact ffff:"} {
		if !strings.Contains(q, want) {
			t.Errorf("tc qdisc show dev vp1: no %q in\n%s", want, q)
		}
	}
	c := h.dom0.Exec(t, "tc", "class", "show", "dev", "vp1")
	if !regexp.MustCompile(`class htb 1:1 root leaf 2: prio 0 rate 10Mbit ceil 10Mbit burst 5000b cburst 5000b`).MatchString(c) &&
		!strings.Contains(c, "rate 10Mbit ceil 10Mbit") {
		t.Errorf("vp1 class:\n%s", c)
	}
	eg := h.dom0.Exec(t, "tc", "filter", "show", "dev", "vp1", "egress")
	if !strings.Contains(eg, "flowid 1:1 brouter-shape/1 rate=10000000 burst=0 prio=medium net=- direct-action") || strings.Contains(eg, "mirred") {
		t.Errorf("vp1 egress filters:\n%s", eg)
	}
	in := h.dom0.Exec(t, "tc", "filter", "show", "dev", "vp1", "ingress")
	for _, want := range []string{"brouter-shape/1 rate=20000000 burst=65536", "match 00000000/00000000 at 0", "mirred (Egress Redirect to device " + ifb + ") stolen"} {
		if !strings.Contains(in, want) {
			t.Errorf("vp1 ingress filters: no %q in\n%s", want, in)
		}
	}
	link := h.dom0.Exec(t, "ip", "-d", "link", "show", ifb)
	if !strings.Contains(link, "ifb") || !strings.Contains(link, "alias brouter-shape/1 port=vp1 dir=from-guest") || !strings.Contains(link, "UP") ||
		!strings.Contains(link, "addrgenmode none") {
		t.Errorf("ip -d link show %s:\n%s", ifb, link)
	}
	// No IPv6 on the ifb, so no route of its own that every later link
	// change on the host walks past (they made adding and deleting ports
	// grow with their number); a control: vp1's own are there.
	if v := h.dom0.Sysctl(t, "net.ipv6.conf."+ifb+".disable_ipv6"); v != "1" {
		t.Errorf("%s: disable_ipv6 = %s, want 1", ifb, v)
	}
	if r := h.dom0.Exec(t, "ip", "-6", "route", "show", "table", "all", "dev", ifb); r != "" {
		t.Errorf("%s has IPv6 routes:\n%s", ifb, r)
	}
	if r := h.dom0.Exec(t, "ip", "-6", "route", "show", "table", "all", "dev", "vp1"); !strings.Contains(r, "ff00::/8") {
		t.Errorf("control: vp1 has no IPv6 multicast route:\n%s", r)
	}
	ic := h.dom0.Exec(t, "tc", "class", "show", "dev", ifb)
	if !strings.Contains(ic, "rate 20Mbit ceil 20Mbit burst 64Kb cburst 64Kb") {
		t.Errorf("%s class (explicit 64KiB burst):\n%s", ifb, ic)
	}

	var st PortStatus
	h.must(t, func() (err error) { st, err = Describe("vp1"); return err })
	if st.ToGuest.Rate != 10e6 || st.FromGuest.Rate != 20e6 || st.FromGuest.Burst != 64<<10 || st.FromGuest.Device != ifb || st.ToGuest.Device != "vp1" ||
		st.ToGuest.EffectiveBurst != AutoBurst(10e6) || st.FromGuest.EffectiveBurst != 64<<10 {
		t.Errorf("Describe = %+v", st)
	}
	t.Logf("status: %s", st)
}

func TestApplyPortTwiceChangesNothing(t *testing.T) {
	h := newHost(t, 1)
	spec := PortLimits{Port: "vp1", ToGuest: Limit{Rate: 50e6}, FromGuest: Limit{Rate: 5e6}, Priority: High}
	h.must(t, func() error { return ApplyPort(spec) })
	first := h.tcDump(t)
	h.must(t, func() error { return ApplyPort(spec) })
	if d := nstest.Diff(first, h.tcDump(t)); d != "" {
		t.Errorf("second ApplyPort changed the kernel state:\n%s", d)
	}

	// Nothing was recreated either: the counters of both classes survive.
	h.dom0.Exec(t, "ip", "addr", "add", "10.202.0.1/24", "dev", "vp1")
	h.guests[0].Exec(t, "ip", "addr", "add", "10.202.0.2/24", "dev", "eth0")
	if err := h.guests[0].Ping(t, "10.202.0.1"); err != nil {
		t.Fatal(err)
	}
	sent := func() (out []int) {
		for _, dev := range []string{"vp1", PortIfb("vp1")} {
			m := regexp.MustCompile(`Sent ([0-9]+) bytes`).FindStringSubmatch(h.dom0.Exec(t, "tc", "-s", "class", "show", "dev", dev))
			if m == nil {
				t.Fatalf("no class counter on %s", dev)
			}
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
		return out
	}
	before := sent()
	if before[0] == 0 || before[1] == 0 {
		t.Fatalf("no traffic went through the shapers: %v", before)
	}
	h.must(t, func() error { return ApplyPort(spec) })
	if after := sent(); after[0] < before[0] || after[1] < before[1] {
		t.Errorf("ApplyPort of the same spec reset the class counters: bytes sent %v before, %v after", before, after)
	}
}

func TestApplyPortChangesInPlace(t *testing.T) {
	h := newHost(t, 1)
	h.must(t, func() error {
		return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 10e6}, FromGuest: Limit{Rate: 10e6}})
	})
	ifbBefore := h.dom0.Exec(t, "cat", "/sys/class/net/"+PortIfb("vp1")+"/ifindex")
	h.must(t, func() error {
		return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 30e6}, FromGuest: Limit{Rate: 40e6}})
	})
	if got := h.dom0.Exec(t, "cat", "/sys/class/net/"+PortIfb("vp1")+"/ifindex"); got != ifbBefore {
		t.Errorf("ifb was recreated (ifindex %s -> %s), want it changed in place", strings.TrimSpace(ifbBefore), strings.TrimSpace(got))
	}
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", "vp1"); !strings.Contains(c, "rate 30Mbit ceil 30Mbit") {
		t.Errorf("vp1 class after change:\n%s", c)
	}
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", PortIfb("vp1")); !strings.Contains(c, "rate 40Mbit ceil 40Mbit") {
		t.Errorf("ifb class after change:\n%s", c)
	}
	// The result is the same as applying the new spec from scratch.
	changed := h.tcDump(t)
	h.must(t, func() error { return RemovePort("vp1") })
	h.must(t, func() error {
		return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 30e6}, FromGuest: Limit{Rate: 40e6}})
	})
	if d := nstest.Diff(stripIDs(changed), stripIDs(h.tcDump(t))); d != "" {
		t.Errorf("changed in place differs from applied afresh:\n%s", d)
	}

	// Dropping one direction removes just that direction.
	h.must(t, func() error { return ApplyPort(PortLimits{Port: "vp1", FromGuest: Limit{Rate: 40e6}}) })
	if q := h.dom0.Exec(t, "tc", "qdisc", "show", "dev", "vp1"); strings.Contains(q, "htb") {
		t.Errorf("to-guest shaping left after it was dropped:\n%s", q)
	}
	if f := h.dom0.Exec(t, "tc", "filter", "show", "dev", "vp1", "egress"); f != "" {
		t.Errorf("egress filters left:\n%s", f)
	}
	h.must(t, func() error { return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 40e6}}) })
	if _, err := h.dom0.Try("ip", "link", "show", PortIfb("vp1")); err == nil {
		t.Errorf("ifb left after from-guest shaping was dropped")
	}
}

var progIDRE = regexp.MustCompile(`(not_in_hw )?id [0-9]+ |ifindex [0-9]+|index [0-9]+ ref`)

// stripIDs removes what legitimately differs between two equal setups made at
// different times: bpf program ids and action indexes.
func stripIDs(s string) string { return progIDRE.ReplaceAllString(s, "") }

func TestRemovePortRestoresBeforeState(t *testing.T) {
	h := newHost(t, 1)
	before, beforeTC := h.dom0.Dump(t), h.tcDump(t)
	h.must(t, func() error {
		return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 10e6}, FromGuest: Limit{Rate: 20e6}})
	})
	for i := 0; i < 2; i++ { // twice: the second finds nothing and is fine with that
		h.must(t, func() error { return RemovePort("vp1") })
		if d := nstest.Diff(before, h.dom0.Dump(t)); d != "" {
			t.Errorf("RemovePort #%d: dom0 differs from before ApplyPort:\n%s", i+1, d)
		}
		if d := nstest.Diff(beforeTC, h.tcDump(t)); d != "" {
			t.Errorf("RemovePort #%d: tc state differs from before ApplyPort:\n%s", i+1, d)
		}
	}
	// A port that is already gone: its ifb must still go.
	h.must(t, func() error { return ApplyPort(PortLimits{Port: "vp1", FromGuest: Limit{Rate: 20e6}}) })
	h.dom0.Exec(t, "ip", "link", "del", "vp1")
	h.must(t, func() error { return RemovePort("vp1") })
	if out := h.dom0.Exec(t, "ip", "-o", "link", "show", "type", "ifb"); out != "" {
		t.Errorf("ifb left after RemovePort of a deleted port:\n%s", out)
	}
}

func TestValidationChangesNothing(t *testing.T) {
	h := newHost(t, 1)
	h.must(t, func() error { return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 10e6}}) })
	before := h.tcDump(t)
	for _, tc := range []struct {
		name string
		spec PortLimits
		want string
	}{
		{"burst above 1GiB", PortLimits{Port: "vp1", ToGuest: Limit{Rate: 1e9, Burst: 2 << 30}}, "burst 2GiB is above the maximum of 1GiB"},
		{"burst beyond the kernel's bucket", PortLimits{Port: "vp1", ToGuest: Limit{Rate: 1e6, Burst: 512 << 20}}, "more than the kernel can hold"},
		{"burst without rate", PortLimits{Port: "vp1", FromGuest: Limit{Burst: 1 << 20}}, "without a rate"},
		{"rate too low", PortLimits{Port: "vp1", ToGuest: Limit{Rate: 100}}, "below the minimum"},
		{"bad port name", PortLimits{Port: "vp1;rm -rf", ToGuest: Limit{Rate: 1e6}}, "invalid port name"},
		{"long port name", PortLimits{Port: "a23456789012345x", ToGuest: Limit{Rate: 1e6}}, "invalid port name"},
		{"reserved port name", PortLimits{Port: PortIfb("x"), ToGuest: Limit{Rate: 1e6}}, "belong to brouter"},
		{"bad network", PortLimits{Port: "vp1", Network: "a b", ToGuest: Limit{Rate: 1e6}}, "invalid network name"},
		{"bad priority", PortLimits{Port: "vp1", Priority: 7, ToGuest: Limit{Rate: 1e6}}, "invalid priority"},
		{"no such port", PortLimits{Port: "nope0", ToGuest: Limit{Rate: 1e6}}, "no such port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.do(t, func() error { return ApplyPort(tc.spec) })
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "shape: ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("ApplyPort(%+v) = %v, want one line starting \"shape: \" containing %q", tc.spec, err, tc.want)
			}
			if d := nstest.Diff(before, h.tcDump(t)); d != "" {
				t.Errorf("a rejected ApplyPort changed the kernel:\n%s", d)
			}
		})
	}
	err := h.do(t, func() error { return ApplyPort(PortLimits{Port: "nope0", ToGuest: Limit{Rate: 1e6}}) })
	if !errors.Is(err, ErrNoPort) {
		t.Errorf("missing port: %v, want ErrNoPort", err)
	}
	err = h.do(t, func() error {
		return ApplyNetwork(NetworkSpec{Network: "n", ToGuest: Limit{Rate: 1e6, Burst: 3 << 30}})
	})
	if err == nil || !strings.Contains(err.Error(), "above the maximum") {
		t.Errorf("ApplyNetwork with a 3GiB burst = %v", err)
	}
	if d := nstest.Diff(before, h.tcDump(t)); d != "" {
		t.Errorf("a rejected ApplyNetwork changed the kernel:\n%s", d)
	}
}

// A kernel error half-way (here: the ifb's name is taken by a dummy link)
// leaves the port as it was before the call.
func TestApplyPortUndoesOnKernelError(t *testing.T) {
	h := newHost(t, 1)
	h.dom0.Exec(t, "ip", "link", "add", PortIfb("vp1"), "type", "bridge")

	before := h.tcDump(t)
	err := h.do(t, func() error {
		return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 10e6}, FromGuest: Limit{Rate: 10e6}})
	})
	if err == nil || !strings.Contains(err.Error(), "brouter needs that name for an ifb") {
		t.Fatalf("ApplyPort = %v, want the name clash", err)
	}
	if d := nstest.Diff(before, h.tcDump(t)); d != "" {
		t.Errorf("failed ApplyPort (port unshaped before) left changes:\n%s", d)
	}

	h.must(t, func() error { return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 20e6}}) })
	before = h.tcDump(t)
	err = h.do(t, func() error {
		return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 10e6}, FromGuest: Limit{Rate: 10e6}})
	})
	if err == nil {
		t.Fatal("ApplyPort succeeded despite the name clash")
	}
	if d := nstest.Diff(stripIDs(before), stripIDs(h.tcDump(t))); d != "" {
		t.Errorf("failed ApplyPort did not restore the previous shaping:\n%s", d)
	}
}

func TestApplyNetworkUndoesOnKernelError(t *testing.T) {
	h := newHost(t, 1)
	_, fromIfb := NetworkIfbs("lan")
	h.dom0.Exec(t, "ip", "link", "add", fromIfb, "type", "bridge")
	before := h.tcDump(t)
	err := h.do(t, func() error {
		return ApplyNetwork(NetworkSpec{Network: "lan", ToGuest: Limit{Rate: 10e6}, FromGuest: Limit{Rate: 10e6}})
	})
	if err == nil || !strings.Contains(err.Error(), "brouter needs that name for an ifb") {
		t.Fatalf("ApplyNetwork = %v, want the name clash", err)
	}
	if d := nstest.Diff(before, h.tcDump(t)); d != "" {
		t.Errorf("failed ApplyNetwork left changes:\n%s", d)
	}
	// RemoveNetwork leaves the foreign link alone.
	h.must(t, func() error { return RemoveNetwork("lan") })
	h.dom0.Exec(t, "ip", "link", "show", fromIfb)
}

// A QEMU-style tap with several queues (root qdisc mq) and a Xen-style name.
func TestTapPort(t *testing.T) {
	h := newHost(t, 0)
	h.dom0.Exec(t, "ip", "tuntap", "add", "dev", "vif3.0", "mode", "tap", "multi_queue")
	h.dom0.Exec(t, "ip", "link", "set", "vif3.0", "up")
	before, beforeTC := h.dom0.Dump(t), h.tcDump(t)
	spec := PortLimits{Port: "vif3.0", ToGuest: Limit{Rate: 1e9}, FromGuest: Limit{Rate: 2e6, Burst: 16 << 10}}
	h.must(t, func() error { return ApplyPort(spec) })
	if q := h.dom0.Exec(t, "tc", "qdisc", "show", "dev", "vif3.0"); !strings.Contains(q, "qdisc htb 1: root") {
		t.Errorf("tap qdiscs:\n%s", q)
	}
	var st PortStatus
	h.must(t, func() (err error) { st, err = Describe("vif3.0"); return err })
	if st.ToGuest.Rate != 1e9 || st.FromGuest.Burst != 16<<10 || !st.Shaped() {
		t.Errorf("Describe = %+v", st)
	}
	h.must(t, func() error { return RemovePort("vif3.0") })
	if d := nstest.Diff(before, h.dom0.Dump(t)); d != "" {
		t.Errorf("dom0 after RemovePort:\n%s", d)
	}
	if d := nstest.Diff(beforeTC, h.tcDump(t)); d != "" {
		t.Errorf("tc after RemovePort:\n%s", d)
	}
	h.must(t, func() (err error) { st, err = Describe("vif3.0"); return err })
	if st.Shaped() || st.String() != "vif3.0: not shaped" {
		t.Errorf("Describe after RemovePort = %q", st)
	}
	if _, err := describeErr(h, "nope0"); !errors.Is(err, ErrNoPort) {
		t.Errorf("Describe(missing port) = %v, want ErrNoPort", err)
	}
}

func describeErr(h *host, port string) (st PortStatus, err error) {
	derr := h.dom0.Do(func() error { st, err = Describe(port); return nil })
	return st, errors.Join(err, derr)
}

func TestNetworkAggregate(t *testing.T) {
	h := newHost(t, 3)
	before, beforeTC := h.dom0.Dump(t), h.tcDump(t, "vp1")
	toIfb, fromIfb := NetworkIfbs("lan")

	h.must(t, func() error {
		return ApplyNetwork(NetworkSpec{Network: "lan", ToGuest: Limit{Rate: 100e6}, FromGuest: Limit{Rate: 60e6}})
	})
	h.must(t, func() error {
		if err := ApplyPort(PortLimits{Port: "vp1", Network: "lan", Priority: High}); err != nil {
			return err
		}
		if err := ApplyPort(PortLimits{Port: "vp2", Network: "lan", Priority: Low, ToGuest: Limit{Rate: 10e6}}); err != nil {
			return err
		}
		// vp3 has its own limits and no network: not part of the aggregate.
		return ApplyPort(PortLimits{Port: "vp3", FromGuest: Limit{Rate: 5e6}})
	})
	classes := h.dom0.Exec(t, "tc", "class", "show", "dev", fromIfb)
	// from-guest 60M: vp1 high (weight 4), vp2 low (1): 48M and 12M guaranteed.
	for _, want := range []string{
		"class htb 1:1 root rate 60Mbit ceil 60Mbit",
		"class htb 1:2 parent 1:1 leaf 2: prio 0 rate 48Mbit ceil 60Mbit",
		"class htb 1:3 parent 1:1 leaf 3: prio 2 rate 12Mbit ceil 60Mbit",
	} {
		if !strings.Contains(classes, want) {
			t.Errorf("%s classes: no %q in\n%s", fromIfb, want, classes)
		}
	}
	classes = h.dom0.Exec(t, "tc", "class", "show", "dev", toIfb)
	// to-guest 100M: vp2 is capped at 10M, so vp1 keeps the other 90M.
	for _, want := range []string{"rate 100Mbit ceil 100Mbit", "1:2 parent 1:1 leaf 2: prio 0 rate 90Mbit ceil 100Mbit", "1:3 parent 1:1 leaf 3: prio 2 rate 10Mbit ceil 10Mbit"} {
		if !strings.Contains(classes, want) {
			t.Errorf("%s classes: no %q in\n%s", toIfb, want, classes)
		}
	}
	for _, p := range []string{"vp1", "vp2"} {
		for hook, ifb := range map[string]string{"ingress": fromIfb, "egress": toIfb} {
			f := h.dom0.Exec(t, "tc", "filter", "show", "dev", p, hook)
			if !strings.Contains(f, "Egress Redirect to device "+ifb) || !strings.Contains(f, "net=lan") {
				t.Errorf("%s %s filters:\n%s", p, hook, f)
			}
		}
		if q := h.dom0.Exec(t, "tc", "qdisc", "show", "dev", p); strings.Contains(q, "htb") {
			t.Errorf("%s has its own htb although its network shapes it:\n%s", p, q)
		}
	}
	tags := h.dom0.Exec(t, "tc", "filter", "show", "dev", fromIfb, "parent", "1:")
	if !strings.Contains(tags, "handle 0x2 brouter-shape/1 port=vp1 rate=0 burst=0 prio=high") || !strings.Contains(tags, "handle 0x3 brouter-shape/1 port=vp2") {
		t.Errorf("tag filters on %s:\n%s", fromIfb, tags)
	}
	var ns NetworkStatus
	h.must(t, func() (err error) { ns, err = DescribeNetwork("lan"); return err })
	if ns.FromGuest.Rate != 60e6 || len(ns.FromGuest.Members) != 2 || ns.FromGuest.Members[0].Guaranteed != 48e6 {
		t.Errorf("DescribeNetwork = %+v", ns)
	}
	var st PortStatus
	h.must(t, func() (err error) { st, err = Describe("vp2"); return err })
	if st.Network != "lan" || st.Priority != Low || st.ToGuest.Rate != 10e6 || st.ToGuest.Aggregate != 100e6 || st.ToGuest.Guaranteed != 10e6 || st.FromGuest.Guaranteed != 12e6 {
		t.Errorf("Describe(vp2) = %+v", st)
	}
	t.Logf("status: %s", st)

	// Applying everything again changes nothing.
	dump := h.tcDump(t)
	h.must(t, func() error {
		if err := ApplyNetwork(NetworkSpec{Network: "lan", ToGuest: Limit{Rate: 100e6}, FromGuest: Limit{Rate: 60e6}}); err != nil {
			return err
		}
		return ApplyPort(PortLimits{Port: "vp2", Network: "lan", Priority: Low, ToGuest: Limit{Rate: 10e6}})
	})
	if d := nstest.Diff(dump, h.tcDump(t)); d != "" {
		t.Errorf("re-applying the network and a port changed the kernel:\n%s", d)
	}

	// Changing the aggregate rebalances in place.
	h.must(t, func() error {
		return ApplyNetwork(NetworkSpec{Network: "lan", ToGuest: Limit{Rate: 100e6}, FromGuest: Limit{Rate: 30e6}})
	})
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", fromIfb); !strings.Contains(c, "1:2 parent 1:1 leaf 2: prio 0 rate 24Mbit ceil 30Mbit") {
		t.Errorf("after changing the aggregate:\n%s", c)
	}

	// A member that disappears is removed by RemovePort; the rest rebalance.
	h.dom0.Exec(t, "ip", "link", "del", "vp1")
	h.must(t, func() error { return RemovePort("vp1") })
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", fromIfb); strings.Contains(c, "1:2") || !strings.Contains(c, "1:3 parent 1:1 leaf 3: prio 2 rate 30Mbit ceil 30Mbit") {
		t.Errorf("after removing vp1:\n%s", c)
	}
	if tags := h.dom0.Exec(t, "tc", "filter", "show", "dev", toIfb, "parent", "1:"); strings.Contains(tags, "port=vp1") {
		t.Errorf("tag of vp1 left:\n%s", tags)
	}

	// Without the aggregate, vp2 keeps its own to-guest limit.
	h.must(t, func() error { return RemoveNetwork("lan") })
	if out := h.dom0.Exec(t, "ip", "-o", "link", "show", "type", "ifb"); strings.Contains(out, toIfb) || strings.Contains(out, fromIfb) {
		t.Errorf("network ifbs left:\n%s", out)
	}
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", "vp2"); !strings.Contains(c, "rate 10Mbit ceil 10Mbit") {
		t.Errorf("vp2 did not get its own limit back:\n%s", c)
	}
	if f := h.dom0.Exec(t, "tc", "filter", "show", "dev", "vp2", "ingress"); f != "" {
		t.Errorf("vp2 ingress filters left (no from-guest limit of its own):\n%s", f)
	}
	h.must(t, func() error { return RemoveNetwork("lan") })

	h.must(t, func() error {
		if err := RemovePort("vp2"); err != nil {
			return err
		}
		return RemovePort("vp3")
	})
	// vp1 was deleted by the test itself; compare the rest.
	without := func(s string) string {
		var kept []string
		for _, l := range strings.Split(s, "\n") {
			if !regexp.MustCompile(`\bvp1\b`).MatchString(l) {
				kept = append(kept, l)
			}
		}
		return strings.Join(kept, "\n")
	}
	if d := nstest.Diff(without(before), without(h.dom0.Dump(t))); d != "" {
		t.Errorf("after removing everything, dom0 differs from before:\n%s", d)
	}
	if d := nstest.Diff(beforeTC, h.tcDump(t)); d != "" {
		t.Errorf("after removing everything, tc state differs from before:\n%s", d)
	}
}

// Ports applied to a network that has an aggregate in one direction only get
// their own limit in the other.
func TestNetworkOneDirection(t *testing.T) {
	h := newHost(t, 1)
	h.must(t, func() error {
		if err := ApplyNetwork(NetworkSpec{Network: "n1", FromGuest: Limit{Rate: 50e6}}); err != nil {
			return err
		}
		return ApplyPort(PortLimits{Port: "vp1", Network: "n1", ToGuest: Limit{Rate: 7e6}, FromGuest: Limit{Rate: 9e6}})
	})
	_, fromIfb := NetworkIfbs("n1")
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", "vp1"); !strings.Contains(c, "rate 7Mbit ceil 7Mbit") {
		t.Errorf("vp1 to-guest:\n%s", c)
	}
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", fromIfb); !strings.Contains(c, "rate 9Mbit ceil 9Mbit") {
		t.Errorf("%s:\n%s", fromIfb, c)
	}
	// Leaving the network moves the port back to its own ifb.
	h.must(t, func() error {
		return ApplyPort(PortLimits{Port: "vp1", ToGuest: Limit{Rate: 7e6}, FromGuest: Limit{Rate: 9e6}})
	})
	if c := h.dom0.Exec(t, "tc", "class", "show", "dev", fromIfb); strings.Contains(c, "1:2") {
		t.Errorf("port still in the network after leaving it:\n%s", c)
	}
	if f := h.dom0.Exec(t, "tc", "filter", "show", "dev", "vp1", "ingress"); !strings.Contains(f, PortIfb("vp1")) {
		t.Errorf("vp1 not redirected to its own ifb:\n%s", f)
	}
	h.must(t, func() error { return RemoveNetwork("n1") })
	h.must(t, func() error { return RemovePort("vp1") })
	if out := h.dom0.Exec(t, "ip", "-o", "link", "show", "type", "ifb"); out != "" {
		t.Errorf("ifbs left:\n%s", out)
	}
}
