// Command dhcp6c is the test guest's DHCPv6 client (Debian's busybox is
// built without udhcpc6): it asks for one address (IA_NA) and the DNS
// servers on an interface, with the four messages of RFC 8415 (SOLICIT,
// ADVERTISE, REQUEST, REPLY), and prints what it got for the guest's /init:
//
//	lease6 ADDR
//	dns6 ADDR ...
//
// or "lease6 fail" and exit status 1. Usage: dhcp6c IFNAME. It configures
// nothing: /init adds the address.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Message types and options (RFC 8415).
const (
	msgSolicit   = 1
	msgAdvertise = 2
	msgRequest   = 3
	msgReply     = 7

	optClientID = 1
	optServerID = 2
	optIANA     = 3
	optIAAddr   = 5
	optORO      = 6
	optElapsed  = 8
	optStatus   = 13
	optDNS      = 23
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dhcp6c IFNAME")
		os.Exit(2)
	}
	addr, dns, err := run(os.Args[1])
	if err != nil {
		fmt.Println("lease6 fail")
		fmt.Fprintln(os.Stderr, "dhcp6c:", err)
		os.Exit(1)
	}
	fmt.Println("lease6", addr)
	fmt.Println("dns6", strings.Join(dns, " "))
}

func run(ifname string) (netip.Addr, []string, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	conn, err := net.ListenUDP("udp6", &net.UDPAddr{Port: 546})
	if err != nil {
		return netip.Addr{}, nil, err
	}
	defer conn.Close()
	duid := append([]byte{0, 3, 0, 1}, ifi.HardwareAddr...) // DUID-LL, Ethernet
	iaid := []byte{0, 0, 0, 1}
	common := func(xid []byte, typ byte) []byte {
		b := append([]byte{typ}, xid...)
		b = opt(b, optClientID, duid)
		b = opt(b, optElapsed, []byte{0, 0})
		return opt(b, optORO, []byte{0, optDNS})
	}
	server := &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: ifname}

	xid := []byte{0x42, 0x17, 0x01}
	solicit := opt(common(xid, msgSolicit), optIANA, append(iaid, make([]byte, 8)...))
	adv, err := exchange(conn, server, solicit, msgAdvertise)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("solicit: %w", err)
	}
	sid, ok := adv[optServerID]
	if !ok {
		return netip.Addr{}, nil, errors.New("advertise without a server id")
	}
	ia, ok := adv[optIANA]
	if !ok || len(ia) < 12 {
		return netip.Addr{}, nil, fmt.Errorf("advertise without an address (status %q)", status(adv))
	}
	xid = []byte{0x42, 0x17, 0x02}
	request := opt(opt(common(xid, msgRequest), optServerID, sid), optIANA, ia)
	reply, err := exchange(conn, server, request, msgReply)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("request: %w", err)
	}
	ia = reply[optIANA]
	if len(ia) < 12 {
		return netip.Addr{}, nil, fmt.Errorf("reply without an address (status %q)", status(reply))
	}
	ao, ok := options(ia[12:])[optIAAddr]
	if !ok || len(ao) < 24 {
		return netip.Addr{}, nil, fmt.Errorf("reply without an address (status %q)", status(options(ia[12:])))
	}
	var dns []string
	for d := reply[optDNS]; len(d) >= 16; d = d[16:] {
		dns = append(dns, netip.AddrFrom16([16]byte(d[:16])).String())
	}
	return netip.AddrFrom16([16]byte(ao[:16])), dns, nil
}

// exchange sends msg until a reply of type want with its transaction id
// comes (5 tries, 2 s each), and returns the reply's options.
func exchange(conn *net.UDPConn, to *net.UDPAddr, msg []byte, want byte) (map[uint16][]byte, error) {
	buf := make([]byte, 1500)
	for try, busy := 0, 0; try < 5; try++ {
		if _, err := conn.WriteToUDP(msg, to); err != nil {
			// EADDRNOTAVAIL while the link-local address is tentative (DAD).
			if busy++; busy > 50 {
				return nil, err
			}
			try--
			time.Sleep(200 * time.Millisecond)
			continue
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			_ = conn.SetReadDeadline(deadline)
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				break
			}
			if n >= 4 && buf[0] == want && bytes.Equal(buf[1:4], msg[1:4]) {
				return options(buf[4:n]), nil
			}
		}
	}
	return nil, fmt.Errorf("no answer of type %d", want)
}

func opt(b []byte, code uint16, data []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// options parses a list of options (the first of each code).
func options(b []byte) map[uint16][]byte {
	out := map[uint16][]byte{}
	for len(b) >= 4 {
		code, l := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+l {
			break
		}
		if _, seen := out[code]; !seen {
			out[code] = b[4 : 4+l]
		}
		b = b[4+l:]
	}
	return out
}

func status(o map[uint16][]byte) string {
	if s := o[optStatus]; len(s) >= 2 {
		return fmt.Sprintf("%d %s", binary.BigEndian.Uint16(s), s[2:])
	}
	return ""
}
