package vnet

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/state"
)

func addrManager(t *testing.T, doc string) (*Manager, *config.Network) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(fmt.Sprintf("run_dir = %q\nstate_dir = %q\n", dir+"/run", dir+"/lib")+doc), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	n, err := cfg.Select("lab", nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Manager{Config: cfg}, n
}

func TestAllocate(t *testing.T) {
	m, n := addrManager(t, `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
address6 = "fd00:98::1/64"
[network.lab.dhcp]
range_start = "10.98.98.100"
range_end = "10.98.98.199"
[[network.lab.dhcp.host]]
mac = "52:54:00:00:00:09"
ip = "10.98.98.64"
`)
	got, err := m.Allocate(n, "ctr1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// From the default pools (a /24's second quarter, a /64's ::1:0/112),
	// the static host skipped; one address per family.
	if want := "[10.98.98.65/24 fd00:98::1:0/64]"; fmt.Sprint(got) != want {
		t.Errorf("first allocation %v, want %s", got, want)
	}
	again, err := m.Allocate(n, "ctr1", nil)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(got) {
		t.Errorf("allocating again for the same owner: %v, %v; want %v", again, err, got)
	}
	second, _ := m.Allocate(n, "ctr2", nil)
	if fmt.Sprint(second) != "[10.98.98.66/24 fd00:98::1:1/64]" {
		t.Errorf("second owner got %v", second)
	}
	// Addresses an operator gives VMs by hand (a vif's ip=) lie outside
	// the pool: the containers never took them.
	if err := m.claimAddrs(n, "vif1.0", []netip.Addr{netip.MustParseAddr("10.98.98.3"), netip.MustParseAddr("fd00:98::3")}); err != nil {
		t.Errorf("a VM's static address after allocations: %v", err)
	}
	// Specific addresses: free, taken, reserved.
	if p, err := m.Allocate(n, "ctr3", []netip.Addr{netip.MustParseAddr("10.98.98.50")}); err != nil || fmt.Sprint(p) != "[10.98.98.50/24]" {
		t.Errorf("asking for 10.98.98.50: %v, %v", p, err)
	}
	for addr, why := range map[string]string{
		"10.98.98.50":  "is taken (by ctr3)",
		"10.98.98.1":   "the gateway",
		"10.98.98.150": "DHCP range",
		"10.98.98.255": "broadcast",
		"10.98.99.5":   "not in the network",
	} {
		if _, err := m.Allocate(n, "ctr4", []netip.Addr{netip.MustParseAddr(addr)}); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("asking for %s: %v, want an error saying %q", addr, err, why)
		}
	}
	if owners, _ := m.Owners("lab"); fmt.Sprint(owners) != "[ctr1 ctr2 ctr3 vif1.0]" {
		t.Errorf("owners %v (a refused request must leave none)", owners)
	}
	if err := m.Release("lab", "ctr1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Release("lab", "ctr1"); err != nil {
		t.Errorf("releasing twice: %v", err)
	}
	if p, err := m.Allocate(n, "ctr5", []netip.Addr{netip.MustParseAddr("10.98.98.65")}); err != nil {
		t.Errorf("a released address is free again: %v, %v", p, err)
	}
}

func TestAllocateExhaustionAndConcurrency(t *testing.T) {
	m, n := addrManager(t, `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/27"
[network.lab.alloc]
range_start = "10.98.98.1"
range_end = "10.98.98.30"
`)
	// A pool of 10.98.98.0/27's 30 hosts minus the gateway = 29 addresses.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[netip.Addr]string{}
		errs int
	)
	for i := range 32 {
		wg.Go(func() {
			owner := fmt.Sprintf("c%d", i)
			p, err := m.Allocate(n, owner, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				if !strings.Contains(err.Error(), "no free address") {
					t.Errorf("%s: %v", owner, err)
				}
				return
			}
			if other, dup := seen[p[0].Addr()]; dup {
				t.Errorf("%v given to %s and %s", p[0], owner, other)
			}
			seen[p[0].Addr()] = owner
		})
	}
	wg.Wait()
	if len(seen) != 29 || errs != 3 {
		t.Errorf("%d addresses handed out, %d refused; want 29 and 3", len(seen), errs)
	}
}

// A guest's own addresses (a Xen vif's ip=) are claimed by its port: the
// allocator skips them, another port cannot claim them, and they come back
// when the port goes.
func TestClaimAddrs(t *testing.T) {
	m, n := addrManager(t, `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
`)
	two, three := netip.MustParseAddr("10.98.98.64"), netip.MustParseAddr("10.98.98.65")
	if err := m.claimAddrs(n, "vif1.0", []netip.Addr{two, netip.MustParseAddr("192.0.2.9")}); err != nil {
		t.Fatal(err)
	}
	if p, _ := m.Allocate(n, "brvc1", nil); fmt.Sprint(p) != "[10.98.98.65/24]" {
		t.Errorf("allocation next to a claimed address: %v", p)
	}
	if err := m.claimAddrs(n, "vif2.0", []netip.Addr{three}); err == nil || !strings.Contains(err.Error(), "in use by port brvc1") {
		t.Errorf("claiming a container's address: %v", err)
	}
	// Claiming again with another address gives the old one back.
	four := netip.MustParseAddr("10.98.98.66")
	if err := m.claimAddrs(n, "vif1.0", []netip.Addr{four}); err != nil {
		t.Fatal(err)
	}
	if p, _ := m.Allocate(n, "brvc2", []netip.Addr{two}); fmt.Sprint(p) != "[10.98.98.64/24]" {
		t.Errorf("an address the vif gave back: %v", p)
	}
	if err := m.Release("lab", "vif1.0"); err != nil {
		t.Fatal(err)
	}
	if p, err := m.Allocate(n, "brvc3", []netip.Addr{four}); err != nil || fmt.Sprint(p) != "[10.98.98.66/24]" {
		t.Errorf("an address of a released port: %v, %v", p, err)
	}
}

// Status names guest addresses given by hand inside the allocator's pool.
func TestPoolWarnings(t *testing.T) {
	m, n := addrManager(t, `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
[[network.lab.port]]
name = "tap-a*"
mac = "00:16:3e:00:00:70"
ips = ["10.98.98.70"]
[[network.lab.port]]
name = "tap-b*"
mac = "00:16:3e:00:00:07"
ips = ["10.98.98.7"]
`)
	m.Records = state.New(t.TempDir())
	pr := portRecord{Network: "lab", Port: "vif3.0", Guard: &guardRecord{IPs: []netip.Addr{netip.MustParseAddr("10.98.98.100"), netip.MustParseAddr("10.98.98.5")}}}
	owned := portRecord{Network: "lab", Port: "brv1", Owned: true, Guard: &guardRecord{IPs: []netip.Addr{netip.MustParseAddr("10.98.98.64")}}}
	for _, r := range []portRecord{pr, owned} {
		if err := m.Records.Write(portRecordName("lab", r.Port), &r); err != nil {
			t.Fatal(err)
		}
	}
	w := strings.Join(m.poolWarnings(n), "\n")
	for _, want := range []string{`port rule "tap-a*": address 10.98.98.70`, "port vif3.0: address 10.98.98.100"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q: missing %q", w, want)
		}
	}
	for _, not := range []string{"10.98.98.7 ", "10.98.98.5 ", "brv1"} {
		if strings.Contains(w, not) {
			t.Errorf("warnings %q: %q is outside the pool or allocated, want no warning", w, not)
		}
	}
}
