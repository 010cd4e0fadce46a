package config

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// AllocSpec is a [network.NAME.alloc] table as written: the pool brouter's
// own address allocator (CNI without an IPAM plugin) hands out from.
type AllocSpec struct {
	RangeStart  *string `toml:"range_start"`
	RangeEnd    *string `toml:"range_end"`
	Range6Start *string `toml:"range6_start"`
	Range6End   *string `toml:"range6_end"`
}

// Pool is an inclusive range of addresses; the zero Pool is none.
type Pool struct{ Start, End netip.Addr }

// Contains reports whether a lies in the pool.
func (p Pool) Contains(a netip.Addr) bool {
	return p.Start.IsValid() && p.Start.BitLen() == a.BitLen() && p.Start.Compare(a) <= 0 && a.Compare(p.End) <= 0
}

func (p Pool) String() string { return p.Start.String() + "-" + p.End.String() }

// Alloc is a network's validated allocator pools, one per subnet.
type Alloc struct{ Pool4, Pool6 Pool }

// Pool returns the pool of a's family.
func (a Alloc) Pool(is6 bool) Pool {
	if is6 {
		return a.Pool6
	}
	return a.Pool4
}

// defaultPool is the part of sub the allocator uses unless told otherwise:
// in a subnet of 2^17 addresses or more (an IPv6 /64), the 65536 addresses
// from offset 0x10000 (fd00::1:0 to fd00::1:ffff); in a smaller one its
// second quarter (10.98.98.64 to 10.98.98.127 in a /24). Both are disjoint
// from the default DHCP range (the upper half) and leave the low addresses,
// which operators give their VMs by hand, alone.
func defaultPool(sub netip.Prefix) Pool {
	hostBits := sub.Addr().BitLen() - sub.Bits()
	base := sub.Masked().Addr()
	switch {
	case hostBits >= 17:
		return Pool{addOffset(base, 1<<16), addOffset(base, 1<<17-1)}
	case hostBits >= 3:
		size := uint64(1) << hostBits
		return Pool{addOffset(base, size/4), addOffset(base, size/2-1)}
	default: // a /30 or /31 (/126, /127): its host addresses
		return Pool{addOffset(base, 1), addOffset(base, uint64(1)<<hostBits-1)}
	}
}

// addOffset adds off to a's low 64 bits (pools lie within them).
func addOffset(a netip.Addr, off uint64) netip.Addr {
	if a.Is4() {
		return addU32(a, uint32(off))
	}
	b := a.As16()
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+off)
	return netip.AddrFrom16(b)
}

// validate turns the table into n's pools: defaults where a bound is not
// given, each bound in its subnet, start before end, and a pool asked for
// not overlapping the DHCP range (n.DHCP must be set first).
func (s *AllocSpec) validate(key string, n *Network) (Alloc, error) {
	var out Alloc
	if s == nil {
		s = &AllocSpec{}
	}
	for _, f := range []struct {
		sub        netip.Prefix
		start, end *string
		kStart     string
		kEnd       string
		dst        *Pool
	}{
		{n.Subnet, s.RangeStart, s.RangeEnd, "range_start", "range_end", &out.Pool4},
		{n.Subnet6, s.Range6Start, s.Range6End, "range6_start", "range6_end", &out.Pool6},
	} {
		if !f.sub.IsValid() {
			if f.start != nil || f.end != nil {
				return out, fmt.Errorf("%s.%s: the network has no subnet of that family", key, f.kStart)
			}
			continue
		}
		p := defaultPool(f.sub)
		parse := func(k string, v *string, dst *netip.Addr) error {
			if v == nil {
				return nil
			}
			a, err := netip.ParseAddr(*v)
			if err != nil || a.Zone() != "" || !f.sub.Contains(a) || a == f.sub.Masked().Addr() {
				return fmt.Errorf("%s.%s = %q: want a host address of %s", key, k, *v, f.sub)
			}
			*dst = a
			return nil
		}
		if err := parse(f.kStart, f.start, &p.Start); err != nil {
			return out, err
		}
		if err := parse(f.kEnd, f.end, &p.End); err != nil {
			return out, err
		}
		if p.End.Less(p.Start) {
			return out, fmt.Errorf("%s: %s %s is after %s %s", key, f.kStart, p.Start, f.kEnd, p.End)
		}
		// A default pool's addresses in the DHCP range are simply never
		// handed out (the allocator skips the range); a pool that was asked
		// for must not overlap it.
		explicit := f.start != nil || f.end != nil
		if d := n.DHCP; d != nil && explicit && p.Start.Is4() && !p.End.Less(d.RangeStart) && !d.RangeEnd.Less(p.Start) {
			return out, fmt.Errorf("%s: the pool %s overlaps the DHCP range %s-%s; give them disjoint ranges", key, p, d.RangeStart, d.RangeEnd)
		}
		*f.dst = p
	}
	return out, nil
}
