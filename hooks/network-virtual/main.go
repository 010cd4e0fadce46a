// Command network-virtual creates and removes a brouter virtual network.
//
// It speaks Xen's network-script convention (xend runs it once at start with
// the operation as the first argument without '=', plus VAR=VAL arguments from
// xend-config.sxp), and is what systemd's brouter-network@NAME unit runs on
// hosts where xl never calls network scripts:
//
//	network-virtual [--config FILE] [--json] start|stop|restart|status [VAR=VAL ...]
//	network-virtual [--config FILE] reconcile|watch [net=NAME]
//	network-virtual [--config FILE] [--json] doctor [net=NAME]
//
// Exit status: 0 success (status: running and intact; doctor: nothing
// found), 1 failure (status: running but with problems, LSB's "dead but
// state exists"; doctor: findings), 2 usage, 3 status: not running.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/brouter/brouter/shared/cli"
	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/vnet"
)

const usage = `usage: network-virtual [--config FILE] [--json] start|stop|restart|status [VAR=VAL ...]
       network-virtual [--config FILE] reconcile [net=NAME]
       network-virtual [--config FILE] watch
       network-virtual [--config FILE] [--json] doctor [net=NAME]

  reconcile         re-apply what the records say a running network and its ports
                    have (rules after a firewall reload, dnsmasq, the bridge) and
                    detach ports whose device is gone; one line per repair; without
                    net=, every running network
  watch             run until stopped, reconciling within a second of any of that
                    (nf_tables and link notifications; iptables-legacy is polled)
  doctor            explain why guests may be cut off (foreign firewall chains that
                    drop, forwarding off, missing rules): one line per finding with
                    what to do; without net=, every running network

Variables (Xen network-script style; they override the host config):
  net=NAME          use [network.NAME] from the host config
  bridge=NAME       bridge name (default xenbr<vifnum>)
  vifnum=N          bridge number for the default name (default 0)
  bridgeip=CIDR     the bridge's address, e.g. 10.98.98.1/24 (default 10.6.7.1/24)
  brnet=CIDR        the network, e.g. 10.98.98.0/24 (must contain bridgeip)
  netdev=IFNAME     uplink: forward and masquerade only through this interface
  antispoof=yes|no  drop forwarded packets whose source is outside the network

Host config: --config FILE, else $BROUTER_CONFIG, else /etc/brouter/brouter.toml (optional).
Exit status: 0 ok (status: running, no problem; doctor: nothing found),
1 failure (status: running with problems: what Start set up is not all
there; doctor: findings), 2 usage, 3 not running.
`

const (
	exitFail       = cli.ExitFail
	exitUsage      = cli.ExitUsage
	exitNotRunning = 3
)

var prog = cli.Program{Name: "network-virtual", Usage: usage}

type invocation struct {
	op         string
	configPath string
	json       bool
	net        string
	over       config.NetworkSpec
	overrides  bool // a VAR=VAL other than net= was given
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	inv, err := parseArgs(args)
	if err != nil {
		if errors.Is(err, errHelp) {
			return prog.Help(stdout)
		}
		return prog.UsageError(stderr, err)
	}
	fail := func(err error) int {
		return prog.Fail(stderr, exitFail, fmt.Errorf("%s: %w", inv.op, err))
	}
	cfg, err := config.Load(inv.configPath)
	if err != nil {
		return fail(err)
	}
	m := vnet.New(cfg)
	m.Note = func(line string) { fmt.Fprintf(stderr, "network-virtual: %s: note: %s\n", inv.op, line) }
	switch inv.op {
	case "watch":
		return watch(inv, stderr, fail)
	case "doctor", "reconcile":
		nets, err := inv.networks(cfg, m)
		if err != nil {
			return fail(err)
		}
		if inv.op == "reconcile" {
			return reconcile(m, nets, stdout, fail)
		}
		return doctor(m, nets, inv.json, stdout, fail)
	}
	n, err := cfg.Select(inv.net, &inv.over)
	if err != nil {
		return fail(err)
	}
	switch inv.op {
	case "start":
		if err := m.Start(n); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "network %s: started on bridge %s (%s)\n", n.Name, n.Bridge, n.Mode)
	case "stop":
		if err := m.Stop(n); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "network %s: stopped\n", n.Name)
	case "restart":
		if err := m.Stop(n); err != nil {
			return fail(err)
		}
		if err := m.Start(n); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "network %s: restarted on bridge %s (%s)\n", n.Name, n.Bridge, n.Mode)
	case "status":
		return status(m, n, inv.json, stdout, fail)
	}
	return 0
}

func status(m *vnet.Manager, n *config.Network, asJSON bool, stdout io.Writer, fail func(error) int) int {
	st, err := m.Status(n)
	if err != nil {
		return fail(err)
	}
	if asJSON {
		printJSON(stdout, st)
	} else {
		printStatus(stdout, st)
	}
	if !st.Running {
		return exitNotRunning
	}
	if len(st.Problems) > 0 {
		return exitFail // LSB: 1, dead (not as set up) but state exists
	}
	return 0
}

// networks are the networks an operation over running networks (reconcile, doctor)
// acts on: the one net= (or another variable) names, else every running
// network of the host config.
func (inv *invocation) networks(cfg *config.Config, m *vnet.Manager) ([]*config.Network, error) {
	if inv.net != "" || inv.overrides {
		n, err := cfg.Select(inv.net, &inv.over)
		if err != nil {
			return nil, err
		}
		return []*config.Network{n}, nil
	}
	names, err := m.Running()
	if err != nil {
		return nil, err
	}
	var out []*config.Network
	for _, name := range names {
		if n, ok := cfg.Networks[name]; ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// reconcile prints one line per repair.
func reconcile(m *vnet.Manager, nets []*config.Network, stdout io.Writer, fail func(error) int) int {
	n := 0
	for _, net := range nets {
		repairs, err := m.Reconcile(net)
		for _, r := range repairs {
			fmt.Fprintf(stdout, "network %s: %s\n", net.Name, r)
		}
		n += len(repairs)
		if err != nil {
			return fail(err)
		}
	}
	if n == 0 {
		fmt.Fprintf(stdout, "nothing to repair (%s)\n", networksCount(len(nets)))
	}
	return 0
}

// watch runs until SIGTERM or SIGINT, logging one line per repair to stderr
// (the journal, under systemd).
func watch(inv *invocation, stderr io.Writer, fail func(error) int) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	load := func() (*config.Config, error) { return config.Load(inv.configPath) }
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	if err := vnet.Watch(ctx, load, logf); err != nil {
		return fail(err)
	}
	return 0
}

// doctor prints one line per finding, each with what to do; exit 0 when
// there is none, 1 otherwise.
func doctor(m *vnet.Manager, nets []*config.Network, asJSON bool, stdout io.Writer, fail func(error) int) int {
	findings := []vnet.Finding{}
	for _, n := range nets {
		f, err := m.Doctor(n)
		if err != nil {
			return fail(err)
		}
		findings = append(findings, f...)
	}
	switch {
	case asJSON:
		printJSON(stdout, findings)
	case len(nets) == 0:
		fmt.Fprintln(stdout, "no network is running")
	case len(findings) == 0:
		fmt.Fprintf(stdout, "nothing wrong found (%s)\n", networksCount(len(nets)))
	}
	if !asJSON {
		for _, f := range findings {
			fmt.Fprintln(stdout, f)
		}
	}
	if len(findings) > 0 {
		return exitFail
	}
	return 0
}

var errHelp = errors.New("help")

const operations = "start, stop, restart, status, reconcile, watch or doctor"

// parseArgs follows xend: the operation is the first argument without '=';
// VAR=VAL arguments may come before or after it.
func parseArgs(args []string) (*invocation, error) {
	inv := &invocation{}
	var vifnum, bridge *string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case cli.IsHelp(a) || a == "help":
			return nil, errHelp
		case a == "--json":
			inv.json = true
		case a == "--config" || a == "-c":
			if i+1 >= len(args) {
				return nil, usageError{"--config needs a file name"}
			}
			i++
			inv.configPath = args[i]
		case strings.HasPrefix(a, "--config="):
			inv.configPath = strings.TrimPrefix(a, "--config=")
		case strings.HasPrefix(a, "-"):
			return nil, usageError{fmt.Sprintf("unknown option %q", a)}
		case strings.Contains(a, "="):
			k, v, _ := strings.Cut(a, "=")
			v = unquote(v)
			inv.overrides = inv.overrides || k != "net"
			switch k {
			case "net":
				inv.net = v
			case "bridge":
				bridge = &v
			case "vifnum":
				if n, err := strconv.Atoi(v); err != nil || n < 0 || n > 9999 {
					return nil, usageError{fmt.Sprintf("vifnum=%q: want a number 0..9999", v)}
				}
				vifnum = &v
			case "bridgeip":
				inv.over.Address = &v
			case "brnet":
				inv.over.Subnet = &v
			case "netdev":
				inv.over.Uplink = &v
			case "antispoof":
				b, ok := map[string]bool{"yes": true, "no": false, "true": true, "false": false, "1": true, "0": false}[v]
				if !ok {
					return nil, usageError{fmt.Sprintf("antispoof=%q: want yes or no", v)}
				}
				inv.over.Antispoof = &b
			default:
				return nil, usageError{fmt.Sprintf("unknown variable %q (known: net, bridge, vifnum, bridgeip, brnet, netdev, antispoof)", k)}
			}
		case inv.op == "":
			switch a {
			case "start", "stop", "restart", "status", "reconcile", "watch", "doctor":
				inv.op = a
			default:
				return nil, usageError{fmt.Sprintf("unknown operation %q: want %s", a, operations)}
			}
		default:
			return nil, usageError{fmt.Sprintf("unexpected argument %q after %s", a, inv.op)}
		}
	}
	if inv.op == "" {
		return nil, usageError{"no operation given: want " + operations}
	}
	if inv.op == "watch" && (inv.net != "" || inv.overrides) {
		return nil, usageError{"watch takes no variables: it watches every running network"}
	}
	if bridge == nil && vifnum != nil {
		b := "xenbr" + *vifnum
		bridge = &b
	}
	inv.over.Bridge = bridge
	return inv, nil
}

// unquote strips one pair of quotes a caller may have passed literally
// (bridgeip="10.0.0.1/24" reaching us without a shell in between).
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
		return v[1 : len(v)-1]
	}
	return v
}
