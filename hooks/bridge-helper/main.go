// Command bridge-helper is a QEMU bridge helper: it lets unprivileged users
// put their guests on a brouter network. QEMU runs it for
// -netdev bridge,br=BRIDGE,helper=/usr/local/lib/brouter/bridge-helper (and
// libvirt in session mode, for <interface type='bridge'>) as
//
//	bridge-helper [--use-vnet] --br=BRIDGE --fd=N
//
// It creates a tap named after the caller's uid (tap1000.0), attaches it to
// the network whose bridge is BRIDGE through the same code as every other
// port (shaping, port rules, antispoof, the firewall), and sends the tap's
// descriptor back over the Unix socket N (SCM_RIGHTS). The network's
// allow_users and allow_groups say who may; root always may.
//
// It is installed setuid root and trusts nothing its caller controls: unless
// the real uid is 0 it empties the environment (BROUTER_CONFIG,
// BROUTER_RUN_DIR, ... are ignored), ignores --config, resets the umask and
// keeps only CAP_NET_ADMIN, CAP_NET_RAW, CAP_KILL and CAP_BPF (see
// shared/privs). The
// host config is hostConfig, fixed at build time.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/cli"
	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/privs"
	"github.com/brouter/brouter/shared/vnet"
)

// hostConfig is the host config an unprivileged caller's request is
// checked against. Packagers (and the end-to-end tests) may set it at build
// time: go build -ldflags "-X main.hostConfig=/etc/brouter/brouter.toml".
var hostConfig = config.DefaultPath

const usage = `usage: bridge-helper [--use-vnet] --br=BRIDGE --fd=N

QEMU runs it for -netdev bridge,br=BRIDGE,helper=PATH (libvirt: <interface
type='bridge'> in session mode). It creates a tap named tapUID.N, attaches it
to the brouter network whose bridge is BRIDGE (MTU, shaping, port rules,
antispoof, firewall) and sends the tap's descriptor over the Unix socket N.
The tap goes when QEMU exits; network-virtual reconcile removes what is left.

Who may: root, and the users and groups in the network's allow_users and
allow_groups. Installed setuid root; unless run by root it ignores the
environment and --config FILE, and reads only the host config ` + "%s" + `.
Exit status: 0 ok, 1 failure, 2 usage.
`

const progName = "bridge-helper"

// Capabilities kept: links, firewall and tc (NET_ADMIN), iptables-legacy's
// raw socket (NET_RAW), a SIGHUP to the network's dnsmasq, which runs as its
// own user (KILL), the shaper's eBPF classifier (BPF; Linux 5.8 and later).
// nft and iptables get the first two.
var (
	keepCaps    = []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW, unix.CAP_KILL, unix.CAP_BPF}
	inheritCaps = []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW}
)

// request is one call, as QEMU made it.
type request struct {
	bridge  string
	fd      int
	vnetHdr bool
	config  string // --config: honoured for root only
}

var errHelp = errors.New("help requested")

func main() {
	prog := cli.Program{Name: progName, Usage: fmt.Sprintf(usage, hostConfig)}
	if cli.WantsHelp(os.Args[1:]) { // needs no privilege, whoever installed it how
		os.Exit(prog.Help(os.Stdout))
	}
	caller, err := privs.Real()
	if err == nil && caller.UID != 0 {
		privs.ResetInherited()
		if !privs.Elevated() {
			err = fmt.Errorf("not installed setuid root (it keeps root's records under the run directory; file capabilities alone cannot): as root, chown root %s && chmod 4755 %s, or make install", os.Args[0], os.Args[0])
		} else {
			err = privs.Drop(keepCaps, inheritCaps)
		}
	}
	if err != nil {
		os.Exit(prog.Fail(os.Stderr, cli.ExitFail, err))
	}
	os.Exit(run(prog, caller, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(prog cli.Program, caller privs.Caller, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	req, err := parseArgs(args)
	if errors.Is(err, errHelp) {
		return prog.Help(stdout)
	}
	if err != nil {
		return prog.UsageError(stderr, err)
	}
	if err := handle(req, caller, configPath(req, caller, getenv)); err != nil {
		return prog.Fail(stderr, cli.ExitFail, fmt.Errorf("%s: %w", req.bridge, err))
	}
	return cli.ExitOK
}

// parseArgs reads QEMU's (and libvirt's) call: --use-vnet, --br=BRIDGE and
// --fd=N in any order, as qemu-bridge-helper takes them, and --config=FILE.
// Anything else, a repeated --br or --fd, or a missing one is a usage error.
func parseArgs(args []string) (request, error) {
	req := request{fd: -1}
	if cli.WantsHelp(args) {
		return req, errHelp
	}
	seen := map[string]bool{}
	for _, a := range args {
		opt, val, hasVal := strings.Cut(a, "=")
		if opt == "--use-vnet" && !hasVal {
			req.vnetHdr = true // QEMU passes it again when the helper= string has it
			continue
		}
		if !hasVal || seen[opt] {
			if seen[opt] {
				return req, fmt.Errorf("%s given twice", opt)
			}
			return req, fmt.Errorf("unknown argument %q: want [--use-vnet] --br=BRIDGE --fd=N", a)
		}
		seen[opt] = true
		switch opt {
		case "--br":
			if err := names.Interface(val); err != nil {
				return req, fmt.Errorf("--br: bridge %w", err)
			}
			req.bridge = val
		case "--fd":
			fd, err := parseFD(val)
			if err != nil {
				return req, err
			}
			req.fd = fd
		case "--config":
			if val == "" {
				return req, errors.New("--config: empty file name")
			}
			req.config = val
		default:
			return req, fmt.Errorf("unknown argument %q: want [--use-vnet] --br=BRIDGE --fd=N", a)
		}
	}
	if req.bridge == "" || req.fd < 0 {
		return req, errors.New("want --br=BRIDGE and --fd=N")
	}
	return req, nil
}

// parseFD takes a descriptor number as QEMU writes it: decimal digits only.
func parseFD(s string) (int, error) {
	if s == "" || len(s) > 10 || strings.Trim(s, "0123456789") != "" {
		return -1, fmt.Errorf("--fd=%q: want a file descriptor number", s)
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return -1, fmt.Errorf("--fd=%q: want a file descriptor number", s)
	}
	return int(n), nil
}

// configPath is the host config: root may choose it (--config, else
// $BROUTER_CONFIG); anyone else gets hostConfig.
func configPath(req request, caller privs.Caller, getenv func(string) string) string {
	if caller.UID == 0 {
		if req.config != "" {
			return req.config
		}
		if p := getenv(config.EnvConfig); p != "" {
			return p
		}
	}
	return hostConfig
}

// handle checks the socket, then creates, attaches and hands over the tap.
func handle(req request, caller privs.Caller, cfgPath string) error {
	if err := unixSocket(req.fd); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	m := vnet.New(cfg)
	n, err := m.HelperNetwork(req.bridge)
	if err != nil {
		return err
	}
	tap, name, err := m.AttachTap(n, vnet.Caller{UID: caller.UID, Groups: caller.Groups}, req.vnetHdr)
	if err != nil {
		return err
	}
	if err := unix.Sendmsg(req.fd, []byte{0}, unix.UnixRights(tap), nil, 0); err != nil {
		err = fmt.Errorf("send tap %s over --fd=%d: %w", name, req.fd, err)
		return errors.Join(err, m.DetachTap(n, tap, name))
	}
	unix.Close(tap) // QEMU holds it now
	return nil
}

// unixSocket checks that fd is an open Unix socket, the only thing the tap
// may be sent over.
func unixSocket(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("--fd=%d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("--fd=%d is not a socket", fd)
	}
	if d, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || d != unix.AF_UNIX {
		return fmt.Errorf("--fd=%d is not a Unix socket", fd)
	}
	return nil
}
