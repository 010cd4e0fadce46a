package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestNoFileGivesBuiltInDefault(t *testing.T) {
	t.Setenv(EnvConfig, "")
	t.Setenv(EnvRunDir, "")
	t.Setenv(EnvStateDir, "")
	c, err := Parse(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.RunDir != DefaultRunDir || c.StateDir != DefaultStateDir || c.LockTimeout != DefaultLockTimeout {
		t.Fatalf("defaults: %+v", c)
	}
	n, err := c.Select("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Bridge != "xenbr0" || n.Gateway.String() != "10.6.7.1/24" || n.Subnet.String() != "10.6.7.0/24" || n.Mode != ModeNAT || n.MTU != 1500 || n.STP || n.ForwardDelay != 0 || n.Firewall != "auto" {
		t.Fatalf("built-in network: %+v", n)
	}
}

func TestLoadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.toml")
	if _, err := Load(missing); err == nil || !strings.Contains(err.Error(), "nope.toml") {
		t.Fatalf("explicit missing file: err=%v, want an error naming it", err)
	}
	t.Setenv(EnvConfig, missing)
	if _, err := Load(""); err == nil {
		t.Fatal("BROUTER_CONFIG naming a missing file must be an error")
	}
}

func TestLoadEnvOverrides(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "b.toml")
	if err := os.WriteFile(p, []byte("run_dir = \"/x/run\"\nlock_timeout = \"2s\"\n[network.a]\naddress = \"10.1.0.1/16\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvConfig, p)
	t.Setenv(EnvRunDir, "/tmp/r")
	t.Setenv(EnvStateDir, "")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != p || c.RunDir != "/tmp/r" || c.LockTimeout != 2*time.Second {
		t.Fatalf("got %+v", c)
	}
	n, err := c.Select("", nil)
	if err != nil || n.Name != "a" || n.Subnet.String() != "10.1.0.0/16" {
		t.Fatalf("only network: %+v %v", n, err)
	}
}

func TestFullNetwork(t *testing.T) {
	doc := `
default_network = "lab"
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
subnet = "10.98.98.0/24"
address6 = "fd00:98::1/64"
mode = "routed"
uplink = "eth1"
mtu = 9000
stp = true
forward_delay = 4
antispoof = true
firewall = "iptables"
[network.lan]
bridge = "br0"
mode = "bridge"
`
	c, err := Parse([]byte(doc), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	n := c.Networks["lab"]
	if n.Bridge != "brlab" || n.Mode != ModeRouted || n.Uplink != "eth1" || n.MTU != 9000 || !n.STP || n.ForwardDelay != 4 || !n.Antispoof || n.Firewall != "iptables" {
		t.Fatalf("lab: %+v", n)
	}
	if got := n.Subnets(); len(got) != 2 || got[0].String() != "10.98.98.0/24" || got[1].String() != "fd00:98::/64" {
		t.Fatalf("subnets %v", got)
	}
	if lan := c.Networks["lan"]; lan.Gateway.IsValid() || lan.Mode != ModeBridge {
		t.Fatalf("bridge mode must have no default address: %+v", lan)
	}
	sel, err := c.Select("", nil)
	if err != nil || sel.Name != "lab" {
		t.Fatalf("default_network: %v %v", sel, err)
	}
	if sel, err := c.Select("", &NetworkSpec{Bridge: ptr("br0")}); err != nil || sel.Name != "lan" {
		t.Fatalf("by bridge: %v %v", sel, err)
	}
	if sel, err := c.Select("lab", &NetworkSpec{Address: ptr("10.99.0.1/16")}); err != nil || sel.Subnet.String() != "10.99.0.0/16" {
		t.Fatalf("override address: %v %v", sel, err)
	}
	if sel, err := c.Select("", &NetworkSpec{Bridge: ptr("xbr7")}); err != nil || sel.Name != "xbr7" || sel.Gateway.String() != DefaultAddress {
		t.Fatalf("ad-hoc bridge: %+v %v", sel, err)
	}
}

func TestSTPDefaultsForwardDelay(t *testing.T) {
	c, err := Parse([]byte("[network.a]\nstp = true\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Networks["a"].ForwardDelay != 15 {
		t.Fatalf("stp on without forward_delay: %d, want 15", c.Networks["a"].ForwardDelay)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"unknown top key", `colour = "blue"`, "unknown key colour"},
		{"unknown network key", "[network.a]\nbrigde = \"x\"", "unknown key network.a.brigde"},
		{"unknown nested table", "[network.a.dhcpp]\nx = 1", "unknown key network.a.dhcpp"},
		{"syntax", "[network.a\n", "line"},
		{"wrong type", "[network.a]\nmtu = \"big\"", "mtu"},
		{"bad mode", "[network.a]\nmode = \"nope\"", `network.a.mode = "nope": want one of nat, routed, isolated, route, bridge`},
		{"bad cidr", "[network.a]\naddress = \"10.0.0.300/24\"", `network.a.address = "10.0.0.300/24"`},
		{"no prefix", "[network.a]\naddress = \"10.0.0.1\"", `network.a.address = "10.0.0.1"`},
		{"v6 as address", "[network.a]\naddress = \"fd00::1/64\"", "IPv4"},
		{"network address", "[network.a]\naddress = \"10.0.0.0/24\"", "network address"},
		{"broadcast address", "[network.a]\naddress = \"10.0.0.255/24\"", "broadcast address"},
		{"host route", "[network.a]\naddress = \"10.0.0.1/32\"", "no room"},
		{"outside subnet", "[network.a]\naddress = \"10.1.1.1/24\"\nsubnet = \"10.2.2.0/24\"", "address is outside subnet 10.2.2.0/24"},
		{"subnet host bits", "[network.a]\naddress = \"10.1.1.1/24\"\nsubnet = \"10.1.1.1/24\"", "host bits"},
		{"bad address6", "[network.a]\naddress6 = \"10.0.0.1/24\"", "network.a.address6"},
		{"long bridge", "[network.a]\nbridge = \"abcdefghijklmnop\"", `network.a.bridge: bridge interface name "abcdefghijklmnop"`},
		{"slash bridge", "[network.a]\nbridge = \"br/0\"", "network.a.bridge"},
		{"space bridge", "[network.a]\nbridge = \"br 0\"", "network.a.bridge"},
		{"dot bridge", "[network.a]\nbridge = \"..\"", "network.a.bridge"},
		{"bad name", "[network.\"a b\"]\n", `network name "a b"`},
		{"long name", "[network.abcdefghijklmnop]\n", "network name"},
		{"reserved name", "[network.ports]\n", "reserved"},
		{"mtu", "[network.a]\nmtu = 10", "network.a.mtu = 10: want 68..65535"},
		{"forward delay", "[network.a]\nforward_delay = 99", "network.a.forward_delay = 99"},
		{"forward delay stp", "[network.a]\nstp = true\nforward_delay = 0", "with stp = true"},
		{"firewall", "[network.a]\nfirewall = \"pf\"", `network.a.firewall = "pf": want one of auto, nftables, iptables`},
		{"uplink", "[network.a]\nuplink = \"eth 0\"", "network.a.uplink"},
		{"uplink is bridge", "[network.a]\nbridge = \"b\"\nuplink = \"b\"", "own bridge"},
		{"dup bridge", "[network.a]\nbridge = \"b\"\n[network.c]\nbridge = \"b\"", "already used by network.a"},
		{"default missing", "default_network = \"x\"\n[network.a]\n", `default_network = "x"`},
		{"lock timeout", `lock_timeout = "1h"`, "lock_timeout"},
		{"relative run dir", `run_dir = "run"`, "absolute"},
		{"bridge mode v6", "[network.a]\nmode = \"bridge\"\naddress6 = \"fd00::1/64\"", "address6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvRunDir, "")
			_, err := Parse([]byte(tc.doc), "t.toml")
			if err == nil {
				t.Fatalf("no error for %q", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Fatalf("error does not name its component: %q", err)
			}
		})
	}
}

func TestSelectErrors(t *testing.T) {
	c, err := Parse([]byte("[network.a]\nbridge = \"ba\"\n[network.b]\nbridge = \"bb\"\naddress = \"10.2.0.1/24\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("", nil); err == nil || !strings.Contains(err.Error(), "a, b") {
		t.Fatalf("ambiguous default: %v", err)
	}
	if _, err := c.Select("zz", nil); err == nil || !strings.Contains(err.Error(), "no [network.zz]") {
		t.Fatalf("unknown network: %v", err)
	}
	if _, err := c.Select("b", &NetworkSpec{Subnet: ptr("10.3.0.0/24")}); err == nil || !strings.Contains(err.Error(), "outside subnet 10.3.0.0/24") {
		t.Fatalf("override outside network: %v", err)
	}
}

// The shipped example must stay valid for the strict parser.
func TestShippedExampleIsValid(t *testing.T) {
	t.Setenv(EnvRunDir, "")
	t.Setenv(EnvStateDir, "")
	c, err := Load("../../conf/brouter.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Networks) == 0 {
		t.Fatal("conf/brouter.toml defines no network")
	}
}

func TestRouteMode(t *testing.T) {
	c, err := Parse([]byte("[network.r]\nmode = \"route\"\naddress = \"10.9.0.1/24\"\n[network.b]\nbridge = \"br1\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Networks["r"]; r.Bridge != "" || r.Mode != ModeRoute {
		t.Fatalf("route network: %+v", r)
	}
	if n := c.NetworkByBridge("r"); n == nil || n.Name != "r" {
		t.Fatalf("NetworkByBridge(r) = %v, want the route network", n)
	}
	if n := c.NetworkByBridge("br1"); n == nil || n.Name != "b" {
		t.Fatalf("NetworkByBridge(br1) = %v", n)
	}
	if n := c.NetworkByBridge("b"); n != nil {
		t.Fatalf("a bridged network's name is not a bridge: %v", n)
	}
	if n, err := c.Select("", &NetworkSpec{Bridge: ptr("r")}); err != nil || n.Name != "r" {
		t.Fatalf("Select(bridge=r) = %v, %v", n, err)
	}
	if _, err := Parse([]byte("[network.r]\nmode = \"route\"\nbridge = \"x\"\n"), "t.toml"); err == nil || !strings.Contains(err.Error(), "has no bridge") {
		t.Fatalf("route with a bridge: %v", err)
	}
}
