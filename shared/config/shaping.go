package config

import (
	"fmt"
	"net"
	"path"

	"github.com/brouter/brouter/shared/shape"
)

// ShapingSpec is a [network.NAME.shaping] table as written.
type ShapingSpec struct {
	ToGuest        *string           `toml:"to_guest"`
	FromGuest      *string           `toml:"from_guest"`
	ToGuestBurst   *string           `toml:"to_guest_burst"`
	FromGuestBurst *string           `toml:"from_guest_burst"`
	Priority       *string           `toml:"priority"`
	TotalToGuest   *string           `toml:"total_to_guest"`
	TotalFromGuest *string           `toml:"total_from_guest"`
	Port           []PortShapingSpec `toml:"port"`
}

// PortShapingSpec is one [[network.NAME.shaping.port]] override.
type PortShapingSpec struct {
	MAC            *string `toml:"mac"`
	Name           *string `toml:"name"`
	ToGuest        *string `toml:"to_guest"`
	FromGuest      *string `toml:"from_guest"`
	ToGuestBurst   *string `toml:"to_guest_burst"`
	FromGuestBurst *string `toml:"from_guest_burst"`
	Priority       *string `toml:"priority"`
}

// Shaping is a network's validated traffic shaping.
type Shaping struct {
	// Default applies to every port of the network that no rule matches.
	Default PortShaping
	// Total limits all guests of the network together (0: none).
	TotalToGuest, TotalFromGuest uint64
	Rules                        []ShapingRule
}

// PortShaping is what one port gets. Rates in bits/s, bursts in bytes; 0 means
// no limit (rate) or automatic (burst).
type PortShaping struct {
	ToGuest, FromGuest           uint64
	ToGuestBurst, FromGuestBurst uint64
	Priority                     shape.Priority
}

// IsZero reports whether the port is not shaped at all.
func (p PortShaping) IsZero() bool { return p.ToGuest == 0 && p.FromGuest == 0 }

// Validate checks limits given through an API (CNI's bandwidth capability)
// against what the shaper can do, so a caller can refuse them before it
// changes anything.
func (p PortShaping) Validate() error {
	for _, d := range []struct {
		what        string
		rate, burst uint64
	}{{"to guest (ingress)", p.ToGuest, p.ToGuestBurst}, {"from guest (egress)", p.FromGuest, p.FromGuestBurst}} {
		switch {
		case d.rate == 0 && d.burst != 0:
			return fmt.Errorf("%s: burst %s given without a rate", d.what, shape.FormatSize(d.burst))
		case d.rate == 0:
		case d.rate < shape.MinRate:
			return fmt.Errorf("%s: rate %d bit/s is below the minimum of %s", d.what, d.rate, shape.FormatRate(shape.MinRate))
		case d.rate > shape.MaxRate:
			return fmt.Errorf("%s: rate %s is above the maximum of %s", d.what, shape.FormatRate(d.rate), shape.FormatRate(shape.MaxRate))
		case d.burst > shape.MaxBurst:
			return fmt.Errorf("%s: burst %s is above the maximum of %s", d.what, shape.FormatSize(d.burst), shape.FormatSize(shape.MaxBurst))
		}
	}
	return nil
}

// PortRule overrides the defaults for ports matching MAC and/or Name (a glob).
type ShapingRule struct {
	MAC  net.HardwareAddr
	Name string
	set  PortShaping
	has  fieldsSet
}

// fieldsSet says which fields of a PortShaping a table gave explicitly.
type fieldsSet struct{ to, from, toB, fromB, prio bool }

// ForPort returns the shaping of a port: the network's defaults, overridden
// field by field by every rule matching its name and MAC, in config order.
func (s *Shaping) ForPort(name string, mac net.HardwareAddr) PortShaping {
	if s == nil {
		return PortShaping{}
	}
	out := s.Default
	for _, r := range s.Rules {
		if r.MAC != nil && (mac == nil || r.MAC.String() != mac.String()) {
			continue
		}
		if r.Name != "" {
			if ok, _ := path.Match(r.Name, name); !ok {
				continue
			}
		}
		if r.has.to {
			out.ToGuest = r.set.ToGuest
		}
		if r.has.from {
			out.FromGuest = r.set.FromGuest
		}
		if r.has.toB {
			out.ToGuestBurst = r.set.ToGuestBurst
		}
		if r.has.fromB {
			out.FromGuestBurst = r.set.FromGuestBurst
		}
		if r.has.prio {
			out.Priority = r.set.Priority
		}
	}
	return out
}

func (s *ShapingSpec) validate(key string) (*Shaping, error) {
	if s == nil {
		return nil, nil
	}
	out := &Shaping{}
	var err error
	if out.Default, _, err = portShaping(key, s.ToGuest, s.FromGuest, s.ToGuestBurst, s.FromGuestBurst, s.Priority); err != nil {
		return nil, err
	}
	if out.TotalToGuest, err = rate(key+".total_to_guest", s.TotalToGuest); err != nil {
		return nil, err
	}
	if out.TotalFromGuest, err = rate(key+".total_from_guest", s.TotalFromGuest); err != nil {
		return nil, err
	}
	for i, p := range s.Port {
		pk := fmt.Sprintf("%s.port[%d]", key, i)
		r := ShapingRule{}
		if p.MAC == nil && p.Name == nil {
			return nil, fmt.Errorf("%s: give mac or name to say which ports it applies to", pk)
		}
		if p.MAC != nil {
			mac, err := net.ParseMAC(*p.MAC)
			if err != nil || len(mac) != 6 {
				return nil, fmt.Errorf("%s.mac = %q: want a MAC address like 00:16:3e:12:34:56", pk, *p.MAC)
			}
			r.MAC = mac
		}
		if p.Name != nil {
			if _, err := path.Match(*p.Name, ""); err != nil || *p.Name == "" {
				return nil, fmt.Errorf("%s.name = %q: want an interface name or glob, e.g. \"vif5.*\"", pk, *p.Name)
			}
			r.Name = *p.Name
		}
		if r.set, r.has, err = portShaping(pk, p.ToGuest, p.FromGuest, p.ToGuestBurst, p.FromGuestBurst, p.Priority); err != nil {
			return nil, err
		}
		out.Rules = append(out.Rules, r)
	}
	return out, nil
}

func portShaping(key string, to, from, toB, fromB, prio *string) (PortShaping, fieldsSet, error) {
	var p PortShaping
	has := fieldsSet{to: to != nil, from: from != nil, toB: toB != nil, fromB: fromB != nil, prio: prio != nil}
	var err error
	if p.ToGuest, err = rate(key+".to_guest", to); err != nil {
		return p, has, err
	}
	if p.FromGuest, err = rate(key+".from_guest", from); err != nil {
		return p, has, err
	}
	if p.ToGuestBurst, err = size(key+".to_guest_burst", toB); err != nil {
		return p, has, err
	}
	if p.FromGuestBurst, err = size(key+".from_guest_burst", fromB); err != nil {
		return p, has, err
	}
	if prio != nil {
		if p.Priority, err = shape.ParsePriority(*prio); err != nil {
			return p, has, fmt.Errorf("%s.priority = %q: want high, medium or low", key, *prio)
		}
	}
	return p, has, nil
}

func rate(key string, v *string) (uint64, error) {
	if v == nil || *v == "" {
		return 0, nil
	}
	r, err := shape.ParseRate(*v)
	if err != nil {
		return 0, fmt.Errorf("%s = %q: %w", key, *v, err)
	}
	return r, nil
}

func size(key string, v *string) (uint64, error) {
	if v == nil || *v == "" {
		return 0, nil
	}
	b, err := shape.ParseSize(*v)
	if err != nil {
		return 0, fmt.Errorf("%s = %q: %w", key, *v, err)
	}
	return b, nil
}
