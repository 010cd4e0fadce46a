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
	"strings"

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

// netConf is the plugin's stdin config.
type netConf struct {
	types.NetConf
	Network          string `json:"network,omitempty"`
	Bridge           string `json:"bridge,omitempty"`
	IsGateway        bool   `json:"isGateway,omitempty"`
	IsDefaultGateway *bool  `json:"isDefaultGateway,omitempty"`
	IPMasq           *bool  `json:"ipMasq,omitempty"`
	MTU              int    `json:"mtu,omitempty"`
	Antispoof        *bool  `json:"antispoof,omitempty"`
	RuntimeConfig    struct {
		Mac       string     `json:"mac,omitempty"`
		IPs       []string   `json:"ips,omitempty"`
		Bandwidth *bandwidth `json:"bandwidth,omitempty"`
	} `json:"runtimeConfig,omitempty"`
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
// right code: 11 (try again later) for a lock held too long, else 999.
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
		if err := config.ValidIfname(c.Bridge); err != nil {
			return nil, errConfig("bridge: %v", err)
		}
	}
	if c.MTU < 0 || c.MTU > 65535 {
		return nil, errConfig("mtu %d out of range", c.MTU)
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse prevResult", err.Error())
	}
	return c, nil
}

// selectNetwork loads the host TOML and picks the network the CNI config means.
func selectNetwork(c *netConf) (*config.Config, *config.Network, error) {
	cfg, err := config.Load("")
	if err != nil {
		return nil, nil, errConfig("host config: %v", err)
	}
	spec := &config.NetworkSpec{}
	if c.Bridge != "" {
		b := c.Bridge
		spec.Bridge = &b
	}
	if c.MTU != 0 {
		m := c.MTU
		spec.MTU = &m
	}
	n, err := cfg.Select(c.Network, spec)
	if err != nil {
		return nil, nil, errConfig("%v", err)
	}
	return cfg, n, nil
}

// hostVethName is the host end's name, derived from the container ID and
// interface only, so DEL and GC find it after the netns is gone.
func hostVethName(containerID, ifname string) string {
	h := sha256.Sum256([]byte(containerID + "\x00" + ifname))
	return "brv" + hex.EncodeToString(h[:])[:12]
}

func shapingOf(b *bandwidth) *config.PortShaping {
	if b == nil || (b.IngressRate == 0 && b.EgressRate == 0) {
		return nil
	}
	return &config.PortShaping{
		ToGuest:        b.IngressRate,
		ToGuestBurst:   b.IngressBurst / 8,
		FromGuest:      b.EgressRate,
		FromGuestBurst: b.EgressBurst / 8,
	}
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	c, err := loadConf(args)
	if err != nil {
		return err
	}
	if err := config.ValidIfname(args.IfName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME", err.Error())
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for ADD", "")
	}
	cfg, n, err := selectNetwork(c)
	if err != nil {
		return err
	}
	if n.Mode == config.ModeRoute {
		return errConfig("network %s: mode route is not supported by the CNI plugin yet", n.Name)
	}
	m := vnet.New(cfg)
	if err := m.EnsureStarted(n); err != nil {
		return cniError("start network "+n.Name, err)
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "open netns "+args.Netns, err.Error())
	}
	defer netns.Close()

	hostName := hostVethName(args.ContainerID, args.IfName)
	var (
		ipamDone bool
		recDone  bool
		vethDone bool
		attached bool
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
			_ = m.Run.Remove(attachmentName(hostName))
		}
		if ipamDone {
			_ = ipam.ExecDel(c.IPAM.Type, args.StdinData)
		}
	}()

	result := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if c.IPAM.Type != "" {
		r, err := ipam.ExecAdd(c.IPAM.Type, args.StdinData)
		if err != nil {
			return err
		}
		ipamDone = true
		ir, err := current.NewResultFromResult(r)
		if err != nil {
			return cniError("convert IPAM result", err)
		}
		if len(ir.IPs) == 0 {
			return types.NewError(types.ErrInternal, "IPAM plugin returned no IP configuration", "")
		}
		result.IPs, result.Routes, result.DNS = ir.IPs, ir.Routes, ir.DNS
	}
	addDefaultRoutes(c, n, result)

	mtu := n.MTU
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
	if err := m.Run.Write(attachmentName(hostName), &rec); err != nil {
		return cniError("record attachment "+hostName, err)
	}
	recDone = true
	var hostIf, contIf net.Interface
	err = netns.Do(func(hostNS ns.NetNS) error {
		var e error
		hostIf, contIf, e = ip.SetupVethWithName(args.IfName, hostName, mtu, c.RuntimeConfig.Mac, hostNS)
		if e != nil {
			return e
		}
		vethDone = true
		result.Interfaces = []*current.Interface{
			{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String()},
			{Name: contIf.Name, Mac: contIf.HardwareAddr.String(), Sandbox: args.Netns},
		}
		for _, ipc := range result.IPs {
			ipc.Interface = current.Int(1)
		}
		if len(result.IPs) > 0 {
			if e := ipam.ConfigureIface(args.IfName, result); e != nil {
				return e
			}
		} else if l, e := netlink.LinkByName(args.IfName); e == nil {
			_ = netlink.LinkSetUp(l)
		}
		return nil
	})
	if err != nil {
		return cniError("set up veth "+args.IfName, err)
	}

	spec := vnet.PortSpec{
		Name:      hostName,
		GuestMAC:  contIf.HardwareAddr,
		Antispoof: c.Antispoof == nil || *c.Antispoof,
		Shaping:   shapingOf(c.RuntimeConfig.Bandwidth),
		MTU:       c.MTU,
	}
	for _, ipc := range result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			spec.IPs = append(spec.IPs, a.Unmap())
		}
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
	cfg, err := config.Load("")
	if err != nil {
		return errConfig("host config: %v", err)
	}
	hostName := hostVethName(args.ContainerID, args.IfName)
	var errs []error
	if config.ValidIfname(args.IfName) == nil {
		m := vnet.New(cfg)
		if err := m.DetachPort(hostName); err != nil {
			errs = append(errs, cniError("detach "+hostName, err))
		}
		if err := ip.DelLinkByName(hostName); err != nil && !errors.Is(err, ip.ErrLinkNotFound) {
			errs = append(errs, cniError("delete "+hostName, err))
		} else if err := m.Run.Remove(attachmentName(hostName)); err != nil {
			errs = append(errs, cniError("remove attachment "+hostName, err))
		}
	}
	if c.IPAM.Type != "" {
		if err := ipam.ExecDel(c.IPAM.Type, args.StdinData); err != nil {
			errs = append(errs, err)
		}
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
	_, n, err := selectNetwork(c)
	if err != nil {
		return err
	}
	if c.IPAM.Type != "" {
		if err := ipam.ExecCheck(c.IPAM.Type, args.StdinData); err != nil {
			return err
		}
	}
	hostName := hostVethName(args.ContainerID, args.IfName)
	hl, err := netlink.LinkByName(hostName)
	if err != nil {
		return types.NewError(types.ErrInternal, "host veth "+hostName+" missing", err.Error())
	}
	if n.Mode != config.ModeRoute {
		br, err := netlink.LinkByName(n.Bridge)
		if err != nil {
			return types.NewError(types.ErrInternal, "bridge "+n.Bridge+" missing", err.Error())
		}
		if hl.Attrs().MasterIndex != br.Attrs().Index {
			return types.NewError(types.ErrInternal, fmt.Sprintf("host veth %s is not on bridge %s", hostName, n.Bridge), "")
		}
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
	if _, _, err := selectNetwork(c); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "brouter network not available", err.Error())
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
	cfg, n, err := selectNetwork(c)
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
	recs, err := m.Run.List("cni.d")
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
		had, err := m.Run.Read(attachmentName(p), &rec)
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
		if err := m.Run.Remove(attachmentName(p)); err != nil {
			errs = append(errs, cniError("remove attachment "+p, err))
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
