package dhcp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Lease is one lease from dnsmasq's lease database, DHCPv4 or DHCPv6.
type Lease struct {
	Expiry time.Time `json:"expiry"` // zero: never expires
	// MAC: a DHCPv6 client's MAC is known only from a DUID that holds it
	// (DUID-LLT, DUID-LL); nil otherwise.
	MAC      net.HardwareAddr `json:"mac"`
	IP       netip.Addr       `json:"ip"`
	Hostname string           `json:"hostname,omitempty"`  // as the client sent it; "" if none
	ClientID string           `json:"client_id,omitempty"` // hex bytes with ':' (DHCPv6: the DUID); "" if none
	IAID     string           `json:"iaid,omitempty"`      // DHCPv6 only: the identity association ("T" first: temporary)
}

// Leases reads the leases of the network whose state directory is stateDir,
// in file order. No leases file yet: none.
func Leases(stateDir string) ([]Lease, error) {
	if err := validDir("state directory", stateDir); err != nil {
		return nil, err
	}
	path := filepath.Join(stateDir, LeaseFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dhcp: leases: %w", err)
	}
	defer f.Close()
	ls, err := parseLeases(f)
	if err != nil {
		return nil, fmt.Errorf("dhcp: leases %s: %w", path, err)
	}
	return ls, nil
}

// parseLeases parses dnsmasq's lease file: one lease a line,
//
//	EXPIRY MAC IP HOSTNAME CLIENTID
//
// with "*" for no hostname or client id and EXPIRY 0 for an infinite lease.
// A DHCPv6 lease has the IAID in MAC's place and the client's DUID last; the
// "duid ..." line (the server's own) is skipped.
func parseLeases(r io.Reader) ([]Lease, error) {
	var out []Lease
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] == "duid" {
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("line %d: want EXPIRY MAC IP HOSTNAME [CLIENTID], got %q", n, sc.Text())
		}
		exp, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || exp < 0 {
			return nil, fmt.Errorf("line %d: expiry %q: want seconds since the epoch", n, f[0])
		}
		ip, err := netip.ParseAddr(f[2])
		if err != nil {
			return nil, fmt.Errorf("line %d: address %q: %v", n, f[2], err)
		}
		l := Lease{IP: ip}
		if ip.Is6() {
			l.IAID = f[1]
			if len(f) > 4 {
				l.MAC = duidMAC(f[4])
			}
		} else if l.MAC, err = net.ParseMAC(f[1]); err != nil {
			return nil, fmt.Errorf("line %d: MAC %q: %v", n, f[1], err)
		}
		if exp != 0 {
			l.Expiry = time.Unix(exp, 0)
		}
		if f[3] != "*" {
			l.Hostname = f[3]
		}
		if len(f) > 4 && f[4] != "*" {
			l.ClientID = f[4]
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// duidMAC is the Ethernet MAC in a DUID-LLT (type 1) or DUID-LL (type 3),
// "00:01:00:01:TT:TT:TT:TT:MM:MM:MM:MM:MM:MM"; nil for other DUIDs.
func duidMAC(duid string) net.HardwareAddr {
	var b []byte
	for _, x := range strings.Split(duid, ":") {
		v, err := strconv.ParseUint(x, 16, 8)
		if err != nil {
			return nil
		}
		b = append(b, byte(v))
	}
	switch {
	case len(b) == 14 && b[0] == 0 && b[1] == 1 && b[2] == 0 && b[3] == 1:
		return net.HardwareAddr(b[8:])
	case len(b) == 10 && b[0] == 0 && b[1] == 3 && b[2] == 0 && b[3] == 1:
		return net.HardwareAddr(b[4:])
	}
	return nil
}

func parseAddr4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("address %q: want an IPv4 address", s)
	}
	return a, nil
}

// MarshalJSON writes the MAC as text (net.HardwareAddr would be base64).
func (l Lease) MarshalJSON() ([]byte, error) {
	type plain Lease
	return json.Marshal(struct {
		plain
		MAC string `json:"mac"`
	}{plain(l), l.MAC.String()})
}
