// Command qemu-ifup (also installed as qemu-ifdown) joins a QEMU guest's tap
// to a brouter network. QEMU runs
//
//	qemu-ifup TAPNAME            (-netdev tap,script=/etc/qemu-ifup,downscript=/etc/qemu-ifdown)
//	qemu-ifup TAPNAME BRIDGE     (Xen's qemu-ifup and the NetBSD convention)
//
// and aborts the guest's start when it exits non-zero, showing its stderr.
// The network is the BRIDGE argument's, else $BROUTER_NETWORK's, else the one
// with a [[network.NAME.port]] matching the tap's name, else the default.
// Called as qemu-ifdown (or with --down) it detaches the tap; QEMU deletes it.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/brouter/brouter/shared/cli"
	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/vnet"
)

// EnvNetwork names the network when QEMU's command line gives no bridge.
const EnvNetwork = "BROUTER_NETWORK"

const usage = `usage: qemu-ifup [--up|--down] TAPNAME [BRIDGE]
       qemu-ifdown TAPNAME [BRIDGE]

QEMU runs it for -netdev tap,ifname=TAPNAME,script=/etc/qemu-ifup,downscript=/etc/qemu-ifdown
(Xen's qemu-ifup and NetBSD pass BRIDGE too). ifup brings the tap up on the
network and attaches it (MTU, shaping, the [[network.NAME.port]] rules that
match it); ifdown undoes that, and QEMU deletes the tap.

The network: BRIDGE's, else $BROUTER_NETWORK, else the network with a
[[network.NAME.port]] whose name matches the tap, else the default network.
Host config: $BROUTER_CONFIG, else /etc/brouter/brouter.toml.
Exit status: 0 ok, 1 failure, 2 usage.
`

// request is one call, as QEMU made it.
type request struct {
	down    bool
	tap     string
	bridge  string // the BRIDGE argument, or ""
	network string // $BROUTER_NETWORK, or ""
}

var errHelp = errors.New("help requested")

func main() {
	os.Exit(run(filepath.Base(os.Args[0]), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	prog := cli.Program{Name: name, Usage: usage}
	req, err := parseArgs(name, args, getenv)
	if errors.Is(err, errHelp) {
		return prog.Help(stdout)
	}
	if err != nil {
		return prog.UsageError(stderr, err)
	}
	if err := handle(req); err != nil {
		return prog.Fail(stderr, cli.ExitFail, fmt.Errorf("%s: %w", req.tap, err))
	}
	return cli.ExitOK
}

// parseArgs reads QEMU's call: the program's name (qemu-ifdown detaches),
// an optional --up or --down, the tap and maybe a bridge, and the environment.
func parseArgs(name string, args []string, getenv func(string) string) (request, error) {
	req := request{down: strings.Contains(name, "ifdown"), network: getenv(EnvNetwork)}
	if cli.WantsHelp(args) {
		return req, errHelp
	}
	if len(args) > 0 && (args[0] == "--down" || args[0] == "--up") {
		req.down, args = args[0] == "--down", args[1:]
	}
	if len(args) < 1 || len(args) > 2 {
		return req, fmt.Errorf("want TAPNAME [BRIDGE], got %d arguments", len(args))
	}
	req.tap = args[0]
	if err := names.Interface(req.tap); err != nil {
		return req, fmt.Errorf("tap %w", err)
	}
	if len(args) == 2 && args[1] != "" {
		req.bridge = args[1]
		if err := names.Interface(req.bridge); err != nil {
			return req, fmt.Errorf("bridge %w", err)
		}
	}
	return req, nil
}

// handle attaches or detaches the tap.
func handle(req request) error {
	cfg, err := config.Load("")
	if err != nil {
		return err
	}
	m := vnet.New(cfg)
	if req.down {
		return m.DetachPort(req.tap)
	}
	n, err := pick(cfg, m, req)
	if err != nil {
		return err
	}
	// The network's [[network.NAME.port]] rules apply in Attach, as for
	// every kind of port: they tell it the guest's MAC and addresses.
	return m.Attach(n, vnet.PortRequest{Name: req.tap, MAC: vnet.HostPortMAC()})
}

// pick chooses the tap's network: BRIDGE argument, $BROUTER_NETWORK, a port
// rule matching the tap, the default network.
func pick(cfg *config.Config, m *vnet.Manager, req request) (*config.Network, error) {
	if req.bridge != "" {
		return m.NetworkByBridge(req.bridge)
	}
	if req.network != "" {
		return cfg.Select(req.network, nil)
	}
	if n := cfg.NetworkForPort(req.tap); n != nil {
		return n, nil
	}
	return cfg.Select("", nil)
}
