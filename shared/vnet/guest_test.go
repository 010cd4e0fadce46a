package vnet

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/brouter/brouter/shared/config"
)

func guestTestManager(t *testing.T) *Manager {
	t.Helper()
	cfg, err := config.Parse([]byte(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
address6 = "fd00:98::1/64"
[network.rt]
mode = "route"
address = "10.99.0.1/24"
`), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	return &Manager{Config: cfg}
}

// A network by name or by bridge, an ad-hoc one for a bridge no network
// uses, and the requests that are refused as invalid (code 7 for CNI).
func TestSelectNetwork(t *testing.T) {
	m := guestTestManager(t)
	yes, no := true, false
	for _, tc := range []struct {
		what    string
		r       NetworkRequest
		network string
		adHoc   bool
		invalid bool
	}{
		{"by name", NetworkRequest{Name: "lab"}, "lab", false, false},
		{"by bridge", NetworkRequest{Bridge: "brlab"}, "lab", false, false},
		{"ad hoc", NetworkRequest{Bridge: "cni0"}, "cni0", true, false},
		{"ipMasq agrees", NetworkRequest{Name: "lab", Masquerade: &yes}, "lab", false, false},
		{"ipMasq disagrees", NetworkRequest{Name: "lab", Masquerade: &no}, "", false, true},
		{"mode route", NetworkRequest{Name: "rt"}, "", false, true},
		{"unknown", NetworkRequest{Name: "nope"}, "", false, true},
	} {
		n, adHoc, err := m.SelectNetwork(tc.r)
		switch {
		case tc.invalid && !errors.Is(err, ErrInvalidPort):
			t.Errorf("%s: error %v, want one wrapping ErrInvalidPort", tc.what, err)
		case !tc.invalid && err != nil:
			t.Errorf("%s: %v", tc.what, err)
		case !tc.invalid && (n.Name != tc.network || adHoc != tc.adHoc):
			t.Errorf("%s: network %s ad hoc %v, want %s %v", tc.what, n.Name, adHoc, tc.network, tc.adHoc)
		}
	}
}

// An ad-hoc network with isGateway carries the guests' first gateways of
// each family and masquerades with ipMasq; a configured network refuses a
// gateway that is not its own address.
func TestGuestNetwork(t *testing.T) {
	m := guestTestManager(t)
	yes := true
	r := NetworkRequest{Bridge: "cni0", Gateway: true, Masquerade: &yes}
	n, err := m.AdHocNetwork(r, []netip.Prefix{netip.MustParsePrefix("10.1.0.1/16"), netip.MustParsePrefix("fd01::1/64"), netip.MustParsePrefix("10.2.0.1/24")})
	if err != nil {
		t.Fatal(err)
	}
	if n.Mode != config.ModeNAT || n.Gateway.String() != "10.1.0.1/16" || n.Gateway6.String() != "fd01::1/64" || n.Bridge != "cni0" {
		t.Errorf("ad hoc network: mode %s, gateways %s %s, bridge %s", n.Mode, n.Gateway, n.Gateway6, n.Bridge)
	}
	if _, err := m.AdHocNetwork(r, nil); !errors.Is(err, ErrInvalidPort) {
		t.Errorf("isGateway without a gateway: %v, want an invalid request", err)
	}
	lab, _ := m.Config.Select("lab", nil)
	own := []GuestAddr{{Prefix: netip.MustParsePrefix("10.98.98.5/24"), Gateway: netip.MustParseAddr("10.98.98.1")}}
	if _, err := m.GuestNetwork(lab, NetworkRequest{Name: "lab"}, false, own); err != nil {
		t.Errorf("the network's own gateway: %v", err)
	}
	other := []GuestAddr{{Prefix: netip.MustParsePrefix("10.98.98.5/24"), Gateway: netip.MustParseAddr("10.98.98.254")}}
	if _, err := m.GuestNetwork(lab, NetworkRequest{Name: "lab"}, false, other); !errors.Is(err, ErrInvalidPort) {
		t.Errorf("another gateway in the subnet: %v, want an invalid request", err)
	}
}

// Default routes: one per family, via the address's gateway, else the
// network's; none for a family that has one.
func TestDefaultGateways(t *testing.T) {
	m := guestTestManager(t)
	lab, _ := m.Config.Select("lab", nil)
	addrs := []GuestAddr{
		{Prefix: netip.MustParsePrefix("10.98.98.5/24")},
		{Prefix: netip.MustParsePrefix("10.98.98.6/24"), Gateway: netip.MustParseAddr("10.98.98.9")},
		{Prefix: netip.MustParsePrefix("fd00:98::5/64"), Gateway: netip.MustParseAddr("fd00:98::1")},
		{Prefix: netip.MustParsePrefix("192.0.2.5/24")},
	}
	for _, tc := range []struct {
		has4, has6 bool
		want       string
	}{
		{false, false, "[10.98.98.1 fd00:98::1]"},
		{true, false, "[fd00:98::1]"},
		{true, true, "[]"},
	} {
		if got := DefaultGateways(lab, addrs, tc.has4, tc.has6); fmtAddrs(got) != tc.want {
			t.Errorf("has4 %v has6 %v: %v, want %s", tc.has4, tc.has6, got, tc.want)
		}
	}
}

func fmtAddrs(as []netip.Addr) string {
	s := "["
	for i, a := range as {
		if i > 0 {
			s += " "
		}
		s += a.String()
	}
	return s + "]"
}
