// Command brouter is a CNI plugin (spec 1.1.0 and older) that attaches a
// container's network namespace to a brouter network through a veth pair:
// the container end gets the IPAM addresses, the host end is an owned port
// of shared/vnet, attached exactly like a Xen vif or a QEMU tap.
//
// Host config: BROUTER_CONFIG (default /etc/brouter/brouter.toml); the CNI
// config names one of its networks with "network", or gives a "bridge".
// This package only translates CNI (stdin and environment, IPAM
// delegation, the result, error codes); vnet decides the rest.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/state"
	"github.com/brouter/brouter/shared/vnet"
)

// bandwidth is the CNI "bandwidth" capability: rates and bursts in bits.
type bandwidth struct {
	IngressRate  uint64 `json:"ingressRate"`
	IngressBurst uint64 `json:"ingressBurst"`
	EgressRate   uint64 `json:"egressRate"`
	EgressBurst  uint64 `json:"egressBurst"`
}

// netConf is the plugin's stdin config. Args.cni.ips / Args.cni.mac (the
// older "args" convention) are passed through to the IPAM plugin untouched.
type netConf struct {
	types.NetConf
	Network          string `json:"network,omitempty"`
	Bridge           string `json:"bridge,omitempty"`
	IsGateway        *bool  `json:"isGateway,omitempty"`
	IsDefaultGateway *bool  `json:"isDefaultGateway,omitempty"`
	IPMasq           *bool  `json:"ipMasq,omitempty"`
	MTU              int    `json:"mtu,omitempty"`
	HairpinMode      bool   `json:"hairpinMode,omitempty"`
	EnableDad        bool   `json:"enableDad,omitempty"`
	Antispoof        *bool  `json:"antispoof,omitempty"`
	RuntimeConfig    struct {
		Mac          string             `json:"mac,omitempty"`
		IPs          []string           `json:"ips,omitempty"`
		Bandwidth    *bandwidth         `json:"bandwidth,omitempty"`
		PortMappings []vnet.PortMapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	mac      net.HardwareAddr // RuntimeConfig.Mac, parsed
	ips      []netip.Addr     // RuntimeConfig.IPs, parsed
	mappings []vnet.Forward   // RuntimeConfig.PortMappings, parsed (GuestIP unset)
}

func main() {
	// skel fails a DEL whose CNI_NETNS is the plugin's own namespace (after
	// running it), and so does an IPAM plugin's skel: DEL needs no
	// namespace, and must succeed after an ADD refused for naming that one.
	if os.Getenv("CNI_COMMAND") == "DEL" {
		if same, _ := link.SameNetns(os.Getenv("CNI_NETNS")); same {
			os.Setenv("CNI_NETNS", "")
		}
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC},
		version.All, "brouter "+version.Current())
}

// cniError turns an error from brouter's libraries into a CNI error with the
// right code: 11 (try again later) for a lock held too long, 7 (invalid
// network config) for a request vnet refused, else 999.
func cniError(what string, err error) error {
	var te *types.Error
	switch {
	case err == nil || errors.As(err, &te):
		return err
	case errors.Is(err, state.ErrLockTimeout):
		return types.NewError(types.ErrTryAgainLater, what, err.Error())
	case errors.Is(err, vnet.ErrInvalidPort):
		return types.NewError(types.ErrInvalidNetworkConfig, what, err.Error())
	}
	return types.NewError(types.ErrInternal, what, err.Error())
}

// errConfig is a CNI "invalid network config" error (code 7).
func errConfig(what string, err error) error {
	return types.NewError(types.ErrInvalidNetworkConfig, what, err.Error())
}

func loadConf(args *skel.CmdArgs) (*netConf, error) {
	c := &netConf{}
	if err := json.Unmarshal(args.StdinData, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse network configuration", err.Error())
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse prevResult", err.Error())
	}
	var err error
	switch {
	case c.Network != "" && config.ValidNetworkName(c.Network) != nil:
		err = errConfig("network", config.ValidNetworkName(c.Network))
	case c.Bridge != "" && names.Interface(c.Bridge) != nil:
		err = errConfig("bridge", names.Interface(c.Bridge))
	case c.MTU < 0 || c.MTU > 65535 || c.MTU > 0 && c.MTU < 68:
		err = types.NewError(types.ErrInvalidNetworkConfig, "mtu out of range (68..65535)", "")
	default:
		err = checkRuntimeConfig(c)
	}
	return c, err
}

// checkRuntimeConfig validates the capabilities a runtime passed, before
// anything on the host changes: a bad value is an invalid config (code 7).
func checkRuntimeConfig(c *netConf) error {
	rc := &c.RuntimeConfig
	if rc.Mac != "" {
		mac, err := net.ParseMAC(rc.Mac)
		if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
			return types.NewError(types.ErrInvalidNetworkConfig, "runtimeConfig.mac "+rc.Mac+": want a unicast Ethernet address", "")
		}
		c.mac = mac
	}
	for _, s := range rc.IPs {
		p, err := netip.ParsePrefix(s)
		if a, aerr := netip.ParseAddr(s); err != nil && aerr == nil {
			p, err = netip.PrefixFrom(a, a.BitLen()), nil
		}
		if err != nil {
			return errConfig("runtimeConfig.ips: "+s+" is not an address", err)
		}
		c.ips = append(c.ips, p.Addr())
	}
	if b := rc.Bandwidth; b != nil {
		if err := b.shaping().Validate(); err != nil {
			return errConfig("runtimeConfig.bandwidth", err)
		}
	}
	for _, pm := range rc.PortMappings {
		f, err := vnet.ParseMapping(pm)
		if err != nil {
			return errConfig("runtimeConfig.portMappings", err)
		}
		c.mappings = append(c.mappings, f)
	}
	return nil
}

// shaping is the capability in the shaper's terms (rates in bits/s, bursts in bytes).
func (b *bandwidth) shaping() config.PortShaping {
	return config.PortShaping{ToGuest: b.IngressRate, ToGuestBurst: b.IngressBurst / 8, FromGuest: b.EgressRate, FromGuestBurst: b.EgressBurst / 8}
}

// request is the network the config means, in vnet's terms; isGateway
// (implied by isDefaultGateway, as in the bridge plugin) puts the guests'
// gateway on an ad-hoc network's bridge.
func (c *netConf) request() vnet.NetworkRequest {
	gw := c.IsGateway != nil && *c.IsGateway || c.IsDefaultGateway != nil && *c.IsDefaultGateway
	return vnet.NetworkRequest{Name: c.Network, Bridge: c.Bridge, MTU: c.MTU, Masquerade: c.IPMasq, Gateway: gw}
}

// selectNetwork loads the host config and picks the network c means (see
// vnet.SelectNetwork: an ad-hoc network is completed after IPAM).
func selectNetwork(c *netConf) (m *vnet.Manager, n *config.Network, adHoc bool, err error) {
	if m, err = manager(); err == nil {
		n, adHoc, err = m.SelectNetwork(c.request())
	}
	return m, n, adHoc, cniError("network", err)
}

func manager() (*vnet.Manager, error) {
	cfg, err := config.Load("")
	if err != nil {
		return nil, errConfig("host config", err)
	}
	return vnet.New(cfg), nil
}

// builtinIPAM: the config names a network and no IPAM plugin, so brouter
// hands out the network's addresses itself.
func (c *netConf) builtinIPAM(adHoc bool) bool { return c.IPAM.Type == "" && !adHoc }

// hostVethName is the host end's name, derived from the container ID and
// interface only, so DEL and GC find it after the netns is gone.
func hostVethName(containerID, ifname string) string {
	h := sha256.Sum256([]byte(containerID + "\x00" + ifname))
	return "brv" + hex.EncodeToString(h[:])[:12]
}

// isCNIPort reports whether a port name is one hostVethName makes.
func isCNIPort(name string) bool {
	_, err := hex.DecodeString(name[min(3, len(name)):])
	return len(name) == 15 && name[:3] == "brv" && err == nil
}

// The attachments' records in vnet: the scope is the CNI network (the
// conflist's name), the ID the container ID and interface.
func scope(c *netConf) string                        { return "cni/" + c.Name }
func attachmentID(containerID, ifname string) string { return containerID + "/" + ifname }
