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
	// The IPAM plugin runs while the veth is made: they do not depend on
	// each other, and its exec is the slowest step of an ADD.
	var ipamAdd func() (types.Result, error) // waits for the IPAM plugin's ADD
	if c.IPAM.Type != "" {
		ch := make(chan error, 1)
		var res types.Result
		go func() { r, err := ipam.ExecAdd(c.IPAM.Type, args.StdinData); res = r; ch <- err }()
		ipamAdd = sync.OnceValues(func() (types.Result, error) { err := <-ch; return res, err })
	}
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
	spec := link.VethSpec{PeerName: args.IfName, PeerMAC: c.mac, PeerNetns: int(netns.Fd()), MTU: n.MTU}
	if c.MTU != 0 {
		spec.MTU = c.MTU
	}
	ends, err := port.CreateVeth(spec)
	if errors.Is(err, link.ErrExists) {
		return types.NewError(types.ErrInternal, "container interface "+args.IfName+" already exists in "+args.Netns, err.Error())
	} else if err != nil {
		return cniError("create the veth", err)
	}
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{
		{Name: ends.Host.Name, Mac: ends.Host.HardwareAddr.String()},
		{Name: args.IfName, Mac: ends.Peer.HardwareAddr.String(), Sandbox: args.Netns},
	}}
	if ipamAdd == nil {
		err = allocate(c, n, port, r)
	} else if res, ierr := ipamAdd(); ierr != nil {
		err = ierr
	} else {
		err = ipamResult(res, r)
	}
	if err != nil {
		return err
	}
	var gws []netip.Prefix
	for _, ipc := range r.IPs {
		ones, _ := ipc.Address.Mask.Size()
		if gw, ok := netip.AddrFromSlice(ipc.Gateway); ok {
			gws = append(gws, netip.PrefixFrom(gw.Unmap(), ones))
		}
		ipc.Interface = current.Int(1)
	}
	name := n.Name
	if n, err = m.GuestNetwork(n, c.request(), adHoc, gws); err != nil {
		return cniError("network "+name, err)
	}
	addDefaultRoutes(c, n, r)
	if err := netns.Do(func(ns.NetNS) error { return configure(args.IfName, r) }); err != nil {
		return cniError("configure "+args.IfName, err)
	}
	p := vnet.PortRequest{GuestMAC: ends.Peer.HardwareAddr, Antispoof: c.Antispoof == nil || *c.Antispoof, MTU: c.MTU, Hairpin: c.HairpinMode}
	if b := c.RuntimeConfig.Bandwidth; b != nil && !b.shaping().IsZero() {
		sh := b.shaping()
		p.Shaping = &sh
	}
	for _, ipc := range r.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		p.IPs = append(p.IPs, a.Unmap())
	}
	if p.Forwards = vnet.ForwardsFor(c.mappings, p.IPs); len(c.mappings) > 0 && len(p.Forwards) == 0 {
		return types.NewError(types.ErrInvalidNetworkConfig, "portMappings: the container has no address of the mappings' family", "")
	}
	if err := port.Attach(n, p); err != nil {
		return cniError("attach "+port.Name()+" to "+n.Name, err)
	}
	return types.PrintResult(r, c.CNIVersion)
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
	for _, p := range got {
		r.IPs = append(r.IPs, &current.IPConfig{Address: *prefixNet(p), Gateway: vnet.GatewayFor(n, p.Addr()).AsSlice()})
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
// routes (in the container's namespace), or only sets it up.
func configure(ifName string, r *current.Result) error {
	if len(r.IPs) > 0 {
		return ipam.ConfigureIface(ifName, r)
	}
	_, err := link.Configure(ifName, 0, nil)
	return err
}

// addDefaultRoutes adds a default route via the address's gateway (the
// IPAM one, else the network's) when IPAM gave none and isDefaultGateway is
// not false.
func addDefaultRoutes(c *netConf, n *config.Network, r *current.Result) {
	if c.IsDefaultGateway != nil && !*c.IsDefaultGateway {
		return
	}
	has := map[bool]bool{} // by "is IPv4"
	for _, rt := range r.Routes {
		if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
			has[rt.Dst.IP.To4() != nil] = true
		}
	}
	for _, ipc := range r.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		gw, _ := netip.AddrFromSlice(ipc.Gateway)
		if !gw.IsValid() {
			gw = vnet.GatewayFor(n, a.Unmap())
		}
		if v4 := a.Unmap().Is4(); gw.IsValid() && !has[v4] {
			dst := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			if v4 {
				dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			}
			r.Routes = append(r.Routes, &types.Route{Dst: *prefixNet(dst), GW: gw.Unmap().AsSlice()})
			has[v4] = true
		}
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
