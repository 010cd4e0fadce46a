package main

import (
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/vnet"
)

// checkEnv refuses, before anything changes, a bad CNI_IFNAME and a
// CNI_NETNS that is missing or names the plugin's own (the host's)
// namespace: code 4, a bad environment variable.
func checkEnv(args *skel.CmdArgs) error {
	if err := names.Interface(args.IfName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME", err.Error())
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required", "")
	}
	if same, err := link.SameNetns(args.Netns); err != nil || same {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS "+args.Netns+" is the plugin's own network namespace (the host's), not a container's", "")
	}
	return nil
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	c, err := loadConf(args)
	if err == nil {
		err = checkEnv(args)
	}
	if err != nil {
		return err
	}
	m, n, adHoc, err := selectNetwork(c)
	if err == nil && !adHoc {
		err = cniError("start network "+n.Name, m.EnsureStarted(n))
	}
	if err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "open netns "+args.Netns, err.Error())
	}
	defer netns.Close()
	ipamAdd := startIPAM(c, args)
	var port *vnet.OwnedPort
	defer func() {
		if err != nil && port != nil {
			_ = port.Abort()
		}
		if err != nil && ipamAdd != nil {
			_, _ = ipamAdd()
			_ = ipam.ExecDel(c.IPAM.Type, args.StdinData) // of what may never have been allocated: fine
		}
	}()
	port, err = m.BeginOwned(vnet.Attachment{Scope: scope(c), ID: attachmentID(args.ContainerID, args.IfName),
		Network: n.Name, Port: hostVethName(args.ContainerID, args.IfName)})
	if err != nil {
		return cniError("record the attachment", err)
	}
	r, ends, err := makeVeth(c, args, n, port, netns)
	if err == nil {
		err = addresses(c, n, port, ipamAdd, r)
	}
	if err != nil {
		return err
	}
	addrs := guestAddrs(r)
	name := n.Name
	if n, err = m.GuestNetwork(n, c.request(), adHoc, addrs); err != nil {
		return cniError("network "+name, err)
	}
	addDefaultRoutes(c, n, addrs, r)
	p, err := portRequest(c, ends, addrs)
	if err != nil {
		return err
	}
	// The host end joins first, guarded: the container's interface then
	// comes up with a carrier, and its IPv6 addresses finish duplicate
	// address detection at once instead of waiting out the library's timeout.
	if err := port.Attach(n, p); err != nil {
		return cniError("attach "+port.Name()+" to "+n.Name, err)
	}
	if err := netns.Do(func(ns.NetNS) error { return configure(args.IfName, r, c.EnableDad) }); err != nil {
		return cniError("configure "+args.IfName, err)
	}
	return types.PrintResult(r, c.CNIVersion)
}

// startIPAM runs the IPAM plugin's ADD while the veth is made (they do not
// depend on each other, and its exec is the slowest step of an ADD), and
// returns what waits for it; nil without an IPAM plugin.
func startIPAM(c *netConf, args *skel.CmdArgs) func() (types.Result, error) {
	if c.IPAM.Type == "" {
		return nil
	}
	ch := make(chan error, 1)
	var res types.Result
	go func() { r, err := ipam.ExecAdd(c.IPAM.Type, args.StdinData); res = r; ch <- err }()
	return sync.OnceValues(func() (types.Result, error) { err := <-ch; return res, err })
}

// makeVeth makes the port as the host end of the container's veth, and the
// result with both ends.
func makeVeth(c *netConf, args *skel.CmdArgs, n *config.Network, port *vnet.OwnedPort, netns ns.NetNS) (*current.Result, link.VethEnds, error) {
	spec := link.VethSpec{PeerName: args.IfName, PeerMAC: c.mac, PeerNetns: int(netns.Fd()), MTU: vnet.GuestMTU(n)}
	if c.MTU != 0 {
		spec.MTU = c.MTU
	}
	ends, err := port.CreateVeth(spec)
	if errors.Is(err, link.ErrExists) {
		return nil, ends, types.NewError(types.ErrInternal, "container interface "+args.IfName+" already exists in "+args.Netns, err.Error())
	} else if err != nil {
		return nil, ends, cniError("create the veth", err)
	}
	return &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{
		{Name: ends.Host.Name, Mac: ends.Host.HardwareAddr.String()},
		{Name: args.IfName, Mac: ends.Peer.HardwareAddr.String(), Sandbox: args.Netns},
	}}, ends, nil
}

// addresses puts the container's addresses in r: from brouter's own
// allocator, or the IPAM plugin's.
func addresses(c *netConf, n *config.Network, port *vnet.OwnedPort, ipamAdd func() (types.Result, error), r *current.Result) error {
	if ipamAdd == nil {
		return allocate(c, n, port, r)
	}
	res, err := ipamAdd()
	if err != nil {
		return err
	}
	return ipamResult(res, r)
}

// portRequest is the host end's attachment: the container's MAC and
// addresses (antispoof unless the config turns it off), its bandwidth and
// published ports.
func portRequest(c *netConf, ends link.VethEnds, addrs []vnet.GuestAddr) (vnet.PortRequest, error) {
	p := vnet.PortRequest{GuestMAC: ends.Peer.HardwareAddr, Antispoof: c.Antispoof == nil || *c.Antispoof, MTU: c.MTU, Hairpin: c.HairpinMode}
	if b := c.RuntimeConfig.Bandwidth; b != nil && !b.shaping().IsZero() {
		sh := b.shaping()
		p.Shaping = &sh
	}
	for _, a := range addrs {
		p.IPs = append(p.IPs, a.Prefix.Addr())
	}
	if p.Forwards = vnet.ForwardsFor(c.mappings, p.IPs); len(c.mappings) > 0 && len(p.Forwards) == 0 {
		return p, types.NewError(types.ErrInvalidNetworkConfig, "portMappings: the container has no address of the mappings' family", "")
	}
	return p, nil
}

// allocate gives the attachment its addresses from brouter's own allocator
// (the "ips" capability asks for specific ones), with the network's
// gateway and DNS.
func allocate(c *netConf, n *config.Network, port *vnet.OwnedPort, r *current.Result) error {
	got, err := port.Allocate(n, c.ips)
	if err != nil && len(c.ips) > 0 {
		return errConfig("runtimeConfig.ips", err)
	} else if err != nil {
		return cniError("allocate an address on network "+n.Name, err)
	}
	for _, a := range got {
		r.IPs = append(r.IPs, &current.IPConfig{Address: *prefixNet(a.Prefix), Gateway: a.Gateway.AsSlice()})
	}
	if dns, domain := vnet.GuestDNS(n); dns.IsValid() {
		r.DNS.Nameservers, r.DNS.Domain = []string{dns.String()}, domain
	}
	return nil
}

// ipamResult puts the IPAM plugin's addresses, routes and DNS in r.
func ipamResult(res types.Result, r *current.Result) error {
	ir, err := current.NewResultFromResult(res)
	if err != nil {
		return cniError("convert IPAM result", err)
	}
	if len(ir.IPs) == 0 {
		return types.NewError(types.ErrInternal, "IPAM plugin returned no IP configuration", "")
	}
	r.IPs, r.Routes, r.DNS = ir.IPs, ir.Routes, ir.DNS
	return nil
}

// configure gives the container's interface the result's addresses and
// routes (in the container's namespace), or only sets it up. Without dad,
// as the reference bridge plugin does by default, its IPv6 addresses skip
// duplicate address detection (IPAM made them unique): they are usable at
// once instead of a second or more later.
func configure(ifName string, r *current.Result, dad bool) error {
	if !dad {
		if err := link.SkipDAD(ifName); err != nil {
			return err
		}
	}
	if len(r.IPs) > 0 {
		return ipam.ConfigureIface(ifName, r)
	}
	_, err := link.Configure(ifName, 0, nil)
	return err
}

// guestAddrs are the result's addresses, in vnet's terms; they are the
// container interface's (index 1).
func guestAddrs(r *current.Result) []vnet.GuestAddr {
	var out []vnet.GuestAddr
	for _, ipc := range r.IPs {
		ipc.Interface = current.Int(1)
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		gw, _ := netip.AddrFromSlice(ipc.Gateway)
		ones, _ := ipc.Address.Mask.Size()
		out = append(out, vnet.GuestAddr{Prefix: netip.PrefixFrom(a.Unmap(), ones), Gateway: gw.Unmap()})
	}
	return out
}

// addDefaultRoutes adds the default routes vnet gives the guest, unless
// isDefaultGateway is false.
func addDefaultRoutes(c *netConf, n *config.Network, addrs []vnet.GuestAddr, r *current.Result) {
	if c.IsDefaultGateway != nil && !*c.IsDefaultGateway {
		return
	}
	has := map[bool]bool{} // by "is IPv4"
	for _, rt := range r.Routes {
		if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
			has[rt.Dst.IP.To4() != nil] = true
		}
	}
	for _, gw := range vnet.DefaultGateways(n, addrs, has[true], has[false]) {
		dst := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		if gw.Is4() {
			dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
		r.Routes = append(r.Routes, &types.Route{Dst: *prefixNet(dst), GW: gw.AsSlice()})
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
