package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/brouter/brouter/shared/names"
)

// Select picks the network a caller means and overlays the caller's own
// settings (e.g. xend's bridgeip=) on it, validating the result.
//
//   - name given: that [network.NAME]; an unknown name is an error.
//   - else a bridge given in ov: the configured network using that bridge, or
//     an ad-hoc network named after the bridge, built from the defaults.
//   - else default_network, else the only configured network.
//   - else, with no networks configured, the built-in default: bridge xenbr0,
//     10.6.7.1/24, mode nat (Xen's network-virtual defaults).
func (c *Config) Select(name string, ov *NetworkSpec) (*Network, error) {
	if ov == nil {
		ov = &NetworkSpec{}
	}
	var base *NetworkSpec
	switch {
	case name != "":
		s, ok := c.specs[name]
		if !ok {
			return nil, fmt.Errorf("config: network %q: no [network.%s] table in %s (have: %s)", name, name, c.where(), c.names())
		}
		base = s
	case ov.Bridge != nil:
		if cfg := c.NetworkByBridge(*ov.Bridge); cfg != nil {
			name, base = cfg.Name, c.specs[cfg.Name]
			if cfg.Mode == ModeRoute {
				o := *ov
				o.Bridge = nil // it named the network, not a device
				ov = &o
			}
		} else {
			if err := names.Interface(*ov.Bridge); err != nil {
				return nil, fmt.Errorf("config: bridge %w", err)
			}
			name = adHocName(*ov.Bridge)
		}
	case c.DefaultNetwork != "":
		name, base = c.DefaultNetwork, c.specs[c.DefaultNetwork]
	case len(c.Networks) == 1:
		for n := range c.Networks {
			name, base = n, c.specs[n]
		}
	case len(c.Networks) == 0:
		name = adHocName(DefaultBridge)
	default:
		return nil, fmt.Errorf("config: %s defines several networks (%s) and no default_network: name one", c.where(), c.names())
	}
	n, err := Merge(base, ov).Validate(name)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return n, nil
}

// Merge returns base with every field set in over replacing base's.
func Merge(base, over *NetworkSpec) *NetworkSpec {
	out := NetworkSpec{}
	if base != nil {
		out = *base
	}
	if over == nil {
		return &out
	}
	setS := func(dst **string, v *string) {
		if v != nil {
			*dst = v
		}
	}
	setS(&out.Bridge, over.Bridge)
	if over.Address != nil {
		// A new address brings its own network; a subnet written for the
		// old address would only contradict it.
		out.Subnet = nil
	}
	setS(&out.Address, over.Address)
	setS(&out.Subnet, over.Subnet)
	setS(&out.Address6, over.Address6)
	setS(&out.Mode, over.Mode)
	setS(&out.Uplink, over.Uplink)
	setS(&out.Firewall, over.Firewall)
	if over.MTU != nil {
		out.MTU = over.MTU
	}
	if over.STP != nil {
		out.STP = over.STP
	}
	if over.ForwardDelay != nil {
		out.ForwardDelay = over.ForwardDelay
	}
	if over.Antispoof != nil {
		out.Antispoof = over.Antispoof
	}
	return &out
}

// NetworkByBridge returns the configured network a Xen vif's bridge= value
// means: the network whose bridge it is, or a mode route network of that
// name (route networks have no bridge). nil when none.
func (c *Config) NetworkByBridge(br string) *Network {
	for _, n := range c.Networks {
		if n.Bridge == br && br != "" {
			return n
		}
	}
	if n, ok := c.Networks[br]; ok && n.Mode == ModeRoute {
		return n
	}
	return nil
}

// adHocName names a network that only exists through a caller's arguments
// after its bridge, so start and stop with the same arguments agree.
func adHocName(bridge string) string {
	return strings.ReplaceAll(bridge, ".", "_")
}

func (c *Config) where() string {
	if c.Path == "" {
		return "the built-in config (no config file)"
	}
	return c.Path
}

func (c *Config) names() string {
	if len(c.Networks) == 0 {
		return "none"
	}
	var s []string
	for n := range c.Networks {
		s = append(s, n)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}
