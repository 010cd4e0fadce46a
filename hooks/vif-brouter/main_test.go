package main

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		argv           []string
		op, typeIf     string
		path, argBridg string
	}{
		{[]string{"online", "type_if=vif"}, "online", "vif", "backend/vif/1/0", ""},
		{[]string{"offline"}, "offline", "vif", "backend/vif/1/0", ""},
		{[]string{"add", "type_if=tap"}, "add", "tap", "backend/vif/1/0", ""},
		// udev/xend: VAR=VAL before and after the operation.
		{[]string{"bridge=xenbr1", "online", "ip=10.0.0.5"}, "online", "vif", "backend/vif/1/0", "xenbr1"},
	} {
		call, err := parse(c.argv, env("XENBUS_PATH", "backend/vif/1/0/"))
		if err != nil {
			t.Errorf("%q: %v", c.argv, err)
			continue
		}
		if call.op != c.op || call.typeIf != c.typeIf || call.path != c.path || call.args["bridge"] != c.argBridg {
			t.Errorf("%q: op %q type_if %q path %q bridge %q", c.argv, call.op, call.typeIf, call.path, call.args["bridge"])
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct {
		argv []string
		env  func(string) string
		want string
	}{
		{nil, env("XENBUS_PATH", "backend/vif/1/0"), "no operation"},
		{[]string{"frob"}, env("XENBUS_PATH", "backend/vif/1/0"), `unknown operation "frob"`},
		{[]string{"--frob"}, env("XENBUS_PATH", "backend/vif/1/0"), `unknown operation "--frob"`},
		{[]string{"online", "offline"}, env("XENBUS_PATH", "backend/vif/1/0"), "unexpected argument"},
		{[]string{"online", "type_if=pci"}, env("XENBUS_PATH", "backend/vif/1/0"), `type_if="pci"`},
		{[]string{"online"}, env(), "XENBUS_PATH is not set"},
	} {
		if _, err := parse(c.argv, c.env); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.argv, err, c.want)
		}
	}
}

// -h and --help print usage and exit 0, without XENBUS_PATH or xenstore.
func TestHelp(t *testing.T) {
	for _, argv := range [][]string{{"--help"}, {"-h"}, {"online", "--help"}} {
		var out, errb bytes.Buffer
		if code := run(argv, env(), &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "usage: vif-brouter") || errb.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", argv, code, out.String(), errb.String())
		}
	}
	if _, err := parse([]string{"-h"}, env()); !errors.Is(err, errHelp) {
		t.Errorf("parse -h: %v", err)
	}
}

func TestUsageErrorIsOneLine(t *testing.T) {
	for _, argv := range [][]string{nil, {"bogus"}, {"online"}} {
		var out, errb bytes.Buffer
		code := run(argv, env(), &out, &errb)
		if code != 2 || strings.Count(errb.String(), "\n") != 1 || !strings.HasPrefix(errb.String(), "vif-brouter: ") {
			t.Errorf("%q: exit %d, stderr %q", argv, code, errb.String())
		}
	}
}

// A setting comes from the environment, else the arguments, else xenstore;
// only the settable keys can be overridden.
func TestGet(t *testing.T) {
	c, err := parse([]string{"online", "bridge=argbr", "mtu=1400", "frontend=/evil"}, env("XENBUS_PATH", "backend/vif/1/0", "bridge", "envbr"))
	if err != nil {
		t.Fatal(err)
	}
	c.keys = map[string]string{"bridge": "xsbr", "mtu": "9000", "ip": "10.0.0.5", "frontend": "/local/domain/1/device/vif/0"}
	for k, want := range map[string]string{"bridge": "envbr", "mtu": "1400", "ip": "10.0.0.5", "frontend": "/local/domain/1/device/vif/0", "rate": ""} {
		if got := c.get(k); got != want {
			t.Errorf("get(%s) = %q, want %q", k, got, want)
		}
	}
}

func TestDevice(t *testing.T) {
	for _, c := range []struct {
		typeIf, vifname string
		env             func(string) string
		given, want     string
		err             string
	}{
		{"vif", "", env("vif", "vif1.0"), "vif1.0", "vif1.0", ""},
		{"vif", "web0", env("vif", "vif1.0"), "vif1.0", "web0", ""},
		{"tap", "", env("INTERFACE", "vif1.0-emu"), "vif1.0-emu", "vif1.0-emu", ""},
		{"tap", "web0", env("INTERFACE", "vif1.0-emu"), "vif1.0-emu", "web0-emu", ""},
		{"vif", "", env("INTERFACE", "vif1.0-emu"), "", "", "environment variable vif"},
		{"tap", "", env("vif", "vif1.0"), "", "", "environment variable INTERFACE"},
		{"vif", "", env("vif", "-x"), "-x", "-x", `"-x": starts with '-'`},
		{"vif", "a/b", env("vif", "vif1.0"), "vif1.0", "a/b", `"a/b": contains '/'`},
		{"tap", "web0123456789", env("INTERFACE", "vif1.0-emu"), "vif1.0-emu", "web0123456789-emu", "at most 15"},
	} {
		call := &call{typeIf: c.typeIf, env: c.env, keys: map[string]string{"vifname": c.vifname}}
		given, want, err := call.device()
		if given != c.given || want != c.want || (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s vifname=%q: %q %q %v; want %q %q %q", c.typeIf, c.vifname, given, want, err, c.given, c.want, c.err)
		}
	}
}

func TestPortSpec(t *testing.T) {
	c := &call{env: env(), keys: map[string]string{
		"mac": "00:16:3e:00:00:01", "ip": "10.0.0.5/24 fd00::5", "mtu": "1400", "rate": "1250000,1000000",
	}}
	p, err := c.portSpec("vif1.0")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "vif1.0" || p.MAC.String() != "fe:ff:ff:ff:ff:ff" || p.GuestMAC.String() != "00:16:3e:00:00:01" || p.MTU != 1400 || !p.Antispoof {
		t.Errorf("spec %+v", p)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")}; !slices.Equal(p.IPs, want) {
		t.Errorf("IPs %v, want %v", p.IPs, want)
	}
	if p.Shaping == nil || p.Shaping.FromGuest != 10_000_000 || p.Shaping.ToGuest != 0 {
		t.Errorf("shaping %+v, want 10Mbit/s from the guest", p.Shaping)
	}
	// No ip: no antispoof asked for (the network's setting and port rules may still add it).
	c.keys = map[string]string{"mac": "00:16:3e:00:00:01"}
	if p, err := c.portSpec("vif1.0"); err != nil || p.Antispoof || p.Shaping != nil || p.MTU != 0 {
		t.Errorf("without ip: %+v, %v", p, err)
	}
	for k, v := range map[string]string{"mac": "00:16", "ip": "10.0.0.300", "mtu": "67", "rate": "10Mb/s"} {
		c.keys = map[string]string{k: v}
		if _, err := c.portSpec("vif1.0"); err == nil || !strings.Contains(err.Error(), k+" ") {
			t.Errorf("%s=%q: %v, want an error naming %s", k, v, err, k)
		}
	}
}

func TestParseXenRate(t *testing.T) {
	for s, want := range map[string]uint64{"1250000,1000000": 10_000_000, "125000, 50000": 20_000_000, "1,1": 8_000_000} {
		if got, err := parseXenRate(s); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "1", "0,1", "1,0", "x,1", "1,-1", "2000000000000,1"} {
		if _, err := parseXenRate(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

// FuzzParse feeds the hook what libxl, udev or a hostile xenstore writer
// could: any operation and VAR=VAL arguments and any device and vifname.
// Nothing may panic, errors are one line, and what is accepted is safe.
func FuzzParse(f *testing.F) {
	f.Add("online", "type_if=vif", "vif1.0", "", "backend/vif/1/0")
	f.Add("add", "type_if=tap", "vif1.0-emu", "web0", "backend/vif/1/0")
	f.Add("--help", "", "", "", "")
	f.Add("offline", "bridge=-x", "-vif", "../x", "backend/vif/1/0/")
	f.Fuzz(func(t *testing.T, op, arg, dev, vifname, xenbus string) {
		e := env("XENBUS_PATH", xenbus, "vif", dev, "INTERFACE", dev)
		c, err := parse([]string{op, arg}, e)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if c.path == "" || !slices.Contains([]string{"online", "offline", "add", "remove"}, c.op) || c.typeIf != "vif" && c.typeIf != "tap" {
			t.Fatalf("parsed %+v", c)
		}
		c.keys = map[string]string{"vifname": vifname}
		given, want, err := c.device()
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		for _, n := range []string{given, want} {
			if n == "" || len(n) > 15 || n[0] == '-' || strings.ContainsAny(n, "/: \t\n") || n == "." || n == ".." {
				t.Fatalf("device %q -> %q accepted", given, want)
			}
		}
	})
}
