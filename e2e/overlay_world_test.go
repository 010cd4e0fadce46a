package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/crypto/curve25519"

	"github.com/brouter/brouter/shared/nstest"
)

// An overlay world: "host" namespaces joined by an underlay, each running
// network-virtual with its own config, for networks that span hosts.
//
//	underlay (ns ul): bridge br0 198.51.100.254/24, which is also "the outside"
//	hostN: eth0 198.51.100.N/24 on br0, network lab on brlab (10.98.98.1/24)
//	  vmN   netns behind veth vqN, attached by qemu-ifup; 10.98.98.1N, MAC 02:00:00:00:0N:01,
//	        known to a [[port]] rule (antispoof)
//	  dhcpN netns behind veth vdN, attached by qemu-ifup, MAC unknown to brouter; DHCP
//	  ctrN  a CNI container (brouter's own allocator)
const (
	ulOutside = "198.51.100.254"
	ovVNI     = 4242
)

type ovHost struct {
	*world
	n        int
	addr     string // underlay address
	backend  string
	cni      *libcni.CNIConfig
	cniList  *libcni.NetworkConfigList
	vm, dhcp *nstest.NS
	ctr      *nstest.NS
	ctrRT    *libcni.RuntimeConf
	ctrIP    string
	dhcpIP   string
	keyFile  string
	pubKey   string
}

type ovWorld struct {
	t     *testing.T
	ul    *nstest.NS
	hosts []*ovHost
}

func vmIP(n int) string  { return fmt.Sprintf("10.98.98.1%d", n) }
func vmMAC(n int) string { return fmt.Sprintf("02:00:00:00:0%d:01", n) }

// newOvWorld makes the underlay and one host per backend (no network yet).
func newOvWorld(t *testing.T, backends ...string) *ovWorld {
	t.Helper()
	ow := &ovWorld{t: t, ul: nstest.New(t, "ul")}
	ow.ul.Exec(t, "ip", "link", "add", "br0", "type", "bridge")
	ow.ul.Exec(t, "ip", "link", "set", "br0", "up")
	ow.ul.Exec(t, "ip", "addr", "add", ulOutside+"/24", "dev", "br0")
	counters, rules := "", ""
	for i := range backends {
		counters += fmt.Sprintf("\tcounter from_h%d { }\n", i+1)
		rules += fmt.Sprintf("\t\tip saddr 198.51.100.%d icmp type echo-request counter name from_h%d\n", i+1, i+1)
	}
	cmd := ow.ul.Cmd("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("table inet e2e-observe {\n%s\tcounter from_guests { }\n\tchain in {\n\t\ttype filter hook input priority 0; policy accept;\n%s\t\tip saddr 10.98.98.0/24 counter name from_guests\n\t}\n}\n", counters, rules))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ul: nft: %v: %s", err, out)
	}
	binary(t, "brouter-wg") // next to network-virtual, where vnet looks for it
	for i, b := range backends {
		h := &ovHost{world: newWorld(t, worldOpts{}), n: i + 1, addr: fmt.Sprintf("198.51.100.%d", i+1), backend: b}
		h.openForDnsmasq()
		port := fmt.Sprintf("ul%d", h.n)
		nstest.Veth(t, h.dom0, "eth0", ow.ul, port)
		ow.ul.Exec(t, "ip", "link", "set", port, "master", "br0")
		h.dom0.Exec(t, "ip", "addr", "add", h.addr+"/24", "dev", "eth0")
		ow.hosts = append(ow.hosts, h)
	}
	return ow
}

// makeKeys gives every host a WireGuard key pair (files as `wg genkey` writes them).
func (ow *ovWorld) makeKeys() {
	for _, h := range ow.hosts {
		var priv [32]byte
		if _, err := rand.Read(priv[:]); err != nil {
			ow.t.Fatal(err)
		}
		priv[0] &= 248 // clamped, as wg genkey does
		priv[31] = priv[31]&127 | 64
		pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
		if err != nil {
			ow.t.Fatal(err)
		}
		h.keyFile = filepath.Join(filepath.Dir(h.config), "lab.key")
		if err := os.WriteFile(h.keyFile, []byte(base64.StdEncoding.EncodeToString(priv[:])+"\n"), 0o600); err != nil {
			ow.t.Fatal(err)
		}
		h.pubKey = base64.StdEncoding.EncodeToString(pub)
	}
}

// config is host h's TOML: its own DHCP range and allocator pool (disjoint
// from the other hosts'), and peers: the hosts in with, except h.
func (ow *ovWorld) config(h *ovHost, encrypt bool, with []*ovHost, extra ...string) string {
	s := fmt.Sprintf(`[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
uplink = "eth0"
firewall = %q
[network.lab.dhcp]
range_start = "10.98.98.2%d0"
range_end = "10.98.98.2%d9"
[network.lab.alloc]
range_start = "10.98.98.1%d0"
range_end = "10.98.98.1%d9"
[[network.lab.port]]
name = "vq*"
mac = %q
ips = [%q]
[network.lab.overlay]
vni = %d
`, h.backend, h.n-1, h.n-1, h.n+1, h.n+1, vmMAC(h.n), vmIP(h.n), ovVNI)
	var peers []string
	for _, p := range with {
		if p == h {
			continue
		}
		if encrypt {
			s += fmt.Sprintf("[[network.lab.overlay.peer]]\naddress = %q\npublic_key = %q\n", p.addr, p.pubKey)
		} else {
			peers = append(peers, fmt.Sprintf("%q", p.addr))
		}
	}
	if encrypt {
		s = strings.Replace(s, "[network.lab.overlay]\n", fmt.Sprintf("[network.lab.overlay]\nencrypt = \"wireguard\"\nprivate_key_file = %q\n", h.keyFile), 1)
	} else {
		s = strings.Replace(s, fmt.Sprintf("vni = %d\n", ovVNI), fmt.Sprintf("vni = %d\npeers = [%s]\n", ovVNI, strings.Join(peers, ", ")), 1)
	}
	return s + strings.Join(extra, "\n")
}

// dumpNeutral is the host's dump without what the kernel changes on devices
// that once were up (root qdisc, carrier flags).
func (h *ovHost) dumpNeutral() string {
	qdisc := regexp.MustCompile(` qdisc=[a-z_]+`)
	return qdisc.ReplaceAllString(strings.ReplaceAll(h.dom0.Dump(h.t), " linkdown", ""), "")
}

// addGuestsDevices makes the host's VM and DHCP guest, whose veths are
// part of the host before start.
func (h *ovHost) addGuestsDevices(t *testing.T) {
	t.Helper()
	h.vm = nstest.New(t, fmt.Sprintf("vm%d", h.n))
	nstest.Veth(t, h.dom0, fmt.Sprintf("vq%d", h.n), h.vm, "eth0")
	h.vm.Exec(t, "ip", "link", "set", "eth0", "address", vmMAC(h.n))
	h.vm.Exec(t, "ip", "addr", "add", vmIP(h.n)+"/24", "dev", "eth0")
	h.vm.Exec(t, "ip", "route", "add", "default", "via", gatewayIP)
	h.dhcp = nstest.New(t, fmt.Sprintf("dhcp%d", h.n))
	nstest.Veth(t, h.dom0, fmt.Sprintf("vd%d", h.n), h.dhcp, "eth0")
}

// attachGuests attaches them as QEMU's script would, and adds a container.
func (h *ovHost) attachGuests(t *testing.T) {
	t.Helper()
	for _, port := range []string{fmt.Sprintf("vq%d", h.n), fmt.Sprintf("vd%d", h.n)} {
		if code, stderr := h.qemuScript("qemu-ifup", nil, port, "brlab"); code != 0 {
			t.Fatalf("host%d: qemu-ifup %s: exit %d: %s", h.n, port, code, stderr)
		}
	}
	// The VM's MTU as its admin (or DHCP) would set it: the bridge's.
	h.vm.Exec(t, "ip", "link", "set", "eth0", "mtu", h.dom0.ReadSys(t, "brlab/mtu"))
	h.cniAdd(t)
}

// guest is one of the host's guests by kind: "vm", "dhcp" or "ctr".
func (h *ovHost) guest(kind string) *nstest.NS {
	return map[string]*nstest.NS{"vm": h.vm, "dhcp": h.dhcp, "ctr": h.ctr}[kind]
}

// sameStateAfterStopAs compares the host with its dump before start, as
// world.sameStateAfterStop does (empty built-in iptables chains are no residue).
func (h *ovHost) sameStateAfterStopAs(t *testing.T, what, before string) {
	t.Helper()
	after := h.dumpNeutral()
	if d := nstest.Diff(nstest.WithoutEmptyBuiltins(before), nstest.WithoutEmptyBuiltins(after)); d != "" {
		t.Errorf("%s after stop differs (- before start, + after stop):\n%s", what, d)
	}
}

// observed is how many echo requests the outside counted.
func (ow *ovWorld) observed(counter string) int {
	ow.t.Helper()
	out := ow.ul.Exec(ow.t, "nft", "list", "counter", "inet", "e2e-observe", counter)
	m := packetsRE.FindStringSubmatch(out)
	if m == nil {
		ow.t.Fatalf("ul: no packet count in: %s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func diffStates(a, b string) string { return nstest.Diff(a, b) }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// cniAdd adds a container through libcni, with brouter's own allocator.
func (h *ovHost) cniAdd(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(binary(t, "brouter"), filepath.Join(dir, "brouter")); err != nil {
		t.Fatal(err)
	}
	env := []string{"BROUTER_CONFIG=" + h.config, "BROUTER_RUN_DIR=" + h.runDir, "BROUTER_STATE_DIR=" + h.stateDir}
	h.cni = libcni.NewCNIConfigWithCacheDir([]string{dir}, filepath.Join(dir, "cache"),
		&cniEnv{DefaultExec: invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}, env: env})
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.1.0", "name": "lab", "plugins": [{"type": "brouter", "network": "lab"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	h.cniList = list
	h.ctr = nstest.New(t, fmt.Sprintf("ctr%d", h.n))
	h.ctrRT = &libcni.RuntimeConf{ContainerID: "ov-" + h.ctr.Name(), NetNS: h.ctr.Path(), IfName: "eth0"}
	var res types.Result
	if err := h.dom0.Do(func() (err error) {
		res, err = h.cni.AddNetworkList(context.Background(), list, h.ctrRT)
		return err
	}); err != nil {
		t.Fatalf("host%d: CNI ADD: %v", h.n, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) == 0 {
		t.Fatalf("host%d: CNI result %v: %v", h.n, res, err)
	}
	h.ctrIP = r.IPs[0].Address.IP.String()
}

func (h *ovHost) cniDel(t *testing.T) {
	t.Helper()
	if err := h.dom0.Do(func() error { return h.cni.DelNetworkList(context.Background(), h.cniList, h.ctrRT) }); err != nil {
		t.Errorf("host%d: CNI DEL: %v", h.n, err)
	}
}

// lease runs a DHCP client in the host's DHCP guest; it sets the address
// and the MTU the server hands out, and returns the address.
func (h *ovHost) lease(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	body := `#!/bin/sh
case "$1" in bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	[ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
	[ -n "$router" ] && ip route replace default via "$router"
	echo "$ip" > ` + filepath.Join(dir, "ip") + `
esac
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := h.dhcp.Try("busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "5", "-T", "1", "-O", "mtu", "-s", script); err != nil {
		t.Fatalf("host%d: no DHCP lease: %v", h.n, err)
	}
	ip, err := os.ReadFile(filepath.Join(dir, "ip"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ip))
}
