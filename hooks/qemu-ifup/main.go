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
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/vnet"
)

// EnvNetwork names the network when QEMU's command line gives no bridge.
const EnvNetwork = "BROUTER_NETWORK"

// tapMAC can never become the bridge's MAC (a bridge takes its lowest port MAC).
var tapMAC = net.HardwareAddr{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff}

func main() {
	os.Exit(run(filepath.Base(os.Args[0]), os.Args[1:], os.Getenv, os.Stderr))
}

func run(name string, args []string, getenv func(string) string, stderr io.Writer) int {
	down := strings.Contains(name, "ifdown")
	if len(args) > 0 && (args[0] == "--down" || args[0] == "--up") {
		down, args = args[0] == "--down", args[1:]
	}
	if len(args) < 1 || len(args) > 2 {
		fmt.Fprintf(stderr, "usage: %s TAPNAME [BRIDGE] (QEMU runs it for -netdev tap,script=...)\n", name)
		return 2
	}
	tap := args[0]
	if err := names.Interface(tap); err != nil {
		fmt.Fprintf(stderr, "%s: tap %v\n", name, err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %s: %s\n", name, tap, strings.Join(strings.Fields(err.Error()), " "))
		return 1
	}
	cfg, err := config.Load("")
	if err != nil {
		return fail(err)
	}
	m := vnet.New(cfg)
	if down {
		if err := m.DetachPort(tap); err != nil {
			return fail(err)
		}
		return 0
	}
	n, err := pick(cfg, m, tap, args[1:], getenv)
	if err != nil {
		return fail(err)
	}
	spec := vnet.PortSpec{Name: tap, MAC: tapMAC}
	if p := n.PortFor(tap); p != nil {
		spec.GuestMAC, spec.IPs, spec.Antispoof = p.MAC, p.IPs, p.Antispoof
	}
	if err := m.Attach(n, spec); err != nil {
		return fail(err)
	}
	return 0
}

// pick chooses the tap's network: BRIDGE argument, $BROUTER_NETWORK, a port
// rule matching the tap, the default network.
func pick(cfg *config.Config, m *vnet.Manager, tap string, bridge []string, getenv func(string) string) (*config.Network, error) {
	if len(bridge) == 1 && bridge[0] != "" {
		return m.NetworkByBridge(bridge[0])
	}
	if name := getenv(EnvNetwork); name != "" {
		return cfg.Select(name, nil)
	}
	if n := cfg.NetworkForPort(tap); n != nil {
		return n, nil
	}
	return cfg.Select("", nil)
}
