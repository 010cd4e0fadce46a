package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/vnet"
)

// cmdDel undoes an attachment from whatever state ADD left it in (also
// with the netns gone or CNI_NETNS empty). The IPAM release runs while the
// port is taken apart: both wait on exec or the kernel.
func cmdDel(args *skel.CmdArgs) error {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	m, err := manager()
	if err != nil {
		return err
	}
	ipamErr := make(chan error, 1)
	if c.IPAM.Type != "" {
		go func() { ipamErr <- ipam.ExecDel(c.IPAM.Type, args.StdinData) }()
	} else {
		ipamErr <- nil
	}
	if names.Interface(args.IfName) == nil {
		network := "" // where brouter's allocator may have given addresses, if no record says
		if n, _, err := m.SelectNetwork(c.request()); err == nil {
			network = n.Name
		}
		err = cniError("detach container "+args.ContainerID, m.DetachOwned(hostVethName(args.ContainerID, args.IfName), network))
	}
	if ierr := <-ipamErr; err == nil {
		err = ierr
	}
	return err
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "")
	}
	prev, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
	}
	if err := checkEnv(args); err != nil {
		return err
	}
	m, n, adHoc, err := selectNetwork(c)
	if err != nil {
		return err
	}
	hostName := hostVethName(args.ContainerID, args.IfName)
	if c.builtinIPAM(adHoc) {
		if got, err := m.Addresses(n, hostName); err != nil || len(got) == 0 {
			return types.NewError(types.ErrInternal, "no addresses allocated to container "+args.ContainerID+" on network "+n.Name, fmt.Sprint(err))
		}
	} else if c.IPAM.Type != "" {
		if err := ipam.ExecCheck(c.IPAM.Type, args.StdinData); err != nil {
			return err
		}
	}
	// The host end: recorded, up, on the bridge, its published ports in place.
	if err := m.CheckPort(n, hostName); err != nil {
		return types.NewError(types.ErrInternal, "container "+args.ContainerID+"'s port is not as ADD left it", err.Error())
	}
	contIdx := -1
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
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "open netns "+args.Netns, err.Error())
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error {
		l, err := link.Get(args.IfName)
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

// cmdGC removes every attachment of this CNI network that is not in
// cni.dev/valid-attachments (vnet's GCOwned: its port, veth, addresses and
// record), releasing the addresses of each with the IPAM plugin (whose own
// GC may not exist: host-local has none up to at least v1.9; a DEL is
// idempotent for those that do), then delegates GC to the IPAM plugin,
// which gets the same valid attachments.
func cmdGC(args *skel.CmdArgs) error {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	m, n, _, err := selectNetwork(c)
	if err != nil {
		return err
	}
	valid := map[string]string{}
	for _, a := range c.ValidAttachments {
		valid[attachmentID(a.ContainerID, a.IfName)] = hostVethName(a.ContainerID, a.IfName)
	}
	gc := vnet.OwnedGC{Scope: scope(c), Network: n.Name, Valid: valid, Mine: isCNIPort}
	if c.IPAM.Type != "" {
		gc.Release = func(a vnet.Attachment) error { return ipamRelease(args, c.IPAM.Type, a.ID) }
	}
	err = cniError("GC of CNI network "+c.Name, m.GCOwned(gc))
	if c.IPAM.Type != "" {
		if gerr := invoke.DelegateGC(context.TODO(), c.IPAM.Type, args.StdinData, nil); err == nil {
			err = gerr
		}
	}
	return err
}

// ipamRelease runs the IPAM plugin's DEL for an attachment's ID (no netns:
// DEL needs none).
func ipamRelease(args *skel.CmdArgs, plugin, id string) error {
	i := strings.LastIndexByte(id, '/')
	path, err := invoke.FindInPath(plugin, filepath.SplitList(args.Path))
	if err != nil || i < 0 {
		return types.NewError(types.ErrInvalidNetworkConfig, "IPAM plugin "+plugin+" for "+id, fmt.Sprint(err))
	}
	return invoke.ExecPluginWithoutResult(context.TODO(), path, args.StdinData, &invoke.Args{
		Command: "DEL", ContainerID: id[:i], IfName: id[i+1:], Path: args.Path}, nil)
}
