package main

import (
	"bytes"
	"errors"
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
