package main

import (
	"bytes"
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

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		env  func(string) string
		want request
	}{
		{"qemu-ifup", []string{"tap0"}, env(), request{tap: "tap0"}},
		{"qemu-ifup", []string{"tap0", "xenbr0"}, env(), request{tap: "tap0", bridge: "xenbr0"}},
		{"qemu-ifup", []string{"tap0", ""}, env(), request{tap: "tap0"}},
		{"qemu-ifup", []string{"tap0"}, env(EnvNetwork, "lab"), request{tap: "tap0", network: "lab"}},
		{"qemu-ifdown", []string{"tap0"}, env(), request{down: true, tap: "tap0"}},
		{"qemu-ifup", []string{"--down", "tap0"}, env(), request{down: true, tap: "tap0"}},
		{"qemu-ifdown", []string{"--up", "tap0", "br1"}, env(), request{tap: "tap0", bridge: "br1"}},
		{"ifup-custom", []string{"vif1.0-emu"}, env(), request{tap: "vif1.0-emu"}},
	} {
		got, err := parseArgs(c.name, c.args, c.env)
		if err != nil || got != c.want {
			t.Errorf("%s %q: %+v, %v; want %+v", c.name, c.args, got, err, c.want)
		}
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "want TAPNAME [BRIDGE], got 0 arguments"},
		{[]string{"--down"}, "got 0 arguments"},
		{[]string{"tap0", "br0", "x"}, "got 3 arguments"},
		{[]string{"tap/3"}, `tap interface name "tap/3": contains '/'`},
		{[]string{"-x"}, `tap interface name "-x": starts with '-'`},
		{[]string{"--up", "--down", "tap0"}, `tap interface name "--down": starts with '-'`},
		{[]string{"abcdefghijklmnop"}, "at most 15"},
		{[]string{"tap0", "-br"}, `bridge interface name "-br": starts with '-'`},
	} {
		if _, err := parseArgs("qemu-ifup", c.args, env()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
}

// -h and --help print usage on stdout and exit 0, whatever else is there,
// and never reach the host config.
func TestHelp(t *testing.T) {
	t.Setenv("BROUTER_CONFIG", "/nonexistent/brouter.toml")
	for _, args := range [][]string{{"--help"}, {"-h"}, {"tap0", "--help"}, {"--down", "-h"}} {
		for _, name := range []string{"qemu-ifup", "qemu-ifdown"} {
			var out, errb bytes.Buffer
			if code := run(name, args, env(), &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "usage: qemu-ifup") || errb.Len() != 0 {
				t.Errorf("%s %q: exit %d, stdout %q, stderr %q", name, args, code, out.String(), errb.String())
			}
		}
	}
}

// Bad calls: exit 2, one line on stderr, nothing on stdout.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"-x"}, {"tap 0"}, {"a", "b", "c"}} {
		var out, errb bytes.Buffer
		code := run("qemu-ifup", args, env(), &out, &errb)
		if code != 2 || out.Len() != 0 || strings.Count(errb.String(), "\n") != 1 || !strings.HasPrefix(errb.String(), "qemu-ifup: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
}

// A failure after parsing (here: the host config) is exit 1 and one line naming the tap.
func TestFailureIsOneLine(t *testing.T) {
	t.Setenv("BROUTER_CONFIG", t.TempDir()+"/missing.toml")
	var out, errb bytes.Buffer
	if code := run("qemu-ifup", []string{"tap0"}, env(), &out, &errb); code != 1 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if s := errb.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "qemu-ifup: tap0: ") || !strings.Contains(s, "missing.toml") {
		t.Errorf("stderr %q", s)
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add("qemu-ifup", "tap0", "", "")
	f.Add("qemu-ifdown", "--down", "tap0", "br0")
	f.Add("qemu-ifup", "-h", "", "lab")
	f.Add("qemu-ifup", "tap/0", "-x", "")
	f.Fuzz(func(t *testing.T, name, a0, a1, network string) {
		var args []string
		for _, a := range []string{a0, a1} {
			if a != "" {
				args = append(args, a)
			}
		}
		req, err := parseArgs(name, args, env(EnvNetwork, network))
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("%q: error on more than one line: %q", args, err)
			}
			return
		}
		// What parses is safe to hand on: a tap and bridge that are interface
		// names, and never an option.
		for _, s := range []string{req.tap, req.bridge} {
			if strings.HasPrefix(s, "-") || strings.ContainsAny(s, "/ \t\n:") || len(s) > 15 {
				t.Fatalf("%q parsed to %+v", args, req)
			}
		}
		if req.tap == "" {
			t.Fatalf("%q parsed without a tap: %+v", args, req)
		}
	})
}
