package dhcp

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
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
	if !h.IP.IsValid() || !h.IP.Is4() || h.IP.IsUnspecified() || h.IP.IsMulticast() || h.IP.IsLoopback() {
		return fmt.Errorf("dhcp: static lease for %s: IP %q: want a unicast IPv4 address", h.MAC, h.IP.String())
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
		dnsLine = h.IP.String() + " " + strings.ToLower(h.Name) + "\n"
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
	ents, err := os.ReadDir(filepath.Join(runDir, DHCPHostDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	var out []Host
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(runDir, DHCPHostDir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("dhcp: %w", err)
		}
		h, err := parseHostLine(strings.TrimSpace(string(data)))
		if err != nil {
			return nil, fmt.Errorf("dhcp: static lease file %s: %v", filepath.Join(runDir, DHCPHostDir, e.Name()), err)
		}
		out = append(out, h)
	}
	return out, nil
}

// parseHostLine parses what dhcpHostLine writes: MAC,IP[,NAME].
func parseHostLine(l string) (Host, error) {
	f := strings.Split(l, ",")
	if len(f) < 2 || len(f) > 3 {
		return Host{}, fmt.Errorf("want MAC,IP[,NAME], got %q", l)
	}
	mac, err := net.ParseMAC(f[0])
	if err != nil {
		return Host{}, fmt.Errorf("MAC %q: %v", f[0], err)
	}
	h := Host{MAC: mac}
	if h.IP, err = parseAddr4(f[1]); err != nil {
		return Host{}, err
	}
	if len(f) == 3 {
		h.Name = f[2]
	}
	return h, nil
}
