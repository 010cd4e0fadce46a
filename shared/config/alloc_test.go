package config

import (
	"strings"
	"testing"
)

func TestAllocPools(t *testing.T) {
	for _, c := range []struct {
		doc, want4, want6, err string
	}{
		{doc: `address = "10.98.98.1/24"`, want4: "10.98.98.64-10.98.98.127"},
		{doc: "address = \"10.98.98.1/24\"\naddress6 = \"fd00:98::1/64\"", want4: "10.98.98.64-10.98.98.127", want6: "fd00:98::1:0-fd00:98::1:ffff"},
		{doc: `address = "10.0.0.1/16"`, want4: "10.0.64.0-10.0.127.255"},
		{doc: `address = "10.0.0.1/8"`, want4: "10.1.0.0-10.1.255.255"},
		{doc: `address = "10.98.98.1/30"`, want4: "10.98.98.1-10.98.98.3"},
		{doc: "address = \"10.98.98.1/24\"\n[network.lab.alloc]\nrange_start = \"10.98.98.10\"\nrange_end = \"10.98.98.20\"", want4: "10.98.98.10-10.98.98.20"},
		{doc: "address = \"10.98.98.1/24\"\naddress6 = \"fd00:98::1/64\"\n[network.lab.alloc]\nrange6_start = \"fd00:98::100\"\nrange6_end = \"fd00:98::1ff\"", want4: "10.98.98.64-10.98.98.127", want6: "fd00:98::100-fd00:98::1ff"},
		// The default pool may meet a DHCP range (its addresses there are skipped); a pool asked for may not.
		{doc: "address = \"10.98.98.1/24\"\n[network.lab.dhcp]\nrange_start = \"10.98.98.100\"\nrange_end = \"10.98.98.200\"", want4: "10.98.98.64-10.98.98.127"},
		{doc: "address = \"10.98.98.1/24\"\n[network.lab.dhcp]\nrange_start = \"10.98.98.100\"\nrange_end = \"10.98.98.200\"\n[network.lab.alloc]\nrange_start = \"10.98.98.50\"\nrange_end = \"10.98.98.120\"", err: "overlaps the DHCP range"},
		{doc: "address = \"10.98.98.1/24\"\n[network.lab.alloc]\nrange_start = \"10.98.98.30\"\nrange_end = \"10.98.98.20\"", err: "is after range_end"},
		{doc: "address = \"10.98.98.1/24\"\n[network.lab.alloc]\nrange_start = \"10.98.99.30\"", err: "want a host address of 10.98.98.0/24"},
		{doc: "address = \"10.98.98.1/24\"\n[network.lab.alloc]\nrange6_start = \"fd00::30\"", err: "no subnet of that family"},
	} {
		cfg, err := Parse([]byte("[network.lab]\nbridge = \"brlab\"\n"+c.doc+"\n"), "t.toml")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want an error with %q", c.doc, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.doc, err)
			continue
		}
		a := cfg.Networks["lab"].Alloc
		got4, got6 := "", ""
		if a.Pool4.Start.IsValid() {
			got4 = a.Pool4.String()
		}
		if a.Pool6.Start.IsValid() {
			got6 = a.Pool6.String()
		}
		if got4 != c.want4 || got6 != c.want6 {
			t.Errorf("%q: pools %q %q, want %q %q", c.doc, got4, got6, c.want4, c.want6)
		}
	}
}
