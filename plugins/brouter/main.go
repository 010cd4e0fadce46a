// Command brouter is a CNI plugin (spec 1.1.0 and older) that attaches a
// container's network namespace to a brouter network through a veth pair:
// the container end gets the IPAM addresses, the host end is attached with
// shared/vnet exactly like a Xen vif or a QEMU tap.
//
// Host config: BROUTER_CONFIG (default /etc/brouter/brouter.toml); the CNI
// config names one of its networks with "network", or gives a "bridge".
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brouter/brouter/shared/config"
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

// portMapping is one entry of the CNI "portMappings" capability.
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// netConf is the plugin's stdin config.
type netConf struct {
	types.NetConf
	Network          string `json:"network,omitempty"`
	Bridge           string `json:"bridge,omitempty"`
	IsGateway        *bool  `json:"isGateway,omitempty"`
	IsDefaultGateway *bool  `json:"isDefaultGateway,omitempty"`
	IPMasq           *bool  `json:"ipMasq,omitempty"`
	MTU              int    `json:"mtu,omitempty"`
	HairpinMode      bool   `json:"hairpinMode,omitempty"`
	Antispoof        *bool  `json:"antispoof,omitempty"`
	RuntimeConfig    struct {
		Mac          string        `json:"mac,omitempty"`
		IPs          []string      `json:"ips,omitempty"`
		Bandwidth    *bandwidth    `json:"bandwidth,omitempty"`
		PortMappings []portMapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	mac      net.HardwareAddr // RuntimeConfig.Mac, parsed
	ips      []netip.Addr     // RuntimeConfig.IPs, parsed
	mappings []vnet.Forward   // RuntimeConfig.PortMappings, parsed (GuestIP unset)
	// Args.cni.ips / Args.cni.mac (the older "args" convention) are passed
	// through to the IPAM plugin untouched.
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
		GC:     cmdGC,
	}, version.All, "brouter "+version.Current())
}

// errConfig is a CNI "invalid network config" error (code 7).
func errConfig(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// cniError turns an error from brouter's libraries into a CNI error with the
// right code: 11 (try again later) for a lock held too long, 7 (invalid
// network config) for a port request vnet refused, else 999.
func cniError(what string, err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return err
	}
	if errors.Is(err, state.ErrLockTimeout) {
		return types.NewError(types.ErrTryAgainLater, what, err.Error())
	}
	if errors.Is(err, vnet.ErrInvalidPort) {
		return types.NewError(types.ErrInvalidNetworkConfig, what, err.Error())
	}
	return types.NewError(types.ErrInternal, what, err.Error())
}

func loadConf(args *skel.CmdArgs) (*netConf, error) {
	c := &netConf{}
	if err := json.Unmarshal(args.StdinData, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse network configuration", err.Error())
	}
	if c.Network != "" {
		if err := config.ValidNetworkName(c.Network); err != nil {
			return nil, errConfig("network: %v", err)
		}
	}
	if c.Bridge != "" {
		if err := names.Interface(c.Bridge); err != nil {
			return nil, errConfig("bridge: %v", err)
		}
	}
	if c.MTU < 0 || c.MTU > 65535 || c.MTU > 0 && c.MTU < 68 {
		return nil, errConfig("mtu %d out of range (68..65535)", c.MTU)
	}
	if err := checkRuntimeConfig(c); err != nil {
		return nil, err
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse prevResult", err.Error())
	}
	return c, nil
}

// checkRuntimeConfig validates the capabilities a runtime passed, before
// anything on the host changes: a bad value is an invalid config (code 7).
func checkRuntimeConfig(c *netConf) error {
	rc := &c.RuntimeConfig
	if rc.Mac != "" {
		mac, err := net.ParseMAC(rc.Mac)
		if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
			return errConfig("runtimeConfig.mac %q: want a unicast Ethernet address", rc.Mac)
		}
		c.mac = mac
	}
	for _, s := range rc.IPs {
		if p, err := netip.ParsePrefix(s); err == nil {
			c.ips = append(c.ips, p.Addr())
		} else if a, err := netip.ParseAddr(s); err == nil {
			c.ips = append(c.ips, a)
		} else {
			return errConfig("runtimeConfig.ips: %q is not an address", s)
		}
	}
	if b := rc.Bandwidth; b != nil {
		if err := b.shaping().Validate(); err != nil {
			return errConfig("runtimeConfig.bandwidth: %v", err)
		}
	}
	for i, pm := range rc.PortMappings {
		f, err := forwardOf(pm)
		if err != nil {
			return errConfig("runtimeConfig.portMappings[%d]: %v", i, err)
		}
		c.mappings = append(c.mappings, f)
	}
	return nil
}

// forwardOf checks one port mapping and turns it into a forward without its
// guest address.
func forwardOf(pm portMapping) (vnet.Forward, error) {
	proto := strings.ToLower(pm.Protocol)
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return vnet.Forward{}, fmt.Errorf("protocol %q: want tcp, udp or sctp", pm.Protocol)
	}
	if pm.HostPort < 1 || pm.HostPort > 65535 {
		return vnet.Forward{}, fmt.Errorf("hostPort %d: want 1..65535", pm.HostPort)
	}
	if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return vnet.Forward{}, fmt.Errorf("containerPort %d: want 1..65535", pm.ContainerPort)
	}
	f := vnet.Forward{Proto: proto, HostPort: uint16(pm.HostPort), GuestPort: uint16(pm.ContainerPort)}
	if pm.HostIP != "" {
		a, err := netip.ParseAddr(pm.HostIP)
		if err != nil || a.Zone() != "" {
			return vnet.Forward{}, fmt.Errorf("hostIP %q is not an address", pm.HostIP)
		}
		if !a.IsUnspecified() { // 0.0.0.0 and :: mean any address
			if a.Is4In6() || a.IsMulticast() {
				return vnet.Forward{}, fmt.Errorf("hostIP %q: want a unicast address of the host", pm.HostIP)
			}
			f.HostIP = a
		} else if a.Is6() {
			f.HostIP = netip.Addr{}
			f.GuestIP = netip.IPv6Unspecified() // marks "IPv6 only" until the guest address is known
		} else {
			f.GuestIP = netip.IPv4Unspecified()
		}
	}
	return f, nil
}

// forwardsFor gives each port mapping the container's address of its family
// (a mapping without hostIP applies to every family the container has).
func forwardsFor(maps []vnet.Forward, ips []netip.Addr) []vnet.Forward {
	var out []vnet.Forward
	for _, m := range maps {
		for _, ip := range ips {
			switch {
			case m.HostIP.IsValid() && m.HostIP.Is4() != ip.Is4():
				continue
			case m.GuestIP.IsValid() && m.GuestIP.Is4() != ip.Is4(): // 0.0.0.0 or ::
				continue
			}
			f := m
			f.GuestIP = ip
			if !slices.ContainsFunc(out, func(o vnet.Forward) bool {
				return o.Proto == f.Proto && o.HostIP == f.HostIP && o.HostPort == f.HostPort && o.GuestIP.Is4() == f.GuestIP.Is4()
			}) {
				out = append(out, f)
			}
		}
	}
	return out
}

// selectNetwork loads the host TOML and picks the network the CNI config
// means. adHoc: the config names a bridge that no [network.NAME] uses, as
// the reference bridge plugin's configs do; such a network's address comes
// from the IPAM result (adHocNetwork), so n is only good for its name.
func selectNetwork(c *netConf) (cfg *config.Config, n *config.Network, adHoc bool, err error) {
	cfg, err = loadHostConfig()
	if err != nil {
		return nil, nil, false, err
	}
	n, adHoc, err = selectIn(cfg, c)
	return cfg, n, adHoc, err
}

func loadHostConfig() (*config.Config, error) {
	cfg, err := config.Load("")
	if err != nil {
		return nil, errConfig("host config: %v", err)
	}
	return cfg, nil
}

// selectIn is selectNetwork with the host config already loaded.
func selectIn(cfg *config.Config, c *netConf) (n *config.Network, adHoc bool, err error) {
	spec := &config.NetworkSpec{}
	if c.Bridge != "" {
		b := c.Bridge
		spec.Bridge = &b
		adHoc = c.Network == "" && cfg.NetworkByBridge(b) == nil
	}
	if c.MTU != 0 {
		m := c.MTU
		spec.MTU = &m
	}
	n, err = cfg.Select(c.Network, spec)
	if err != nil {
		return nil, false, errConfig("%v", err)
	}
	if !adHoc && c.IPMasq != nil && *c.IPMasq != (n.Mode == config.ModeNAT) {
		return nil, false, errConfig("ipMasq is %v but network %s is in mode %s (set mode in [network.%s] of %s, or drop ipMasq)",
			*c.IPMasq, n.Name, n.Mode, n.Name, cfg.Path)
	}
	if n.Mode == config.ModeRoute {
		return nil, false, errConfig("network %s is in mode route (one routed port per guest, for Xen); the CNI plugin needs a bridge", n.Name)
	}
	return n, adHoc, nil
}

// isGateway: the bridge carries the containers' gateway address
// (isDefaultGateway implies it, as in the bridge plugin).
func (c *netConf) isGateway() bool {
	return c.IsGateway != nil && *c.IsGateway || c.IsDefaultGateway != nil && *c.IsDefaultGateway
}

// adHocNetwork is the network of a bridge the host TOML does not know, built
// the way the bridge plugin would: with isGateway the IPAM gateways go on
// the bridge and ipMasq chooses between mode nat and routed; without it the
// bridge must exist and is only attached to (mode bridge).
func adHocNetwork(cfg *config.Config, c *netConf, r *current.Result) (*config.Network, error) {
	spec := &config.NetworkSpec{Bridge: &c.Bridge}
	if c.MTU != 0 {
		spec.MTU = &c.MTU
	}
	mode := string(config.ModeBridge)
	if c.isGateway() {
		mode = string(config.ModeRouted)
		if c.IPMasq != nil && *c.IPMasq {
			mode = string(config.ModeNAT)
		}
		for _, ipc := range r.IPs {
			if ipc.Gateway == nil {
				continue
			}
			a := (&net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}).String()
			if ipc.Gateway.To4() != nil && spec.Address == nil {
				spec.Address = &a
			} else if ipc.Gateway.To4() == nil && spec.Address6 == nil {
				spec.Address6 = &a
			}
		}
		if spec.Address == nil {
			return nil, errConfig("isGateway: the IPAM result has no IPv4 gateway to put on bridge %s", c.Bridge)
		}
	}
	spec.Mode = &mode
	n, err := cfg.Select("", spec)
	if err != nil {
		return nil, errConfig("%v", err)
	}
	if n.Mode == config.ModeBridge {
		if _, err := netlink.LinkByName(c.Bridge); err != nil {
			return nil, errConfig("bridge %s does not exist: without isGateway brouter attaches to an existing bridge only (create it, set isGateway, or name a [network.NAME] of the host config)", c.Bridge)
		}
	}
	return n, nil
}

// builtinIPAM: the config names a network and no IPAM plugin, so brouter
// hands out the network's addresses itself (outside its DHCP range, never
// its gateway or a configured guest's address).
func (c *netConf) builtinIPAM(adHoc bool) bool { return c.IPAM.Type == "" && !adHoc }

// allocate gives the attachment its addresses from brouter's own allocator
// (the "ips" capability asks for specific ones) and puts them in the result.
func allocate(m *vnet.Manager, n *config.Network, c *netConf, owner string, r *current.Result) error {
	got, err := m.Allocate(n, owner, c.ips)
	if err != nil {
		if len(c.ips) > 0 {
			return errConfig("runtimeConfig.ips: %v", err)
		}
		return types.NewError(types.ErrInternal, "allocate an address on network "+n.Name, err.Error())
	}
	for _, p := range got {
		gw := n.Gateway.Addr()
		if p.Addr().Is6() {
			gw = n.Gateway6.Addr()
		}
		r.IPs = append(r.IPs, &current.IPConfig{
			Address: net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Gateway: gw.AsSlice(),
		})
	}
	if n.DHCP != nil { // dnsmasq on the bridge also answers DNS
		r.DNS.Nameservers = []string{n.Gateway.Addr().String()}
		if n.DHCP.Domain != "" {
			r.DNS.Domain = n.DHCP.Domain
		}
	}
	return nil
}

// checkGateway refuses an IPAM gateway inside the network that is not the
// network's own address: the containers' routes would lead nowhere.
func checkGateway(n *config.Network, r *current.Result) error {
	for _, ipc := range r.IPs {
		if ipc.Gateway == nil {
			continue
		}
		gw := mustAddr(ipc.Gateway)
		for _, p := range []netip.Prefix{n.Gateway, n.Gateway6} {
			if p.IsValid() && p.Masked().Contains(gw) && p.Addr() != gw {
				return errConfig("IPAM gateway %s is not network %s's address %s: set the IPAM range's gateway to %s", gw, n.Name, p.Addr(), p.Addr())
			}
		}
	}
	return nil
}

// hostVethName is the host end's name, derived from the container ID and
// interface only, so DEL and GC find it after the netns is gone.
func hostVethName(containerID, ifname string) string {
	h := sha256.Sum256([]byte(containerID + "\x00" + ifname))
	return "brv" + hex.EncodeToString(h[:])[:12]
}

func shapingOf(b *bandwidth) *config.PortShaping {
	if b == nil {
		return nil
	}
	sh := b.shaping()
	if sh.IsZero() {
		return nil
	}
	return &sh
}

// shaping is the capability in the shaper's terms (rates in bits/s, bursts in bytes).
func (b *bandwidth) shaping() config.PortShaping {
	return config.PortShaping{ToGuest: b.IngressRate, ToGuestBurst: b.IngressBurst / 8, FromGuest: b.EgressRate, FromGuestBurst: b.EgressBurst / 8}
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	if err := names.Interface(args.IfName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME", err.Error())
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for ADD", "")
	}
	cfg, n, adHoc, err := selectNetwork(c)
	if err != nil {
		return err
	}
	m := vnet.New(cfg)
	if !adHoc {
		if err := m.EnsureStarted(n); err != nil {
			return cniError("start network "+n.Name, err)
		}
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "open netns "+args.Netns, err.Error())
	}
	defer netns.Close()

	// The IPAM plugin runs while the veth is made: they do not depend on
	// each other, and the IPAM exec is the slowest step of an ADD.
	type ipamOut struct {
		r   types.Result
		err error
	}
	var ipamCh chan ipamOut
	builtin := c.builtinIPAM(adHoc)
	if c.IPAM.Type != "" {
		ipamCh = make(chan ipamOut, 1)
		go func() {
			r, err := ipam.ExecAdd(c.IPAM.Type, args.StdinData)
			ipamCh <- ipamOut{r, err}
		}()
	}
	hostName := hostVethName(args.ContainerID, args.IfName)
	var (
		ipamWaited bool
		recDone    bool
		vethDone   bool
		attached   bool
	)
	defer func() {
		if err == nil {
			return
		}
		if attached {
			_ = m.DetachPort(hostName)
		}
		if vethDone {
			_ = ip.DelLinkByName(hostName)
		}
		if recDone {
			_ = m.Records.Remove(attachmentName(hostName))
		}
		if ipamCh != nil {
			if !ipamWaited {
				<-ipamCh
			}
			// Whether or not its ADD failed: DEL of what was never
			// allocated succeeds.
			_ = ipam.ExecDel(c.IPAM.Type, args.StdinData)
		}
		if builtin {
			_ = m.Release(n.Name, hostName)
		}
	}()

	mtu := vnet.GuestMTU(n)
	if c.MTU != 0 {
		mtu = c.MTU
	}
	// If a stale host end with our name survives (an earlier ADD killed
	// midway), remove it first: the name is ours.
	if _, e := netlink.LinkByName(hostName); e == nil {
		_ = m.DetachPort(hostName)
		_ = ip.DelLinkByName(hostName)
	}
	// The record first, so GC finds a veth left by an ADD killed midway.
	rec := attachment{CNINetwork: c.Name, Network: n.Name, ContainerID: args.ContainerID, IfName: args.IfName}
	if err := m.Records.Write(attachmentName(hostName), &rec); err != nil {
		return cniError("record attachment "+hostName, err)
	}
	recDone = true
	hostIf, contIf, err := makeVeth(netns, args.IfName, hostName, mtu, c.mac)
	if err != nil {
		return err
	}
	vethDone = true

	result := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	result.Interfaces = []*current.Interface{
		{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String()},
		{Name: contIf.Name, Mac: contIf.HardwareAddr.String(), Sandbox: args.Netns},
	}
	if builtin {
		if err := allocate(m, n, c, hostName, result); err != nil {
			return err
		}
	} else if ipamCh != nil {
		out := <-ipamCh
		ipamWaited = true
		if out.err != nil {
			return out.err
		}
		ir, err := current.NewResultFromResult(out.r)
		if err != nil {
			return cniError("convert IPAM result", err)
		}
		if len(ir.IPs) == 0 {
			return types.NewError(types.ErrInternal, "IPAM plugin returned no IP configuration", "")
		}
		result.IPs, result.Routes, result.DNS = ir.IPs, ir.Routes, ir.DNS
	}
	if adHoc {
		if n, err = adHocNetwork(cfg, c, result); err != nil {
			return err
		}
		if err := m.EnsureStarted(n); err != nil {
			return cniError("start network "+n.Name, err)
		}
	} else if err := checkGateway(n, result); err != nil {
		return err
	}
	addDefaultRoutes(c, n, result)
	for _, ipc := range result.IPs {
		ipc.Interface = current.Int(1)
	}
	err = netns.Do(func(ns.NetNS) error {
		if len(result.IPs) > 0 {
			return ipam.ConfigureIface(args.IfName, result)
		}
		l, e := netlink.LinkByName(args.IfName)
		if e == nil {
			e = netlink.LinkSetUp(l)
		}
		return e
	})
	if err != nil {
		return cniError("configure "+args.IfName, err)
	}

	spec := vnet.PortRequest{
		Name:      hostName,
		GuestMAC:  contIf.HardwareAddr,
		Antispoof: c.Antispoof == nil || *c.Antispoof,
		Shaping:   shapingOf(c.RuntimeConfig.Bandwidth),
		MTU:       c.MTU,
		Owned:     true,
		Hairpin:   c.HairpinMode,
	}
	for _, ipc := range result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			spec.IPs = append(spec.IPs, a.Unmap())
		}
	}
	spec.Forwards = forwardsFor(c.mappings, spec.IPs)
	if len(c.mappings) > 0 && len(spec.Forwards) == 0 {
		return errConfig("portMappings: the container has no address of the mappings' family")
	}
	attached = true // Attach may leave partial state even when it fails
	if err := m.Attach(n, spec); err != nil {
		return cniError("attach "+hostName+" to "+n.Name, err)
	}
	if l, e := netlink.LinkByName(hostName); e == nil {
		result.Interfaces[0].Mac = l.Attrs().HardwareAddr.String()
	}
	return types.PrintResult(result, c.CNIVersion)
}

// makeVeth creates the veth pair from the host side, with the container end
// made directly in the container's namespace under its name (and MAC), and
// the host end left down: Attach turns its IPv6 off and brings it up on the
// bridge, so the host never gives it addresses or routes.
func makeVeth(netns ns.NetNS, ifName, hostName string, mtu int, mac net.HardwareAddr) (hostIf, contIf net.Interface, err error) {
	la := netlink.NewLinkAttrs()
	la.Name = hostName
	v := &netlink.Veth{LinkAttrs: la, PeerName: ifName, PeerNamespace: netlink.NsFd(int(netns.Fd())), PeerHardwareAddr: mac}
	if mtu > 0 {
		v.MTU, v.PeerMTU = mtu, uint32(mtu)
	}
	if err := netlink.LinkAdd(v); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return hostIf, contIf, types.NewError(types.ErrInternal, fmt.Sprintf("container interface %s already exists in %s", ifName, netns.Path()), err.Error())
		}
		return hostIf, contIf, cniError("create veth "+hostName+" / "+ifName, err)
	}
	hl, err := netlink.LinkByName(hostName)
	if err != nil {
		return hostIf, contIf, cniError("look up "+hostName, err)
	}
	err = netns.Do(func(ns.NetNS) error {
		cl, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		contIf = net.Interface{Index: cl.Attrs().Index, Name: ifName, MTU: cl.Attrs().MTU, HardwareAddr: cl.Attrs().HardwareAddr}
		return nil
	})
	if err != nil {
		return hostIf, contIf, cniError("look up "+ifName+" in "+netns.Path(), err)
	}
	a := hl.Attrs()
	return net.Interface{Index: a.Index, Name: hostName, MTU: a.MTU, HardwareAddr: a.HardwareAddr}, contIf, nil
}

// addDefaultRoutes adds a default route via the network's gateway (or the
// IPAM gateway) when IPAM gave none and isDefaultGateway is not false.
func addDefaultRoutes(c *netConf, n *config.Network, r *current.Result) {
	if c.IsDefaultGateway != nil && !*c.IsDefaultGateway {
		return
	}
	has4, has6 := false, false
	for _, rt := range r.Routes {
		if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
			if rt.Dst.IP.To4() != nil {
				has4 = true
			} else {
				has6 = true
			}
		}
	}
	for _, ipc := range r.IPs {
		v4 := ipc.Address.IP.To4() != nil
		gw := ipc.Gateway
		if gw == nil {
			if v4 && n.Gateway.IsValid() && n.Subnet.Contains(mustAddr(ipc.Address.IP)) {
				gw = net.IP(n.Gateway.Addr().AsSlice())
			} else if !v4 && n.Gateway6.IsValid() && n.Subnet6.Contains(mustAddr(ipc.Address.IP)) {
				gw = net.IP(n.Gateway6.Addr().AsSlice())
			}
		}
		if gw == nil {
			continue
		}
		if v4 && !has4 {
			r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw})
			has4 = true
		}
		if !v4 && !has6 {
			r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: gw})
			has6 = true
		}
	}
}

func mustAddr(b net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}

func cmdDel(args *skel.CmdArgs) error {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	cfg, err := loadHostConfig()
	if err != nil {
		return err
	}
	// The IPAM release runs while the port is taken apart: they are
	// independent, and both wait on exec or the kernel.
	ipamErr := make(chan error, 1)
	if c.IPAM.Type != "" {
		go func() { ipamErr <- ipam.ExecDel(c.IPAM.Type, args.StdinData) }()
	} else {
		ipamErr <- nil
	}
	hostName := hostVethName(args.ContainerID, args.IfName)
	var errs []error
	if names.Interface(args.IfName) == nil {
		m := vnet.New(cfg)
		if c.IPAM.Type == "" {
			if n, adHoc, err := selectIn(cfg, c); err == nil && c.builtinIPAM(adHoc) {
				if err := m.Release(n.Name, hostName); err != nil {
					errs = append(errs, cniError("release the addresses of "+hostName, err))
				}
			}
		}
		if err := m.DetachPort(hostName); err != nil {
			errs = append(errs, cniError("detach "+hostName, err))
		}
		// DetachPort deleted the veth if it had a record; an ADD killed
		// before its port record left it to us.
		if err := ip.DelLinkByName(hostName); err != nil && !errors.Is(err, ip.ErrLinkNotFound) {
			errs = append(errs, cniError("delete "+hostName, err))
		} else if len(errs) == 0 {
			if err := m.Records.Remove(attachmentName(hostName)); err != nil {
				errs = append(errs, cniError("remove attachment "+hostName, err))
			}
		}
	}
	if err := <-ipamErr; err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return errConfig("CHECK needs prevResult")
	}
	prev, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
	}
	cfg, n, adHoc, err := selectNetwork(c)
	if err != nil {
		return err
	}
	if c.builtinIPAM(adHoc) {
		got, err := vnet.New(cfg).Addresses(n, hostVethName(args.ContainerID, args.IfName))
		if err != nil {
			return cniError("addresses of "+args.ContainerID, err)
		}
		if len(got) == 0 {
			return types.NewError(types.ErrInternal, "no addresses allocated to container "+args.ContainerID+" on network "+n.Name, "")
		}
	}
	if c.IPAM.Type != "" {
		if err := ipam.ExecCheck(c.IPAM.Type, args.StdinData); err != nil {
			return err
		}
	}
	// The host end: recorded, up, on the bridge, its published ports in place.
	hostName := hostVethName(args.ContainerID, args.IfName)
	if err := vnet.New(cfg).CheckPort(n, hostName); err != nil {
		return types.NewError(types.ErrInternal, "container "+args.ContainerID+"'s port is not as ADD left it", err.Error())
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "open netns "+args.Netns, err.Error())
	}
	defer netns.Close()
	var contIdx = -1
	for i, itf := range prev.Interfaces {
		if itf.Name == args.IfName && itf.Sandbox != "" {
			contIdx = i
		}
	}
	if contIdx < 0 {
		return types.NewError(types.ErrInternal, "prevResult has no interface "+args.IfName, "")
	}
	var ips []*current.IPConfig
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface == contIdx {
			ips = append(ips, ipc)
		}
	}
	return netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return types.NewError(types.ErrInternal, "container interface "+args.IfName+" missing", err.Error())
		}
		if want := prev.Interfaces[contIdx].Mac; want != "" && l.Attrs().HardwareAddr.String() != want {
			return types.NewError(types.ErrInternal, fmt.Sprintf("%s: MAC %s, want %s", args.IfName, l.Attrs().HardwareAddr, want), "")
		}
		if err := ip.ValidateExpectedInterfaceIPs(args.IfName, ips); err != nil {
			return types.NewError(types.ErrInternal, "container addresses", err.Error())
		}
		return nil
	})
}

func cmdStatus(args *skel.CmdArgs) error {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	_, n, adHoc, err := selectNetwork(c)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "brouter network not available", err.Error())
	}
	if c.builtinIPAM(adHoc) && !n.Subnet.IsValid() && !n.Subnet6.IsValid() {
		return types.NewError(types.ErrPluginNotAvailable, "network "+n.Name+" has no addresses to give containers", "give it an address in the host config, or an ipam plugin in the CNI config")
	}
	if c.IPAM.Type != "" {
		return ipam.ExecStatus(c.IPAM.Type, args.StdinData)
	}
	return nil
}

// attachment is brouter's CNI record of one attachment, run_dir/cni.d/<host
// veth>.json: which CNI network (conflist name) and brouter network it
// belongs to, so GC of one CNI network never touches another's containers on
// the same brouter network. ("cni.d" cannot collide with a network's own
// run_dir entry: network names have no dot.)
type attachment struct {
	CNINetwork  string `json:"cni_network"`
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
}

func attachmentName(hostName string) string { return "cni.d/" + hostName + ".json" }

// cmdGC removes every attachment of this CNI network that is not in
// cni.dev/valid-attachments: its port (antispoof, shaping, bridge), its host
// veth and its records; then it delegates GC to the IPAM plugin, which gets
// the same valid attachments.
func cmdGC(args *skel.CmdArgs) error {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	cfg, n, adHoc, err := selectNetwork(c)
	if err != nil {
		return err
	}
	m := vnet.New(cfg)
	valid := map[string]bool{}
	for _, a := range c.ValidAttachments {
		valid[hostVethName(a.ContainerID, a.IfName)] = true
	}
	// Candidates: the network's CNI ports, and this CNI network's records
	// (an ADD killed before it attached leaves a record and maybe a veth).
	cands := map[string]bool{}
	ports, err := m.Ports(n.Name)
	if err != nil {
		return cniError("list ports of "+n.Name, err)
	}
	for _, p := range ports {
		if isCNIPort(p) {
			cands[p] = true
		}
	}
	recs, err := m.Records.List("cni.d")
	if err != nil {
		return cniError("list CNI attachments", err)
	}
	for _, f := range recs {
		if p, ok := strings.CutSuffix(f, ".json"); ok && isCNIPort(p) {
			cands[p] = true
		}
	}
	var errs []error
	for p := range cands {
		if valid[p] {
			continue
		}
		var rec attachment
		had, err := m.Records.Read(attachmentName(p), &rec)
		if err != nil {
			errs = append(errs, cniError("read attachment "+p, err))
			continue
		}
		if had && (rec.CNINetwork != c.Name || rec.Network != n.Name) {
			continue // another CNI network's container
		}
		if err := m.DetachPort(p); err != nil {
			errs = append(errs, cniError("detach "+p, err))
			continue
		}
		if err := ip.DelLinkByName(p); err != nil && !errors.Is(err, ip.ErrLinkNotFound) {
			errs = append(errs, cniError("delete "+p, err))
			continue
		}
		// IPAM plugins without GC (host-local up to at least v1.9) keep the
		// address: release it with a DEL for the attachment, which is
		// idempotent for those that do implement GC.
		if had && c.IPAM.Type != "" {
			if err := ipamRelease(args, c.IPAM.Type, rec); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := m.Records.Remove(attachmentName(p)); err != nil {
			errs = append(errs, cniError("remove attachment "+p, err))
		}
	}
	if c.builtinIPAM(adHoc) {
		// Addresses of attachments that are gone (an ADD killed before its
		// record, or a record lost) are released too.
		owners, err := m.Owners(n.Name)
		if err != nil {
			errs = append(errs, cniError("list addresses of "+n.Name, err))
		}
		for _, o := range owners {
			var rec attachment
			had, _ := m.Records.Read(attachmentName(o), &rec)
			if !isCNIPort(o) || valid[o] || had && rec.CNINetwork != c.Name {
				continue
			}
			if err := m.Release(n.Name, o); err != nil {
				errs = append(errs, cniError("release the addresses of "+o, err))
			}
		}
	}
	if c.IPAM.Type != "" {
		if err := invoke.DelegateGC(context.TODO(), c.IPAM.Type, args.StdinData, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// ipamRelease runs the IPAM plugin's DEL for a recorded attachment (no
// netns: DEL needs none).
func ipamRelease(args *skel.CmdArgs, plugin string, rec attachment) error {
	path, err := invoke.FindInPath(plugin, filepath.SplitList(args.Path))
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "IPAM plugin "+plugin, err.Error())
	}
	return invoke.ExecPluginWithoutResult(context.TODO(), path, args.StdinData, &invoke.Args{
		Command:     "DEL",
		ContainerID: rec.ContainerID,
		IfName:      rec.IfName,
		Path:        args.Path,
	}, nil)
}

// isCNIPort reports whether a port name is one hostVethName makes.
func isCNIPort(name string) bool {
	rest, ok := strings.CutPrefix(name, "brv")
	if !ok || len(rest) != 12 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil
}
