// Command vif-brouter is Xen's vif hotplug script for guests on a brouter
// network. libxl runs it as
//
//	vif-brouter online|offline type_if=vif      (env vif=vifD.N, XENBUS_PATH=backend/vif/D/N, ...)
//	vif-brouter add|remove type_if=tap          (env INTERFACE=vifD.N-emu, for an HVM guest's emulated NIC)
//
// and the legacy udev/xend path adds VAR=VAL arguments (bridge=xenbr1 ...).
// A setting comes from the environment, else the arguments, else the vif's
// xenstore backend directory. On success an online writes hotplug-status =
// connected; on failure it writes hotplug-error and hotplug-status = error and
// exits non-zero, so the guest fails to start instead of hanging.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/brouter/brouter/shared/cli"
	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/vnet"
	"github.com/brouter/brouter/shared/xenstore"
)

const usage = `usage: vif-brouter online|offline [type_if=vif] [VAR=VAL ...]    (env vif=vifD.N, XENBUS_PATH)
       vif-brouter add|remove type_if=tap [VAR=VAL ...]         (env INTERFACE=vifD.N-emu, XENBUS_PATH)

Xen's vif hotplug script for guests on a brouter network: libxl runs it
(vif.default.script="vif-brouter" in xl.conf, or script=vif-brouter in a vif
spec), as do udev and xend. online/add attaches the vif to the network its
bridge key names; offline/remove undoes that. On failure it writes
hotplug-error and hotplug-status = error, so the guest fails to start.

Settings, from the environment, else VAR=VAL, else the vif's xenstore
backend directory (XENBUS_PATH): bridge, mac, ip, vifname, mtu, rate.
Host config: $BROUTER_CONFIG, else /etc/brouter/brouter.toml.
Exit status: 0 ok, 1 failure, 2 usage.
`

var prog = cli.Program{Name: "vif-brouter", Usage: usage}

var errHelp = errors.New("help requested")

// How long online waits for the device to appear (netback may still be creating it).
const deviceWait = 5 * time.Second

// keys a caller may set in the environment or as VAR=VAL, over xenstore.
var settable = map[string]bool{"bridge": true, "ip": true, "mac": true, "vifname": true, "mtu": true, "rate": true}

type call struct {
	op     string // online, offline, add, remove
	typeIf string // vif or tap
	args   map[string]string
	env    func(string) string
	xs     *xenstore.Client
	path   string // XENBUS_PATH
	keys   map[string]string
}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(argv []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c, err := parse(argv, getenv)
	if errors.Is(err, errHelp) {
		return prog.Help(stdout)
	}
	if err != nil {
		return prog.UsageError(stderr, err)
	}
	if c.xs, err = xenstore.Dial(); err != nil {
		return prog.Fail(stderr, cli.ExitFail, fmt.Errorf("%s: %w", c.op, err))
	}
	defer c.xs.Close()
	switch c.op {
	case "online", "add":
		dev, err := c.online()
		if err != nil {
			err = fmt.Errorf("%s %s: %w", c.op, dev, err)
			c.reportError(cli.OneLine(err))
			return prog.Fail(stderr, cli.ExitFail, err)
		}
	case "offline", "remove":
		if err := c.offline(); err != nil {
			return prog.Fail(stderr, cli.ExitFail, fmt.Errorf("%s: %w", c.op, err))
		}
	}
	return cli.ExitOK
}

// parse reads the call's arguments (the operation, VAR=VAL) and the
// environment it needs before anything else: XENBUS_PATH.
func parse(argv []string, getenv func(string) string) (*call, error) {
	c := &call{args: map[string]string{}, env: getenv, typeIf: "vif"}
	if cli.WantsHelp(argv) {
		return nil, errHelp
	}
	for _, a := range argv {
		if k, v, ok := strings.Cut(a, "="); ok {
			c.args[k] = v
			continue
		}
		if c.op != "" {
			return nil, fmt.Errorf("unexpected argument %q after %s", a, c.op)
		}
		switch a {
		case "online", "offline", "add", "remove":
			c.op = a
		default:
			return nil, fmt.Errorf("unknown operation %q: want online, offline, add or remove", a)
		}
	}
	if c.op == "" {
		return nil, errors.New("no operation: want online, offline, add or remove (Xen's hotplug calling convention)")
	}
	if t, ok := c.args["type_if"]; ok {
		c.typeIf = t
	}
	if c.typeIf != "vif" && c.typeIf != "tap" {
		return nil, fmt.Errorf("type_if=%q: want vif or tap", c.typeIf)
	}
	c.path = strings.TrimSuffix(getenv("XENBUS_PATH"), "/")
	if c.path == "" {
		return nil, errors.New("XENBUS_PATH is not set: vif-brouter is run by libxl or udev for a vif's backend")
	}
	return c, nil
}

// get returns a setting: environment, then arguments, then xenstore.
func (c *call) get(key string) string {
	if settable[key] {
		if v := c.env(key); v != "" {
			return v
		}
		if v, ok := c.args[key]; ok {
			return v
		}
	}
	return c.keys[key]
}

// readBackend reads the backend keys libxl wrote before calling us.
func (c *call) readBackend() error {
	c.keys = map[string]string{}
	for _, k := range []string{"frontend", "mac", "bridge", "ip", "vifname", "mtu", "rate", "type"} {
		v, err := c.xs.Read(c.path + "/" + k)
		if errors.Is(err, xenstore.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		c.keys[k] = strings.TrimSpace(v)
	}
	return nil
}

// device returns the name libxl gave the device and the name it must end up with.
func (c *call) device() (given, want string, err error) {
	if c.typeIf == "tap" {
		given = c.env("INTERFACE")
	} else {
		given = c.env("vif")
	}
	if given == "" {
		v := "vif"
		if c.typeIf == "tap" {
			v = "INTERFACE"
		}
		return "", "", fmt.Errorf("the environment variable %s (the device name) is not set", v)
	}
	want = given
	if vn := c.get("vifname"); vn != "" {
		want = vn
		if c.typeIf == "tap" {
			want = vn + "-emu"
		}
	}
	for _, n := range []string{given, want} {
		if err := names.Interface(n); err != nil {
			return given, want, err
		}
	}
	return given, want, nil
}

func (c *call) online() (string, error) {
	if err := c.readBackend(); err != nil {
		return "", err
	}
	given, dev, err := c.device()
	if err != nil {
		return given, err
	}
	spec, err := c.portSpec(dev)
	if err != nil {
		return dev, err
	}
	cfg, err := config.Load("")
	if err != nil {
		return dev, err
	}
	m := vnet.New(cfg)
	n, err := c.network(cfg, m)
	if err != nil {
		return dev, err
	}
	if err := waitFor(given, dev); err != nil {
		return dev, err
	}
	renamed := false
	if ok, _ := link.Exists(given); ok && given != dev {
		if err := link.Rename(given, dev); err != nil {
			return dev, err
		}
		renamed = true
	}
	if err := m.Attach(n, spec); err != nil {
		if renamed {
			_ = link.Rename(dev, given)
		}
		return dev, err
	}
	l, err := link.Get(dev)
	if err != nil {
		return dev, err
	}
	return dev, c.reportConnected(l.Attrs().MTU)
}

// portSpec turns the vif's settings into the library's port request.
func (c *call) portSpec(dev string) (vnet.PortRequest, error) {
	p := vnet.PortRequest{Name: dev, MAC: vnet.HostPortMAC()}
	if s := c.get("mac"); s != "" {
		mac, err := net.ParseMAC(s)
		if err != nil || len(mac) != 6 {
			return p, fmt.Errorf("mac %q: want a MAC address like 00:16:3e:12:34:56", s)
		}
		p.GuestMAC = mac
	}
	for _, s := range strings.Fields(c.get("ip")) {
		a, err := guestAddr(s)
		if err != nil {
			return p, err
		}
		p.IPs = append(p.IPs, a)
	}
	p.Antispoof = len(p.IPs) > 0
	if s := c.get("mtu"); s != "" {
		mtu, err := strconv.Atoi(s)
		if err != nil || mtu < 68 || mtu > 65535 {
			return p, fmt.Errorf("mtu %q: want 68..65535", s)
		}
		p.MTU = mtu
	}
	if s := c.get("rate"); s != "" {
		bps, err := parseXenRate(s)
		if err != nil {
			return p, err
		}
		// netback's credit limits what the guest sends; so does brouter.
		p.Shaping = &config.PortShaping{FromGuest: bps}
	}
	return p, nil
}

// parseXenRate reads libxl's rate key, "BYTES_PER_INTERVAL,INTERVAL_USECS",
// as bits per second.
func parseXenRate(s string) (uint64, error) {
	b, u, ok := strings.Cut(s, ",")
	bytes, err1 := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
	usecs, err2 := strconv.ParseUint(strings.TrimSpace(u), 10, 32)
	if !ok || err1 != nil || err2 != nil || bytes == 0 || usecs == 0 || bytes > 1<<40 {
		return 0, fmt.Errorf("rate %q: want libxl's BYTES_PER_INTERVAL,INTERVAL_USECS, e.g. 1250000,1000000 for 10Mbit/s", s)
	}
	return bytes * 8 * 1_000_000 / usecs, nil
}

// network finds the network the vif's bridge key names (the default
// network when it names none).
func (c *call) network(cfg *config.Config, m *vnet.Manager) (*config.Network, error) {
	if br := c.get("bridge"); br != "" {
		return m.NetworkByBridge(br)
	}
	return cfg.Select("", nil)
}

// waitFor waits until the device exists under its given or final name.
func waitFor(given, want string) error {
	deadline := time.Now().Add(deviceWait)
	for {
		for _, n := range []string{given, want} {
			if ok, err := link.Exists(n); err != nil {
				return err
			} else if ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("device %s did not appear within %s", given, deviceWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reportConnected tells the frontend its MTU and netback that we are done, together.
func (c *call) reportConnected(mtu int) error {
	return c.xs.Transaction(func(tx *xenstore.Tx) error {
		if fe := c.keys["frontend"]; fe != "" {
			if err := tx.Write(fe+"/mtu", strconv.Itoa(mtu)); err != nil {
				return err
			}
		}
		if err := tx.Rm(c.path + "/hotplug-error"); err != nil {
			return err
		}
		return tx.Write(c.path+"/hotplug-status", "connected")
	})
}

// reportError is what Xen's hotplug scripts do in fatal(): the reason and the
// status, in one transaction.
func (c *call) reportError(msg string) {
	_ = c.xs.Transaction(func(tx *xenstore.Tx) error {
		if err := tx.Write(c.path+"/hotplug-error", msg); err != nil {
			return err
		}
		return tx.Write(c.path+"/hotplug-status", "error")
	})
}

func (c *call) offline() error {
	if err := c.readBackend(); err != nil && !errors.Is(err, xenstore.ErrNotFound) {
		return err
	}
	given, dev, err := c.device()
	if given == "" {
		return err
	}
	if err != nil {
		// An invalid vifname was never applied (online refused it): the
		// device, if anything, still has the name libxl gave it.
		dev = given
		if err := names.Interface(dev); err != nil {
			return err
		}
	}
	cfg, err := config.Load("")
	if err != nil {
		return err
	}
	return vnet.New(cfg).DetachPort(dev)
}

// guestAddr parses one address of ip=. xl accepts an address with a prefix
// length (ip=10.0.0.5/24): the address is the guest's. A prefix itself
// (ip=10.0.0.0/24) names no guest, and whitelisting its first address is
// not what was meant: refused.
func guestAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		a := p.Addr().Unmap()
		if bits := a.BitLen(); p.Bits() < bits-1 && p.Masked().Addr() == p.Addr() {
			return netip.Addr{}, fmt.Errorf("ip %q is a prefix, not the guest's address: give the guest's own addresses (ip=\"10.0.0.5 fd00::5\")", s)
		}
		return a, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("ip %q: not an IPv4 or IPv6 address", s)
	}
	return a.Unmap(), nil
}
