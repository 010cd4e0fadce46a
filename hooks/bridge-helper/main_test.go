package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/cli"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/privs"
)

var testProg = cli.Program{Name: progName, Usage: fmt.Sprintf(usage, hostConfig)}

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want request
	}{
		// QEMU's execv: helper --use-vnet --fd=N --br=BR.
		{[]string{"--use-vnet", "--fd=5", "--br=brlab"}, request{bridge: "brlab", fd: 5, vnetHdr: true}},
		// libvirt: [--use-vnet] --br=BR --fd=N.
		{[]string{"--br=virbr0", "--fd=23"}, request{bridge: "virbr0", fd: 23}},
		// helper="bridge-helper --use-vnet --br=brlab": sh -c adds its own.
		{[]string{"--use-vnet", "--br=brlab", "--use-vnet", "--fd=3"}, request{bridge: "brlab", fd: 3, vnetHdr: true}},
		{[]string{"--br=brlab", "--fd=0", "--config=/etc/x.toml"}, request{bridge: "brlab", fd: 0, config: "/etc/x.toml"}},
		{[]string{"--br=a.b_c-d", "--fd=2147483647"}, request{bridge: "a.b_c-d", fd: 2147483647}},
	} {
		got, err := parseArgs(c.args)
		if err != nil || got != c.want {
			t.Errorf("%q: %+v, %v; want %+v", c.args, got, err, c.want)
		}
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "want --br=BRIDGE and --fd=N"},
		{[]string{"--br=brlab"}, "want --br=BRIDGE and --fd=N"},
		{[]string{"--fd=3"}, "want --br=BRIDGE and --fd=N"},
		{[]string{"--br=brlab", "--fd=3", "--br=other"}, "--br given twice"},
		{[]string{"--br=brlab", "--fd=3", "--fd=4"}, "--fd given twice"},
		{[]string{"--br", "brlab", "--fd=3"}, `unknown argument "--br"`},
		{[]string{"--br=", "--fd=3"}, "--br: bridge interface name \"\": empty"},
		{[]string{"--br=br/0", "--fd=3"}, `contains '/'`},
		{[]string{"--br=-x", "--fd=3"}, `starts with '-'`},
		{[]string{"--br=abcdefghijklmnop", "--fd=3"}, "at most 15"},
		{[]string{"--br=brlab", "--fd=-1"}, `--fd="-1"`},
		{[]string{"--br=brlab", "--fd=+3"}, `--fd="+3"`},
		{[]string{"--br=brlab", "--fd=3 "}, `--fd="3 "`},
		{[]string{"--br=brlab", "--fd=0x3"}, `--fd="0x3"`},
		{[]string{"--br=brlab", "--fd=2147483648"}, `--fd="2147483648"`},
		{[]string{"--br=brlab", "--fd="}, `--fd=""`},
		{[]string{"--br=brlab", "--fd=3", "--use-vnet=1"}, `unknown argument "--use-vnet=1"`},
		{[]string{"--br=brlab", "--fd=3", "--config="}, "--config: empty"},
		{[]string{"--br=brlab", "--fd=3", "brlab"}, `unknown argument "brlab"`},
	} {
		if _, err := parseArgs(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
}

// FuzzParseArgs: any argument list (NUL-separated) gives a usage error or a
// request with a valid bridge name and a descriptor number, never a panic.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"--use-vnet\x00--fd=5\x00--br=brlab",
		"--br=virbr0\x00--fd=23",
		"--br=brlab\x00--fd=3\x00--config=/etc/brouter/brouter.toml",
		"--br=br/0\x00--fd=3",
		"--br=brlab\x00--fd=99999999999",
		"--help",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		req, err := parseArgs(strings.Split(s, "\x00"))
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error on several lines: %q", err)
			}
			return
		}
		if names.Interface(req.bridge) != nil || req.fd < 0 {
			t.Errorf("%q accepted as %+v", s, req)
		}
	})
}

// Root may pick the config; anyone else gets the built-in one, whatever
// --config and the environment say.
func TestConfigPath(t *testing.T) {
	getenv := func(k string) string { return map[string]string{"BROUTER_CONFIG": "/home/u/evil.toml"}[k] }
	user := privs.Caller{UID: 1000, Groups: []uint32{1000}}
	root := privs.Caller{UID: 0, Groups: []uint32{0}}
	for _, c := range []struct {
		caller privs.Caller
		req    request
		want   string
	}{
		{user, request{config: "/home/u/evil.toml"}, hostConfig},
		{user, request{}, hostConfig},
		{root, request{config: "/etc/other.toml"}, "/etc/other.toml"},
		{root, request{}, "/home/u/evil.toml"},
	} {
		if got := configPath(c.req, c.caller, getenv); got != c.want {
			t.Errorf("uid %d, %+v: config %s, want %s", c.caller.UID, c.req, got, c.want)
		}
	}
}

// The tap goes only over a Unix socket.
func TestUnixSocket(t *testing.T) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	if err := unixSocket(sp[1]); err != nil {
		t.Errorf("socketpair end: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	in, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	for fd, want := range map[int]string{int(w.Fd()): "not a socket", in: "not a Unix socket", 987654: "bad file descriptor"} {
		if err := unixSocket(fd); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("fd %d: %v, want %q", fd, err, want)
		}
	}
}

// Bad calls: exit 2, one line on stderr, nothing on stdout, nothing done.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"--br=brlab"}, {"--br=br 0", "--fd=3"}, {"tap0"}} {
		var out, errb bytes.Buffer
		code := run(testProg, privs.Caller{UID: 1000}, args, os.Getenv, &out, &errb)
		if code != 2 || out.Len() != 0 || strings.Count(errb.String(), "\n") != 1 || !strings.HasPrefix(errb.String(), "bridge-helper: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run(testProg, privs.Caller{UID: 1000}, []string{"--help"}, os.Getenv, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "usage: bridge-helper") {
		t.Errorf("--help: exit %d, stdout %q", code, out.String())
	}
}

// A descriptor that is not a Unix socket fails before the config is read.
func TestNotASocket(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fd := fmt.Sprint(w.Fd())
	var out, errb bytes.Buffer
	code := run(testProg, privs.Caller{UID: 1000}, []string{"--br=brlab", "--fd=" + fd}, os.Getenv, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "--fd="+fd+" is not a socket") || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}
