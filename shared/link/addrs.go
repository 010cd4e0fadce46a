package link

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// addrMsgs counts the address messages addrsOf has read, for the test that
// holds it to the asked link's.
var addrMsgs atomic.Int64

// addrsOf lists the addresses of one link, of family (AF_UNSPEC: all). The
// kernel is asked for that link's only (a dump with the link's index,
// honoured on a socket with NETLINK_GET_STRICT_CHK, Linux 4.20 and later):
// an unfiltered address dump walks every link of the namespace, so its
// cost grows with the number of guests on the host. Addresses of other
// links that an older kernel sends anyway are dropped here.
func addrsOf(l netlink.Link, family int) ([]netip.Prefix, error) {
	s, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	index := l.Attrs().Index
	msg := nl.NewIfAddrmsg(family)
	if unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1) == nil {
		msg.Index = uint32(index)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	req.AddData(msg)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	msgs, err := redump(func() ([][]byte, error) { return req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR) })
	if err != nil {
		return nil, err
	}
	addrMsgs.Add(int64(len(msgs)))
	var out []netip.Prefix
	for _, m := range msgs {
		if len(m) < unix.SizeofIfAddrmsg {
			continue
		}
		ifa := nl.DeserializeIfAddrmsg(m)
		if int(ifa.Index) != index {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfAddrmsg:])
		if err != nil {
			return nil, fmt.Errorf("parse address of %s: %w", l.Attrs().Name, err)
		}
		var local, addr net.IP
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.IFA_LOCAL:
				local = a.Value
			case unix.IFA_ADDRESS:
				addr = a.Value
			}
		}
		if local == nil { // IPv6 has IFA_ADDRESS only; IPv4's IFA_ADDRESS is a peer's on point-to-point links
			local = addr
		}
		if a, ok := netip.AddrFromSlice(local); ok {
			out = append(out, netip.PrefixFrom(a.Unmap(), int(ifa.Prefixlen)))
		}
	}
	return out, nil
}
