package config

import (
	"strings"
	"testing"
)

const (
	testKeyA = "YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	testKeyB = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
)

func TestOverlay(t *testing.T) {
	c, err := Parse([]byte(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
[network.lab.overlay]
vni = 4242
peers = ["198.51.100.2", "::ffff:198.51.100.3"]
local = "198.51.100.1"
[network.sec]
bridge = "brsec"
address = "10.97.0.1/24"
mtu = 1400
[network.sec.overlay]
vni = 7
port = 4790
gateway = "remote"
encrypt = "wireguard"
private_key_file = "/etc/brouter/sec.key"
[[network.sec.overlay.peer]]
address = "2001:db8::2"
public_key = "`+testKeyA+`"
[[network.sec.overlay.peer]]
address = "2001:db8::3"
public_key = "`+testKeyB+`"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	o := c.Networks["lab"].Overlay
	if o == nil || o.VNI != 4242 || o.Port != DefaultOverlayPort || !o.LocalGateway() || o.Encrypted() || o.MTU != 0 {
		t.Fatalf("lab overlay %+v", o)
	}
	if len(o.Peers) != 2 || o.Peers[1].Address.String() != "198.51.100.3" || o.Local.String() != "198.51.100.1" {
		t.Errorf("lab peers %+v local %v", o.Peers, o.Local)
	}
	s := c.Networks["sec"].Overlay
	if s == nil || s.VNI != 7 || s.Port != 4790 || s.VXLANPort() != 4789 || s.LocalGateway() || !s.Encrypted() || s.MTU != 1400 || s.Local.IsValid() {
		t.Fatalf("sec overlay %+v", s)
	}
	if s.PrivateKeyFile != "/etc/brouter/sec.key" || s.Peers[0].PublicKey.String() != testKeyA || s.Peers[1].PublicKey.String() != testKeyB {
		t.Errorf("sec keys %+v", s)
	}
	if c.Networks["sec"].Overlay.Peers[0].PublicKey.IsZero() || !(WGKey{}).IsZero() {
		t.Error("IsZero")
	}
}

// Every bad overlay is one line naming the key.
func TestOverlayErrors(t *testing.T) {
	base := "[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n"
	ov := base + "[network.lab.overlay]\n"
	wg := ov + "encrypt = \"wireguard\"\nvni = 1\nprivate_key_file = \"/k\"\n"
	cases := []struct{ doc, want string }{
		{ov + `peers = ["198.51.100.2"]`, "network.lab.overlay.vni: missing"},
		{ov + "vni = 0\npeers = [\"198.51.100.2\"]", "network.lab.overlay.vni = 0: want 1..16777215"},
		{ov + "vni = 16777216\npeers = [\"198.51.100.2\"]", "vni = 16777216"},
		{ov + "vni = 1", "no peers"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\", \"198.51.100.2\"]", "listed twice"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\", \"::ffff:198.51.100.2\"]", "listed twice"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\", \"2001:db8::2\"]", "different IP families"},
		{ov + "vni = 1\npeers = [\"198.51.100.0/24\"]", "peers = \"198.51.100.0/24\""},
		{ov + "vni = 1\npeers = [\"224.0.0.1\"]", "unicast"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\nlocal = \"198.51.100.2\"", "peer 198.51.100.2 is this host"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\nlocal = \"2001:db8::1\"", "same family"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\nport = 0", "overlay.port = 0"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\ngateway = \"both\"", "overlay.gateway = \"both\""},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\nencrypt = \"ipsec\"", "overlay.encrypt = \"ipsec\""},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\nprivate_key_file = \"/k\"", "only with encrypt"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\nfoo = 1", "unknown key network.lab.overlay.foo"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\n[[network.lab.overlay.peer]]\naddress = \"198.51.100.3\"", "one form or the other"},
		{ov + "vni = 1\n[[network.lab.overlay.peer]]\naddress = \"198.51.100.3\"\npublic_key = \"" + testKeyA + "\"", "public_key of peer 198.51.100.3: only with encrypt"},
		{ov + "vni = 1\n[[network.lab.overlay.peer]]\npublic_key = \"" + testKeyA + "\"", "peer[0].address: missing"},
		{ov + "vni = 1\nencrypt = \"wireguard\"\n[[network.lab.overlay.peer]]\naddress = \"198.51.100.3\"\npublic_key = \"" + testKeyA + "\"", "needs private_key_file"},
		{wg + "peers = [\"198.51.100.2\"]", "needs each peer's public key"},
		{wg + "[[network.lab.overlay.peer]]\naddress = \"198.51.100.3\"", "has no public_key"},
		{wg + "[[network.lab.overlay.peer]]\naddress = \"198.51.100.3\"\npublic_key = \"abc\"", "not a WireGuard key"},
		{wg + "[[network.lab.overlay.peer]]\naddress = \"198.51.100.3\"\npublic_key = \"" + testKeyA + "\"\n[[network.lab.overlay.peer]]\naddress = \"198.51.100.4\"\npublic_key = \"" + testKeyA + "\"", "same public_key"},
		{ov + "vni = 1\nencrypt = \"wireguard\"\nprivate_key_file = \"k\"\n", "absolute path"},
		{base + "mode = \"bridge\"\n[network.lab.overlay]\nvni = 1\npeers = [\"198.51.100.2\"]", "not mode \"bridge\""},
		{base + "[network.lab.dhcp]\n[network.lab.overlay]\nvni = 1\npeers = [\"198.51.100.2\"]\ngateway = \"remote\"", "cannot serve DHCP"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\n[network.b]\nbridge = \"brb\"\naddress = \"10.1.0.1/24\"\n[network.b.overlay]\nvni = 1\npeers = [\"198.51.100.3\"]", "both use vni 1 on port 4789"},
		{ov + "vni = 1\npeers = [\"198.51.100.2\"]\nport = 51820\n[network.b]\nbridge = \"brb\"\naddress = \"10.1.0.1/24\"\n[network.b.overlay]\nvni = 2\nencrypt = \"wireguard\"\nprivate_key_file = \"/k\"\n[[network.b.overlay.peer]]\naddress = \"198.51.100.3\"\npublic_key = \"" + testKeyA + "\"", "WireGuard needs its port alone"},
		{ov + "vni = 2\npeers = [\"198.51.100.2\"]\n[network.b]\nbridge = \"brb\"\naddress = \"10.1.0.1/24\"\n[network.b.overlay]\nvni = 2\nencrypt = \"wireguard\"\nprivate_key_file = \"/k\"\n[[network.b.overlay.peer]]\naddress = \"198.51.100.3\"\npublic_key = \"" + testKeyA + "\"", "both use vni 2 on port 4789"},
		{wg + "port = 4789\n[[network.lab.overlay.peer]]\naddress = \"198.51.100.3\"\npublic_key = \"" + testKeyA + "\"", "port of the VXLAN inside the tunnel"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.doc), "t.toml")
		if err == nil {
			t.Errorf("no error for:\n%s", c.doc)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q, want one line containing %q", err, c.want)
		}
	}
	// Two plain overlays on one port with different VNIs share the kernel's socket.
	if _, err := Parse([]byte(ov+"vni = 1\npeers = [\"198.51.100.2\"]\n[network.b]\nbridge = \"brb\"\naddress = \"10.1.0.1/24\"\n[network.b.overlay]\nvni = 2\npeers = [\"198.51.100.3\"]"), ""); err != nil {
		t.Errorf("two VNIs on one port: %v", err)
	}
}

func TestParseWGKey(t *testing.T) {
	k, err := ParseWGKey(" " + testKeyA + "\n")
	if err != nil || k.String() != testKeyA {
		t.Errorf("ParseWGKey = %v, %v", k, err)
	}
	for _, bad := range []string{"", "abc", testKeyA[:40], testKeyA + "AAAA"} {
		if _, err := ParseWGKey(bad); err == nil {
			t.Errorf("ParseWGKey(%q): no error", bad)
		}
	}
}
