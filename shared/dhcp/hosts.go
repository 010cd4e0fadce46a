package dhcp

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/state"
)

// hostFile names a MAC's files in the static lease directories: 02-00-5e-10-00-01.
func hostFile(mac net.HardwareAddr) string {
	return strings.ReplaceAll(strings.ToLower(mac.String()), ":", "-")
}

// AddStaticLease registers a static lease (and, if h.Name is set, its DNS
// name) with the network whose Start used runDir, while dnsmasq runs and
// without restarting it: one file per MAC in dhcp-hostsdir (and hostsdir),
// which dnsmasq watches. Replacing a MAC's earlier lease also sends SIGHUP,
// since dnsmasq only adds what a watched file says. Registering the same lease
// again does nothing. h.IP should be a host address of the network's subnet
// that is neither the gateway nor in the dynamic range of another guest's
// static lease; the caller (vnet) knows the network and checks that.
func AddStaticLease(runDir string, h Host) error {
	if err := validDir("run directory", runDir); err != nil {
		return err
	}
	if err := validMAC(h.MAC); err != nil {
		return fmt.Errorf("dhcp: static lease: %v", err)
	}
	if err := checkLeaseAddrs(h); err != nil {
		return fmt.Errorf("dhcp: static lease for %s: %w", h.MAC, err)
	}
	if h.Name != "" {
		if err := validHostName(h.Name); err != nil {
			return fmt.Errorf("dhcp: static lease for %s: %v", h.MAC, err)
		}
	}
	name := hostFile(h.MAC)
	dhcpLine := strings.TrimPrefix(dhcpHostLine(h), "dhcp-host=") + "\n"
	dnsLine := ""
	if h.Name != "" {
		for _, a := range []netip.Addr{h.IP, h.IP6} {
			if a.IsValid() {
				dnsLine += a.String() + " " + strings.ToLower(h.Name) + "\n"
			}
		}
	}
	changed := false // a file dnsmasq has read already was rewritten or removed
	for _, f := range []struct{ dir, content string }{{DHCPHostDir, dhcpLine}, {DNSHostDir, dnsLine}} {
		dir := filepath.Join(runDir, f.dir)
		path := filepath.Join(dir, name)
		old, err := os.ReadFile(path)
		existed := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("dhcp: static lease for %s: %w", h.MAC, err)
		}
		switch {
		case existed && string(old) == f.content:
			continue
		case f.content == "":
			if existed {
				if err := os.Remove(path); err != nil {
					return fmt.Errorf("dhcp: static lease for %s: %w", h.MAC, err)
				}
				changed = true
			}
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("dhcp: static lease for %s: %w", h.MAC, err)
		}
		if err := writeFile(path, []byte(f.content)); err != nil {
			return fmt.Errorf("dhcp: static lease for %s: %w", h.MAC, err)
		}
		changed = changed || existed
	}
	if changed {
		if _, err := signal(runDir, unix.SIGHUP); err != nil {
			return fmt.Errorf("dhcp: static lease for %s: reload: %w", h.MAC, err)
		}
	}
	return nil
}

// RemoveStaticLease removes a static lease AddStaticLease registered, and
// makes a running dnsmasq forget it (SIGHUP: it re-reads its host files; its
// configuration and leases stay). The guest keeps its address until its
// lease ends. Not registered: success.
func RemoveStaticLease(runDir string, mac net.HardwareAddr) error {
	if err := validDir("run directory", runDir); err != nil {
		return err
	}
	if err := validMAC(mac); err != nil {
		return fmt.Errorf("dhcp: static lease: %v", err)
	}
	removed := false
	for _, dir := range []string{DHCPHostDir, DNSHostDir} {
		err := os.Remove(filepath.Join(runDir, dir, hostFile(mac)))
		switch {
		case err == nil:
			removed = true
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("dhcp: remove static lease for %s: %w", mac, err)
		}
	}
	if removed {
		if _, err := signal(runDir, unix.SIGHUP); err != nil {
			return fmt.Errorf("dhcp: remove static lease for %s: reload: %w", mac, err)
		}
	}
	return nil
}

// StaticLeases lists the static leases AddStaticLease registered under runDir.
func StaticLeases(runDir string) ([]Host, error) {
	if err := validDir("run directory", runDir); err != nil {
		return nil, err
	}
	files, err := state.ListDir(filepath.Join(runDir, DHCPHostDir), state.Regular)
	if err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	var out []Host
	for _, name := range files {
		data, err := os.ReadFile(filepath.Join(runDir, DHCPHostDir, name))
		if err != nil {
			return nil, fmt.Errorf("dhcp: %w", err)
		}
		h, err := parseHostLine(strings.TrimSpace(string(data)))
		if err != nil {
			return nil, fmt.Errorf("dhcp: static lease file %s: %v", filepath.Join(runDir, DHCPHostDir, name), err)
		}
		out = append(out, h)
	}
	return out, nil
}

// parseHostLine parses what dhcpHostLine writes: MAC,IP[,NAME],
// MAC,[IP6][,NAME] or MAC,IP,[IP6][,NAME].
func parseHostLine(l string) (Host, error) {
	f := strings.Split(l, ",")
	if len(f) < 2 || len(f) > 4 {
		return Host{}, fmt.Errorf("want MAC,IP[,[IP6]][,NAME], got %q", l)
	}
	mac, err := net.ParseMAC(f[0])
	if err != nil {
		return Host{}, fmt.Errorf("MAC %q: %v", f[0], err)
	}
	h := Host{MAC: mac}
	rest := f[1:]
	if !strings.HasPrefix(rest[0], "[") {
		if h.IP, err = parseAddr4(rest[0]); err != nil {
			return Host{}, err
		}
		rest = rest[1:]
	}
	if len(rest) > 0 && strings.HasPrefix(rest[0], "[") {
		if h.IP6, err = netip.ParseAddr(strings.Trim(rest[0], "[]")); err != nil || !h.IP6.Is6() {
			return Host{}, fmt.Errorf("IPv6 address %q: want [ADDR]", rest[0])
		}
		rest = rest[1:]
	}
	if len(rest) > 1 || !h.IP.IsValid() && !h.IP6.IsValid() {
		return Host{}, fmt.Errorf("want MAC,IP[,[IP6]][,NAME], got %q", l)
	}
	if len(rest) == 1 {
		h.Name = rest[0]
	}
	return h, nil
}

// checkLeaseAddrs checks a run-time static lease's addresses: an IPv4
// unicast address, an IPv6 one, or both.
func checkLeaseAddrs(h Host) error {
	if !h.IP.IsValid() && !h.IP6.IsValid() {
		return fmt.Errorf("no address")
	}
	if h.IP.IsValid() && (!h.IP.Is4() || h.IP.IsUnspecified() || h.IP.IsMulticast() || h.IP.IsLoopback()) {
		return fmt.Errorf("IP %q: want a unicast IPv4 address", h.IP.String())
	}
	if h.IP6.IsValid() && (!h.IP6.Is6() || h.IP6.Is4In6() || h.IP6.Zone() != "" || !h.IP6.IsGlobalUnicast()) {
		return fmt.Errorf("IPv6 address %q: want a global unicast address", h.IP6.String())
	}
	return nil
}
