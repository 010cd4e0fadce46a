package e2e

import (
	endian "encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// IPv6 frames crafted as a hostile guest would: router advertisements,
// neighbour advertisements, DHCP server replies (see rawframe_test.go).

const ethIPv6 = 0x86dd

// ipv6 is an IPv6 packet (hop limit 255, as neighbour discovery requires)
// around an L4 segment whose checksum field (at csumAt) is filled in.
func ipv6(src, dst netip.Addr, next byte, l4 []byte, csumAt int) []byte {
	s, d := src.As16(), dst.As16()
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, next)
	var sum uint32
	for i := 0; i+1 < len(pseudo); i += 2 {
		sum += uint32(endian.BigEndian.Uint16(pseudo[i:]))
	}
	endian.BigEndian.PutUint16(l4[csumAt:], checksum(l4, sum))
	h := make([]byte, 40)
	h[0] = 0x60
	endian.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6], h[7] = next, 255
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return append(h, l4...)
}

func icmp6(src, dst netip.Addr, typ byte, body []byte) []byte {
	return ipv6(src, dst, unix.IPPROTO_ICMPV6, append([]byte{typ, 0, 0, 0}, body...), 2)
}

func udp6(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	l4 := make([]byte, 8, 8+len(payload))
	endian.BigEndian.PutUint16(l4[0:], sport)
	endian.BigEndian.PutUint16(l4[2:], dport)
	endian.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
	return ipv6(src, dst, unix.IPPROTO_UDP, append(l4, payload...), 6)
}

// routerAdvert is an RA body announcing prefix/64 (on-link, autonomous)
// with a router lifetime of 1800 s, from mac.
func routerAdvert(prefix netip.Addr, mac net.HardwareAddr) []byte {
	b := []byte{64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	pi := []byte{3, 4, 64, 0xc0, 0, 1, 0x51, 0x80, 0, 0, 0x38, 0x40, 0, 0, 0, 0}
	p16 := prefix.As16()
	b = append(append(b, pi...), p16[:]...)
	return append(append(b, 1, 1), mac...)
}

// neighborAdvert is an unsolicited NA body (override) for target, from mac.
func neighborAdvert(target netip.Addr, mac net.HardwareAddr) []byte {
	t16 := target.As16()
	b := append([]byte{0x20, 0, 0, 0}, t16[:]...)
	return append(append(b, 2, 1), mac...)
}

// multicastMAC is the Ethernet address of an IPv6 multicast group.
func multicastMAC(a netip.Addr) net.HardwareAddr {
	b := a.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// linkLocal is the EUI-64 link-local address of mac, as Linux makes it.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	b := [16]byte{0xfe, 0x80}
	copy(b[8:], []byte{mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return netip.AddrFrom16(b)
}

// v6 is what a capture saw of an IPv6 frame (ok false for anything else).
type v6 struct {
	ok           bool
	src, dst     netip.Addr
	next         byte
	icmpType     byte
	sport, dport uint16
	l4           []byte // the ICMPv6 message or the UDP datagram, headers included
}

func parseV6(p packet) v6 {
	b := p.raw
	if p.etherType != ethIPv6 || len(b) < 14+40+8 {
		return v6{}
	}
	ip := b[14:]
	out := v6{ok: true, next: ip[6]}
	out.src, _ = netip.AddrFromSlice(ip[8:24])
	out.dst, _ = netip.AddrFromSlice(ip[24:40])
	out.l4 = ip[40:]
	switch out.next {
	case unix.IPPROTO_ICMPV6:
		out.icmpType = out.l4[0]
	case unix.IPPROTO_UDP:
		out.sport, out.dport = endian.BigEndian.Uint16(out.l4[0:]), endian.BigEndian.Uint16(out.l4[2:])
	}
	return out
}

// ndOptions returns an RA's options by type (the first of each).
func ndOptions(raL4 []byte) map[byte][]byte {
	out := map[byte][]byte{}
	for o := raL4[16:]; len(o) >= 8 && o[1] > 0 && int(o[1])*8 <= len(o); o = o[int(o[1])*8:] {
		if _, seen := out[o[0]]; !seen {
			out[o[0]] = o[:int(o[1])*8]
		}
	}
	return out
}
