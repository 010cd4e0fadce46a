package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	cases := []struct {
		args                   []string
		op, net, bridge, addr  string
		subnet, uplink, config string
		json                   bool
		antispoof              *bool
	}{
		{args: []string{"start"}, op: "start"},
		// xend: the operation is the first argument without '=', in any position.
		{args: []string{"bridgeip=10.98.98.1/24", "start", "brnet=10.98.98.0/24"}, op: "start", addr: "10.98.98.1/24", subnet: "10.98.98.0/24"},
		{args: []string{"start", `bridgeip="10.98.98.1/24"`}, op: "start", addr: "10.98.98.1/24"},
		{args: []string{"stop", "vifnum=3"}, op: "stop", bridge: "xenbr3"},
		{args: []string{"stop", "vifnum=3", "bridge=br9"}, op: "stop", bridge: "br9"},
		{args: []string{"--json", "status", "net=lab", "netdev=eth1"}, op: "status", net: "lab", uplink: "eth1", json: true},
		{args: []string{"--config", "/x.toml", "restart", "antispoof=yes"}, op: "restart", config: "/x.toml", antispoof: ptrBool(true)},
		{args: []string{"--config=/y.toml", "start", "antispoof=no"}, op: "start", config: "/y.toml", antispoof: ptrBool(false)},
	}
	for _, tc := range cases {
		inv, err := parseArgs(tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		got := []string{inv.op, inv.net, deref(inv.over.Bridge), deref(inv.over.Address), deref(inv.over.Subnet), deref(inv.over.Uplink), inv.configPath}
		want := []string{tc.op, tc.net, tc.bridge, tc.addr, tc.subnet, tc.uplink, tc.config}
		if strings.Join(got, "|") != strings.Join(want, "|") || inv.json != tc.json {
			t.Errorf("%q: got %q json=%v, want %q json=%v", tc.args, got, inv.json, want, tc.json)
		}
		if (tc.antispoof == nil) != (inv.over.Antispoof == nil) || tc.antispoof != nil && *tc.antispoof != *inv.over.Antispoof {
			t.Errorf("%q: antispoof %v, want %v", tc.args, inv.over.Antispoof, tc.antispoof)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"start", "stop"},
		{"start", "colour=blue"},
		{"start", "vifnum=x"},
		{"start", "antispoof=maybe"},
		{"--config"},
		{"--bogus", "start"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
		if lines := strings.Count(strings.TrimSpace(errb.String()), "\n"); lines != 0 || errb.Len() == 0 {
			t.Errorf("%q: want one line on stderr, got %q", args, errb.String())
		}
	}
	if _, err := parseArgs([]string{"--help"}); !errors.Is(err, errHelp) {
		t.Errorf("--help: %v", err)
	}
}

func TestConfigErrorIsOneLine(t *testing.T) {
	var out, errb bytes.Buffer
	t.Setenv("BROUTER_CONFIG", t.TempDir()+"/missing.toml")
	if code := run([]string{"status"}, &out, &errb); code != exitFail {
		t.Fatalf("exit %d, want %d", code, exitFail)
	}
	if s := errb.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "missing.toml") {
		t.Fatalf("stderr %q", s)
	}
}

func ptrBool(b bool) *bool { return &b }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"start", "-h"}, {"--config", "/x", "--help"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || out.String() != usage || errb.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
}

// An interface name that starts with '-' is refused, whichever variable gives it.
func TestDashNames(t *testing.T) {
	conf := t.TempDir() + "/brouter.toml"
	if err := os.WriteFile(conf, []byte("[network.lab]\nbridge = \"brlab\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BROUTER_CONFIG", conf)
	t.Setenv("BROUTER_RUN_DIR", t.TempDir())
	for _, v := range []string{"bridge=-br", "netdev=--help=x"} {
		var out, errb bytes.Buffer
		code := run([]string{"status", v}, &out, &errb)
		if code == 0 || code == exitNotRunning || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), "starts with '-'") {
			t.Errorf("%s: exit %d, stderr %q", v, code, errb.String())
		}
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add("start", "bridgeip=10.0.0.1/24", "--json")
	f.Add("--config", "/x.toml", "stop")
	f.Add("status", "vifnum=9999", `bridge="br0"`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		inv, err := parseArgs([]string{a, b, c})
		if err != nil {
			if !errors.Is(err, errHelp) && strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		switch inv.op {
		case "start", "stop", "restart", "status":
		default:
			t.Fatalf("parsed op %q", inv.op)
		}
	})
}
