// Command brouter-wg is a userspace WireGuard device for a brouter network
// whose overlay is encrypted on a host whose kernel has no WireGuard: the
// reference implementation (wireguard-go) over a TUN device.
//
//	brouter-wg --device=NAME --socket=PATH --mtu=N
//
// network-virtual start runs it (one per network, recorded by its pid file
// next to the socket), configures it over WireGuard's configuration protocol
// on the socket, and stop ends it. It is a program of its own, not a
// subcommand of network-virtual, so that WireGuard's code lives only in the
// one long-running process that needs it, and ps names what it is.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/brouter/brouter/shared/cli"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/wg"
)

const usage = `usage: brouter-wg --device=NAME --socket=PATH --mtu=N

A userspace WireGuard device (TUN) for an encrypted brouter overlay, started
and stopped by network-virtual; configured over WireGuard's UAPI on PATH.
`

var prog = cli.Program{Name: "brouter-wg", Usage: usage}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var dev, sock string
	mtu := 0
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch {
		case cli.IsHelp(a):
			return prog.Help(os.Stdout)
		case k == "--device":
			dev = v
		case k == "--socket":
			sock = v
		case k == "--mtu":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1280 || n > 65535 {
				return prog.UsageError(os.Stderr, fmt.Errorf("--mtu=%q: want 1280..65535", v))
			}
			mtu = n
		default:
			return prog.UsageError(os.Stderr, fmt.Errorf("unknown argument %q", a))
		}
	}
	if err := names.Interface(dev); err != nil {
		return prog.UsageError(os.Stderr, fmt.Errorf("--device: %w", err))
	}
	if !strings.HasPrefix(sock, "/") || mtu == 0 {
		return prog.UsageError(os.Stderr, fmt.Errorf("--socket=ABSOLUTE-PATH and --mtu=N are required"))
	}
	if err := wg.Serve(dev, sock, mtu); err != nil {
		return prog.Fail(os.Stderr, cli.ExitFail, err)
	}
	return 0
}
