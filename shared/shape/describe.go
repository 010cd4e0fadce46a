package shape

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
)

// PortStatus is what the kernel holds for a port, for `network-virtual status`.
type PortStatus struct {
	Port string
	// Network is the aggregate group the port was applied with ("" = none).
	Network  string
	Priority Priority
	ToGuest  DirStatus
	// FromGuest is what the guest may send.
	FromGuest DirStatus
}

// DirStatus is one direction of a port.
type DirStatus struct {
	// Limit is the port's own limit as applied (Rate 0: none; Burst 0: automatic).
	Limit
	// EffectiveBurst is the bucket in use, in bytes.
	EffectiveBurst uint64
	// Aggregate is the network's aggregate limit in this direction, bits/s
	// (0: the port is not part of one).
	Aggregate uint64
	// Guaranteed is the rate the port keeps when its aggregate is saturated.
	Guaranteed uint64
	// Device and Class are where the queue is: the port itself or an ifb,
	// and the HTB class ("1:1"; tc -s class show dev DEVICE has its counters).
	Device, Class string
}

// Shaped reports whether the direction is limited at all.
func (d DirStatus) Shaped() bool { return d.Rate > 0 || d.Aggregate > 0 }

// Shaped reports whether the port is limited in either direction.
func (s PortStatus) Shaped() bool { return s.ToGuest.Shaped() || s.FromGuest.Shaped() }

// String formats the direction: "10Mbit/s (burst 4.88KiB)", "unlimited",
// "60Mbit/s (burst 7.3KiB) in aggregate 100Mbit/s, keeps 60Mbit/s".
func (d DirStatus) String() string {
	var b strings.Builder
	if d.Rate > 0 {
		fmt.Fprintf(&b, "%s (burst %s", FormatRate(d.Rate), FormatSize(d.EffectiveBurst))
		if d.Burst == 0 {
			b.WriteString(" auto")
		}
		b.WriteString(")")
	} else {
		b.WriteString("unlimited")
	}
	if d.Aggregate > 0 {
		fmt.Fprintf(&b, " in aggregate %s, keeps %s", FormatRate(d.Aggregate), FormatRate(d.Guaranteed))
	}
	return b.String()
}

// String formats the port on one line.
func (s PortStatus) String() string {
	if !s.Shaped() {
		return s.Port + ": not shaped"
	}
	out := fmt.Sprintf("%s: to guest %s; from guest %s", s.Port, s.ToGuest, s.FromGuest)
	if s.Network != "" {
		out += fmt.Sprintf("; network %s, priority %s", s.Network, s.Priority)
	}
	return out
}

// Describe reads back a port's shaping. A port without shaping gives a zero
// status (Shaped false); a port that does not exist is an error wrapping ErrNoPort.
func Describe(port string) (PortStatus, error) {
	st := PortStatus{Port: port}
	if err := validPort(port); err != nil {
		return st, err
	}
	mu.Lock()
	defer mu.Unlock()
	l, err := portLink(port)
	if err != nil {
		return st, err
	}
	for _, d := range directions {
		ds, p, ok, err := describeDir(l, d)
		if err != nil {
			return st, err
		}
		if !ok {
			continue
		}
		st.Network, st.Priority = p.network, p.prio
		if d == toGuest {
			st.ToGuest = ds
		} else {
			st.FromGuest = ds
		}
	}
	return st, nil
}

func describeDir(l netlink.Link, d direction) (DirStatus, parsedName, bool, error) {
	var ds DirStatus
	hf, err := listHook(l, d.hook())
	if err != nil || hf.classify == nil {
		return ds, parsedName{}, false, err
	}
	p, ok := parseName(hf.classify.Name)
	if !ok {
		return ds, p, false, nil
	}
	ds.Limit = p.limit
	dev := l
	if hf.redirect != nil && len(hf.redirect.Actions) == 1 {
		if m, ok := hf.redirect.Actions[0].(*netlink.MirredAction); ok {
			if ifb, err := netlink.LinkByIndex(m.Ifindex); err == nil {
				dev = ifb
			}
		}
	}
	ds.Device = dev.Attrs().Name
	ds.Class = netlink.HandleStr(hf.classify.ClassId)
	classes, err := htbClasses(dev)
	if err != nil {
		return ds, p, true, err
	}
	if c := classes[hf.classify.ClassId]; c != nil {
		ds.EffectiveBurst = ticksBurst(c.Cbuffer, c.Ceil*8)
		if hf.classify.ClassId != aggClass {
			ds.Guaranteed = c.Rate * 8
			if root := classes[aggClass]; root != nil {
				ds.Aggregate = root.Ceil * 8
			}
		}
	}
	return ds, p, true, nil
}

// NetworkStatus is a network's aggregate limits.
type NetworkStatus struct {
	Network            string
	ToGuest, FromGuest AggregateStatus
}

// AggregateStatus is one direction of a network aggregate.
type AggregateStatus struct {
	Limit          // Rate 0: no aggregate in this direction
	EffectiveBurst uint64
	Device         string
	Members        []MemberStatus
}

// MemberStatus is one port of an aggregate.
type MemberStatus struct {
	Port       string
	Limit      Limit // the port's own limit (Rate 0: none)
	Priority   Priority
	Guaranteed uint64 // what it keeps when the aggregate is saturated, bits/s
}

// DescribeNetwork reads back a network's aggregates and their members.
func DescribeNetwork(network string) (NetworkStatus, error) {
	st := NetworkStatus{Network: network}
	if err := validNetwork(network); err != nil {
		return st, err
	}
	mu.Lock()
	defer mu.Unlock()
	spec, err := readNetwork(network)
	if err != nil {
		return st, err
	}
	for _, d := range directions {
		lim := spec.limit(d)
		if lim.Rate == 0 {
			continue
		}
		ifb, err := aggregateIfb(network, d)
		if err != nil || ifb == nil {
			return st, err
		}
		as := AggregateStatus{Limit: lim, Device: ifb.Attrs().Name}
		classes, err := htbClasses(ifb)
		if err != nil {
			return st, err
		}
		if root := classes[aggClass]; root != nil {
			as.EffectiveBurst = ticksBurst(root.Cbuffer, root.Ceil*8)
		}
		ms, err := members(ifb)
		if err != nil {
			return st, err
		}
		for _, m := range ms {
			ms := MemberStatus{Port: m.port, Limit: m.limit, Priority: m.prio}
			if c := classes[netlink.MakeHandle(1, uint16(m.minor))]; c != nil {
				ms.Guaranteed = c.Rate * 8
			}
			as.Members = append(as.Members, ms)
		}
		if d == toGuest {
			st.ToGuest = as
		} else {
			st.FromGuest = as
		}
	}
	return st, nil
}
