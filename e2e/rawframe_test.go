package e2e

import (
	endian "encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/nstest"
)

// Raw Ethernet frames, crafted as a hostile guest would (what scapy does in
// a probe): sent and captured with AF_PACKET sockets inside a namespace, so
// nothing in the guest's own stack (routing, source selection) stands
// between the test and the wire.

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// frame is an Ethernet frame: destination, source, ethertype, payload.
func frame(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	endian.BigEndian.PutUint16(b[12:14], etherType)
	return append(b, payload...)
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(endian.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ipv4 is an IPv4 packet (TTL 64, no options) around an L4 segment whose
// checksum field (at csumAt) is filled in with the pseudo-header.
func ipv4(src, dst netip.Addr, proto byte, l4 []byte, csumAt int) []byte {
	s, d := src.As4(), dst.As4()
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
	var sum uint32
	for i := 0; i+1 < len(pseudo); i += 2 {
		sum += uint32(endian.BigEndian.Uint16(pseudo[i:]))
	}
	endian.BigEndian.PutUint16(l4[csumAt:], checksum(l4, sum))
	h := make([]byte, 20)
	h[0], h[8], h[9] = 0x45, 64, proto
	endian.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	endian.BigEndian.PutUint16(h[10:], checksum(h, 0))
	return append(h, l4...)
}

func udp4(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	l4 := make([]byte, 8, 8+len(payload))
	endian.BigEndian.PutUint16(l4[0:], sport)
	endian.BigEndian.PutUint16(l4[2:], dport)
	endian.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
	return ipv4(src, dst, unix.IPPROTO_UDP, append(l4, payload...), 6)
}

func tcpSYN4(src, dst netip.Addr, sport, dport uint16) []byte {
	l4 := make([]byte, 20)
	endian.BigEndian.PutUint16(l4[0:], sport)
	endian.BigEndian.PutUint16(l4[2:], dport)
	endian.BigEndian.PutUint32(l4[4:], 0x1000)
	l4[12], l4[13] = 5<<4, 0x02 // data offset 5 words, SYN
	endian.BigEndian.PutUint16(l4[14:], 64240)
	return ipv4(src, dst, unix.IPPROTO_TCP, l4, 16)
}

// packet is what a capture saw of an IPv4 frame.
type packet struct {
	etherType    uint16
	src, dst     netip.Addr
	proto        byte
	sport, dport uint16
	tcpFlags     byte
	outgoing     bool   // sent by the captured link itself
	payload      []byte // a UDP datagram's
	raw          []byte // the whole frame (IPv6: see ipv6_frames_test.go)
}

func parseFrame(b []byte, outgoing bool) packet {
	p := packet{outgoing: outgoing, raw: b}
	if len(b) < 14 {
		return p
	}
	p.etherType = endian.BigEndian.Uint16(b[12:14])
	ip := b[14:]
	if p.etherType != unix.ETH_P_IP || len(ip) < 20 {
		return p
	}
	ihl := int(ip[0]&0x0f) * 4
	p.src, _ = netip.AddrFromSlice(ip[12:16])
	p.dst, _ = netip.AddrFromSlice(ip[16:20])
	p.proto = ip[9]
	if len(ip) < ihl+14 {
		return p
	}
	l4 := ip[ihl:]
	p.sport, p.dport = endian.BigEndian.Uint16(l4[0:]), endian.BigEndian.Uint16(l4[2:])
	if p.proto == unix.IPPROTO_TCP {
		p.tcpFlags = l4[13]
	}
	if p.proto == unix.IPPROTO_UDP && len(l4) >= 8 {
		p.payload = l4[8:]
	}
	return p
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens an AF_PACKET socket in ns bound to ifname.
func packetSocket(ns *nstest.NS, ifname string) (fd, ifindex int, err error) {
	err = ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("packet socket on %s in %s: %w", ifname, ns.Name(), err)
	}
	return fd, ifindex, err
}

// sendFrames sends raw frames out of ifname in ns.
func sendFrames(t *testing.T, ns *nstest.NS, ifname string, frames ...[]byte) {
	t.Helper()
	fd, ifindex, err := packetSocket(ns, ifname)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, f := range frames {
		to := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
		copy(to.Addr[:], f[0:6])
		if err := unix.Sendto(fd, f, 0, to); err != nil {
			t.Fatalf("send a frame on %s in %s: %v", ifname, ns.Name(), err)
		}
	}
}

// capture records the frames ifname in ns receives (or sends) until stop.
type capture struct {
	fd   int
	mu   sync.Mutex
	seen []packet
	done chan struct{}
}

func startCapture(t *testing.T, ns *nstest.NS, ifname string) *capture {
	t.Helper()
	fd, _, err := packetSocket(ns, ifname)
	if err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	c := &capture{fd: fd, done: make(chan struct{})}
	stop := make(chan struct{})
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			out := false
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				out = true
			}
			c.mu.Lock()
			c.seen = append(c.seen, parseFrame(append([]byte{}, buf[:n]...), out))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stop); <-c.done; unix.Close(fd) })
	return c
}

// count waits up to wait for frames that match, and returns how many came.
func (c *capture) count(wait time.Duration, match func(packet) bool) int {
	deadline := time.Now().Add(wait)
	for {
		c.mu.Lock()
		n := 0
		for _, p := range c.seen {
			if !p.outgoing && match(p) {
				n++
			}
		}
		c.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// linkMAC is the MAC address of ifname in ns.
func linkMAC(t *testing.T, ns *nstest.NS, ifname string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatalf("MAC of %s in %s: %v", ifname, ns.Name(), err)
	}
	return mac
}
