package config

import (
	"strings"
	"testing"
)

// FuzzParse: any TOML document parses to a config or fails with a one-line
// error; it never panics or hangs.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"[network.default]\nbridge = \"xenbr0\"\naddress = \"10.6.7.1/24\"\nmode = \"nat\"\n",
		"[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\naddress6 = \"fd00:98::1/64\"\nfirewall = \"iptables\"\nantispoof = true\n",
		"[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n[network.lab.dhcp]\nrange_start = \"10.98.98.100\"\nrange_end = \"10.98.98.150\"\n",
		"[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n[network.lab.shaping]\nto_guest = \"10mbit\"\ntotal_from_guest = \"1MB/s\"\n[[network.lab.shaping.port]]\nname = \"vif7.*\"\nto_guest = \"1mbit\"\n",
		"[[network.lab.port]]\nname = \"tap-web*\"\nmac = \"00:16:3e:00:00:20\"\nips = [\"10.98.98.20\"]\n",
		"[network.pub]\nmode = \"route\"\naddress = \"192.0.2.1/24\"\n",
		"run_dir = \"/run/x\"\nlock_timeout = \"10s\"\n[network.a]\nbridge = \"-x\"\n",
		"[network.\"a b\"]\n",
		"[network.lab]\nmtu = 99999999999999999999\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "\n") || msg == "" {
				t.Fatalf("error is not one line: %q", msg)
			}
			return
		}
		if c == nil {
			t.Fatal("nil config without an error")
		}
	})
}
