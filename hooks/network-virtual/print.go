package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/brouter/brouter/shared/vnet"
)

// What network-virtual prints: status as text, and JSON.

func networksCount(n int) string {
	if n == 1 {
		return "1 network"
	}
	return strconv.Itoa(n) + " networks"
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func printStatus(w io.Writer, st *vnet.Status) {
	state := "not running"
	if st.Running {
		state = "running"
	}
	fmt.Fprintf(w, "network %s: %s\n", st.Network, state)
	fmt.Fprintf(w, "  bridge:   %s", st.Bridge)
	if st.CreatedBridge {
		fmt.Fprint(w, " (created by brouter)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  mode:     %s\n", st.Mode)
	if st.Address != "" {
		fmt.Fprintf(w, "  address:  %s\n", st.Address)
	}
	if st.Address6 != "" {
		fmt.Fprintf(w, "  address6: %s\n", st.Address6)
	}
	if st.Backend != "" {
		fmt.Fprintf(w, "  firewall: %s, %d rules\n", st.Backend, len(st.Firewall))
	}
	if !st.Running {
		return
	}
	fmt.Fprintf(w, "  ports:    %d\n", len(st.Ports))
	for _, p := range st.Ports {
		fmt.Fprintf(w, "    %-15s %s mtu %d %s\n", p.Name, p.MAC, p.MTU, p.State)
		if p.ToGuest != "" || p.FromGuest != "" {
			fmt.Fprintf(w, "      shaping: to guest %s; from guest %s; priority %s\n", p.ToGuest, p.FromGuest, p.Priority)
		}
	}
	fmt.Fprintln(w, "  routes:")
	for _, r := range st.Routes {
		fmt.Fprintf(w, "    %s\n", r)
	}
	if len(st.Firewall) > 0 {
		fmt.Fprintln(w, "  rules:")
		for _, r := range st.Firewall {
			fmt.Fprintf(w, "    %s\n", r)
		}
	}
	if st.DHCP != nil {
		state := "not running"
		if st.DHCP.Running {
			state = fmt.Sprintf("running (dnsmasq pid %d)", st.DHCP.PID)
		}
		fmt.Fprintf(w, "  dhcp:     %s, %d leases\n", state, len(st.DHCP.Leases))
		for _, l := range st.DHCP.Leases {
			exp := "never"
			if !l.Expiry.IsZero() {
				exp = l.Expiry.Local().Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(w, "    %-15s %s %-20s expires %s\n", l.IP, l.MAC, l.Hostname, exp)
		}
	}
	if o := st.Overlay; o != nil {
		fmt.Fprintf(w, "  overlay:  %s vni %d, gateway %s, encrypt %s, peers %s\n", o.Device, o.VNI, o.Gateway, o.Encrypt, strings.Join(o.Peers, " "))
		if o.WireGuard != "" {
			fmt.Fprintf(w, "    wireguard: %s\n", o.WireGuard)
		}
	}
	for _, p := range st.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	for _, p := range st.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", p)
	}
}
