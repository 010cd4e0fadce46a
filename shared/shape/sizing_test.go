package shape

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
)

// The automatic burst at the rates the issue cares about, for the HZ values
// kernels ship with. One tick of the rate, at least two full frames.
func TestAutoBurst(t *testing.T) {
	for _, tc := range []struct {
		rate, hz, want uint64
	}{
		{1e6, 250, 3028}, // 500 B per tick: two frames instead
		{10e6, 250, 5000},
		{100e6, 250, 50_000},
		{1e9, 250, 500_000},
		{1e6, 100, 3028},
		{10e6, 100, 12_500},
		{100e6, 100, 125_000},
		{1e9, 100, 1_250_000},
		{1e9, 1000, 125_000},
		{10e12, 100, MaxBurst}, // 12.5 GB a tick: capped
		{1e9, 0, 1_250_000},    // unknown HZ: 100
	} {
		if got := autoBurst(tc.rate, tc.hz); got != tc.want {
			t.Errorf("autoBurst(%s, HZ=%d) = %d, want %d", FormatRate(tc.rate), tc.hz, got, tc.want)
		}
	}
	// What the bucket costs: over a 3 s measurement the initial bucket adds
	// burst/(rate*3s) to the average. Keep it under 1% at every rate.
	for _, r := range []uint64{1e6, 10e6, 100e6, 1e9} {
		for _, hz := range []uint64{100, 250, 1000} {
			if extra := float64(autoBurst(r, hz)*8) / float64(r*3); extra > 0.01 {
				t.Errorf("autoBurst(%s, HZ=%d) adds %.2f%% to a 3 s average", FormatRate(r), hz, 100*extra)
			}
		}
	}
}

func TestBurstTicks(t *testing.T) {
	// 1 Mbit/s = 125000 B/s; 125000 B is one second = 15625000 ticks of 64 ns.
	if got := burstTicks(125_000, 1e6); got != 15_625_000 {
		t.Errorf("burstTicks(1s at 1Mbit) = %d", got)
	}
	for _, tc := range []struct{ bytes, rate uint64 }{{3028, 1e6}, {5000, 10e6}, {500_000, 1e9}, {1 << 30, 1e12}, {64 << 10, 20e6}} {
		ticks := burstTicks(tc.bytes, tc.rate)
		back := ticksBurst(ticks, tc.rate)
		// Rounded up to whole ticks: at most one tick's worth of bytes more.
		if back < tc.bytes || back > tc.bytes+tc.rate/8/psTicksPerSec+1 {
			t.Errorf("burst %d B at %s -> %d ticks -> %d B", tc.bytes, FormatRate(tc.rate), ticks, back)
		}
	}
	// The kernel's u32 of ticks caps a bucket at ~274.9 s of the rate.
	if got := maxBurstFor(1e6); got < 34_000_000 || got > 34_400_000 {
		t.Errorf("maxBurstFor(1Mbit) = %d, want ~274.9 s * 125000 B/s", got)
	}
	if err := (Limit{Rate: 1e6, Burst: 40 << 20}).validate("x"); err == nil || !strings.Contains(err.Error(), "more than the kernel can hold") {
		t.Errorf("40MiB at 1Mbit/s: %v", err)
	}
	if err := (Limit{Rate: 1e6, Burst: 32 << 20}).validate("x"); err != nil {
		t.Errorf("32MiB at 1Mbit/s: %v", err)
	}
}

func TestQueueLimit(t *testing.T) {
	for _, tc := range []struct{ rate, want uint64 }{
		{1e6, 68 << 10},
		{10e6, 68 << 10},
		{12e6, 75_000},
		{100e6, 625_000},
		{1e9, 6_250_000},
		{10e12, 256 << 20},
	} {
		if got := QueueLimit(tc.rate); got != tc.want {
			t.Errorf("QueueLimit(%s) = %d, want %d", FormatRate(tc.rate), got, tc.want)
		}
	}
	// A full 64 KiB GSO packet, as the qdisc counts it, always fits.
	if gso := uint64(65536 + 44*66); QueueLimit(MinRate) < gso {
		t.Errorf("QueueLimit(min) = %d < one GSO packet %d", QueueLimit(MinRate), gso)
	}
	if got := codelTarget(100e6); got != 5000 {
		t.Errorf("codelTarget(100Mbit) = %dus", got)
	}
	if got := codelTarget(1e6); got != 18168 { // 1.5 * 1514 B at 125000 B/s
		t.Errorf("codelTarget(1Mbit) = %dus", got)
	}
}

func TestShares(t *testing.T) {
	const A = 100e6
	for _, tc := range []struct {
		name string
		in   []member
		want []uint64
	}{
		{"equal", []member{{A, 2}, {A, 2}}, []uint64{50e6, 50e6}},
		{"high vs low", []member{{A, 4}, {A, 1}}, []uint64{80e6, 20e6}},
		{"high, medium, low", []member{{A, 4}, {A, 2}, {A, 1}}, []uint64{57142857, 28571428, 14285715}},
		{"capped high gives the rest away", []member{{60e6, 4}, {A, 1}}, []uint64{60e6, 40e6}},
		{"capped low", []member{{A, 4}, {10e6, 1}}, []uint64{90e6, 10e6}},
		{"capped medium among two", []member{{5e6, 2}, {A, 2}, {A, 2}}, []uint64{5e6, 47.5e6, 47.5e6}},
		{"all capped below the aggregate", []member{{10e6, 2}, {20e6, 1}}, []uint64{10e6, 20e6}},
		{"single", []member{{A, 1}}, []uint64{A}},
		{"none", nil, []uint64{}},
	} {
		got := shares(A, tc.in)
		if len(got) != len(tc.want) {
			t.Errorf("%s: shares = %v, want %v", tc.name, got, tc.want)
			continue
		}
		var sum uint64
		for i := range got {
			sum += got[i]
			if got[i] != tc.want[i] {
				t.Errorf("%s: shares = %v, want %v", tc.name, got, tc.want)
				break
			}
		}
		if sum > A {
			t.Errorf("%s: shares sum to %d > aggregate", tc.name, sum)
		}
	}
	// Tiny aggregate, many ports: nobody gets less than MinRate.
	many := make([]member, 50)
	for i := range many {
		many[i] = member{ceil: 100e3, weight: 1}
	}
	for _, r := range shares(100e3, many) {
		if r < MinRate {
			t.Errorf("share %d below MinRate", r)
		}
	}
}

func TestScanHZ(t *testing.T) {
	cfg := "# comment\nCONFIG_HZ_250=y\nCONFIG_HZ=250\nCONFIG_X=1\n"
	if got := scanHZ(strings.NewReader(cfg)); got != 250 {
		t.Errorf("scanHZ = %d", got)
	}
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte("CONFIG_HZ=1000\n"))
	w.Close()
	r, _ := gzip.NewReader(&gz)
	if got := scanHZ(r); got != 1000 {
		t.Errorf("scanHZ(gzip) = %d", got)
	}
	if got := scanHZ(strings.NewReader("CONFIG_HZ=banana\n")); got != 0 {
		t.Errorf("scanHZ(garbage) = %d", got)
	}
	if hz := KernelHZ(); hz < 24 || hz > 10000 {
		t.Errorf("KernelHZ() = %d", hz)
	}
}

func TestNames(t *testing.T) {
	for _, p := range []string{"vif3.0", "tap0", "veth1234abcd", "a23456789012345"} {
		n := PortIfb(p)
		if len(n) != 15 || !strings.HasPrefix(n, "brsp") || PortIfb(p) != n || !reservedRE.MatchString(n) {
			t.Errorf("PortIfb(%q) = %q", p, n)
		}
		if err := validPort(p); err != nil {
			t.Errorf("validPort(%q): %v", p, err)
		}
	}
	if PortIfb("vif1.0") == PortIfb("vif1.1") {
		t.Error("PortIfb collides")
	}
	to, from := NetworkIfbs("lan")
	if len(to) != 15 || len(from) != 15 || to[4:] != from[4:] || to == from || to == PortIfb("lan") {
		t.Errorf("NetworkIfbs(lan) = %q, %q", to, from)
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a:b", "a b", "a23456789012345x", "vif\n"} {
		if validPort(bad) == nil {
			t.Errorf("validPort(%q) accepted", bad)
		}
	}
}

func TestFilterNames(t *testing.T) {
	n := portFilterName(Limit{Rate: 10e6, Burst: 4096}, High, "lan")
	p, ok := parseName(n)
	if !ok || p.limit != (Limit{Rate: 10e6, Burst: 4096}) || p.prio != High || p.network != "lan" {
		t.Errorf("parseName(%q) = %+v, %v", n, p, ok)
	}
	p, ok = parseName(portFilterName(Limit{}, Medium, ""))
	if !ok || p.network != "" || p.limit.Rate != 0 {
		t.Errorf("empty spec round trip: %+v %v", p, ok)
	}
	p, ok = parseName(tagName("vif3.0", Limit{Rate: 5e6}, Low))
	if !ok || p.port != "vif3.0" || p.limit.Rate != 5e6 || p.prio != Low {
		t.Errorf("tag round trip: %+v %v", p, ok)
	}
	for _, bad := range []string{"", "something else", "brouter-shape/1 rate=x", "brouter-shape/2 rate=1"} {
		if _, ok := parseName(bad); ok {
			t.Errorf("parseName(%q) accepted", bad)
		}
	}
}

// The classifier programs, byte for byte (little-endian hosts).
func TestPrograms(t *testing.T) {
	if !nativeLittle() {
		t.Skip("encoding checked on little-endian hosts")
	}
	got := setPriorityProg(0x0001_0005)
	want := []byte{
		0xb4, 0x02, 0, 0, 0x05, 0x00, 0x01, 0x00, // w2 = 0x10005
		0x63, 0x21, 32, 0, 0, 0, 0, 0, // *(u32 *)(r1 + 32) = w2   (skb->priority)
		0xb7, 0x00, 0, 0, 0xff, 0xff, 0xff, 0xff, // r0 = -1       (TC_ACT_UNSPEC)
		0x95, 0, 0, 0, 0, 0, 0, 0, // exit
	}
	if !bytes.Equal(got, want) {
		t.Errorf("setPriorityProg =\n% x\nwant\n% x", got, want)
	}
	if got := noopProg(); !bytes.Equal(got, want[16:]) {
		t.Errorf("noopProg = % x", got)
	}
}
