// Command bench-overlay measures a network that spans two hosts: iperf3
// (TCP) from a guest on one host to a guest on the other, over plain VXLAN
// and over VXLAN in WireGuard (the kernel's if it has it, else brouter-wg),
// against iperf3 between the two hosts over the underlay alone, in one run.
//
//	go run ./tools/bench-overlay [-bin ./bin] [-t 5]
//
// As root. Everything happens in network namespaces of its own (brb-ov-PID-*:
// two hosts joined by a veth, MTU 1500, and a guest namespace behind each
// host's bridge), deleted at the end, also on failure or Ctrl-C.
package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/curve25519"
)

var prefix = fmt.Sprintf("brb-ov-%d-", os.Getpid())

func main() {
	bin := flag.String("bin", "./bin", "directory with the built network-virtual, qemu-ifup and brouter-wg")
	secs := flag.Int("t", 5, "seconds per iperf3 run")
	flag.Parse()
	if err := run(*bin, *secs); err != nil {
		fmt.Fprintln(os.Stderr, "bench-overlay:", err)
		os.Exit(1)
	}
}

type host struct {
	n                 int
	ns, guest         string
	dir, conf, key    string
	pub               string
	addr, guestIP, ul string
}

func run(bin string, secs int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (it creates network namespaces)")
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	for _, p := range []string{"network-virtual", "qemu-ifup", "brouter-wg"} {
		if _, err := os.Stat(filepath.Join(bin, p)); err != nil {
			return fmt.Errorf("%s: %w (run make build first)", p, err)
		}
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		return fmt.Errorf("iperf3 not found (install the Debian package iperf3)")
	}
	tmp, err := os.MkdirTemp("", "brbench-overlay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var made []string
	cleanup := func() {
		for i := len(made) - 1; i >= 0; i-- {
			if out, err := exec.Command("ip", "netns", "pids", made[i]).Output(); err == nil {
				for _, f := range strings.Fields(string(out)) {
					if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			_ = exec.Command("ip", "netns", "del", made[i]).Run()
		}
	}
	defer cleanup()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; cleanup(); os.RemoveAll(tmp); os.Exit(1) }()
	addNS := func(name string) (string, error) {
		full := prefix + name
		if err := sh("ip", "netns", "add", full); err != nil {
			return "", err
		}
		made = append(made, full)
		return full, in(full, "ip", "link", "set", "lo", "up")
	}
	hosts, err := makeHosts(tmp, addNS)
	if err != nil {
		return err
	}
	fmt.Println("bench-overlay: iperf3 TCP, guest to guest across two hosts (veth underlay, MTU 1500)")
	under, retr, err := iperf(hosts[1].ns, hosts[0].ns, hosts[1].addr, secs)
	if err != nil {
		return fmt.Errorf("underlay: %w", err)
	}
	fmt.Printf("  %-50s %8.0f Mbit/s                       %5d retransmits\n", "underlay (host to host)", under, retr)
	for _, encrypt := range []bool{false, true} {
		if err := overlayRun(bin, hosts, secs, encrypt, under, ""); err != nil {
			return err
		}
	}
	// br_netfilter (loaded on Docker hosts, and then on in every namespace)
	// hands every bridged frame to the ip hooks: the guest path pays for it,
	// the host-to-host underlay does not. The same without it, in the
	// benchmark's own hosts.
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		for _, h := range hosts {
			if err := in(h.ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0"); err != nil {
				return err
			}
		}
		return overlayRun(bin, hosts, secs, false, under, ", br_netfilter off")
	}
	return nil
}

// makeHosts makes the two hosts, their guests and the underlay between them.
func makeHosts(tmp string, addNS func(string) (string, error)) ([]*host, error) {
	var err error
	hosts := []*host{{n: 1}, {n: 2}}
	for _, h := range hosts {
		if h.ns, err = addNS(fmt.Sprintf("h%d", h.n)); err != nil {
			return nil, err
		}
		if h.guest, err = addNS(fmt.Sprintf("g%d", h.n)); err != nil {
			return nil, err
		}
		h.dir = filepath.Join(tmp, fmt.Sprintf("h%d", h.n))
		for _, d := range []string{"run", "state"} {
			if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
				return nil, err
			}
		}
		h.conf, h.key = filepath.Join(h.dir, "brouter.toml"), filepath.Join(h.dir, "lab.key")
		h.addr, h.guestIP = fmt.Sprintf("198.51.100.%d", h.n), fmt.Sprintf("10.98.98.1%d", h.n)
		if h.pub, err = genKey(h.key); err != nil {
			return nil, err
		}
		if err := sh("ip", "-n", h.guest, "link", "add", "eth0", "type", "veth", "peer", "name", "vq", "netns", h.ns); err != nil {
			return nil, err
		}
		if err := in(h.guest, "ip", "addr", "add", h.guestIP+"/24", "dev", "eth0"); err != nil {
			return nil, err
		}
	}
	if err := sh("ip", "-n", hosts[0].ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", hosts[1].ns); err != nil {
		return nil, err
	}
	for _, h := range hosts {
		if err := in(h.ns, "ip", "addr", "add", h.addr+"/24", "dev", "eth0"); err != nil {
			return nil, err
		}
		if err := in(h.ns, "ip", "link", "set", "eth0", "up"); err != nil {
			return nil, err
		}
	}
	return hosts, nil
}

// overlayRun starts the network on both hosts (encrypted or not), attaches
// a guest on each, measures guest to guest, and stops it.
func overlayRun(bin string, hosts []*host, secs int, encrypt bool, under float64, note string) error {
	for _, h := range hosts {
		if err := os.WriteFile(h.conf, []byte(config(h, hosts, encrypt)), 0o644); err != nil {
			return err
		}
		if err := nv(bin, h, "start", "net=lab"); err != nil {
			return err
		}
		if err := nv(bin, h, "qemu-ifup", "vq", "brlab"); err != nil {
			return err
		}
		// The guest's MTU, as DHCP would give it: the bridge's.
		if out, err := exec.Command("ip", "netns", "exec", h.ns, "cat", "/sys/class/net/brlab/mtu").Output(); err == nil {
			_ = in(h.guest, "ip", "link", "set", "eth0", "up", "mtu", strings.TrimSpace(string(out)))
		}
	}
	what := "plain VXLAN"
	if encrypt {
		what = "VXLAN in WireGuard"
		if out, err := os.ReadFile(filepath.Join(hosts[0].dir, "run", "lab", "wg.pid")); err == nil && len(out) > 0 {
			what += " (brouter-wg)"
		}
	}
	rate, retr, err := iperf(hosts[1].guest, hosts[0].guest, hosts[1].guestIP, secs)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	fmt.Printf("  %-50s %8.0f Mbit/s  %5.1f%% of the underlay  %5d retransmits\n", what+" (guest to guest"+note+")", rate, 100*rate/under, retr)
	for _, h := range hosts {
		if err := nv(bin, h, "stop", "net=lab"); err != nil {
			return err
		}
	}
	return nil
}

func config(h *host, hosts []*host, encrypt bool) string {
	s := "[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\nfirewall = \"nftables\"\n[network.lab.overlay]\nvni = 4242\n"
	if encrypt {
		s += fmt.Sprintf("encrypt = \"wireguard\"\nprivate_key_file = %q\n", h.key)
	}
	for _, p := range hosts {
		switch {
		case p == h:
		case encrypt:
			s += fmt.Sprintf("[[network.lab.overlay.peer]]\naddress = %q\npublic_key = %q\n", p.addr, p.pub)
		default:
			s += fmt.Sprintf("peers = [%q]\n", p.addr)
		}
	}
	return s
}

// nv runs network-virtual (or qemu-ifup) in host h, as an admin or QEMU would.
func nv(bin string, h *host, prog string, args ...string) error {
	if prog != "qemu-ifup" {
		args = append([]string{prog}, args...)
		prog = "network-virtual"
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, filepath.Join(bin, prog)}, args...)...)
	cmd.Env = append(os.Environ(), "BROUTER_CONFIG="+h.conf, "BROUTER_RUN_DIR="+filepath.Join(h.dir, "run"), "BROUTER_STATE_DIR="+filepath.Join(h.dir, "state"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("host%d: %s %s: %w: %s", h.n, prog, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// iperf runs an iperf3 server in srv and a client in cli toward addr, and
// returns the receiver's rate in Mbit/s and the sender's retransmissions.
func iperf(srv, cli, addr string, secs int) (float64, int, error) {
	s := exec.Command("ip", "netns", "exec", srv, "iperf3", "-s", "-1")
	if err := s.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { _ = s.Process.Kill(); _ = s.Wait() }()
	var out []byte
	var err error
	for i := 0; i < 20; i++ { // until the server listens
		time.Sleep(100 * time.Millisecond)
		if out, err = exec.Command("ip", "netns", "exec", cli, "iperf3", "-J", "-c", addr, "-t", strconv.Itoa(secs)).Output(); err == nil {
			break
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("iperf3 -c %s: %w: %s", addr, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e6, r.End.SumSent.Retransmits, nil
}

// genKey writes a WireGuard private key file (as wg genkey does) and
// returns the public key.
func genKey(path string) (string, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", err
	}
	k[0] &= 248
	k[31] = k[31]&127 | 64
	pub, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k[:])+"\n"), 0o600); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(pub), nil
}

func sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func in(ns string, args ...string) error {
	return sh(append([]string{"ip", "netns", "exec", ns}, args...)...)
}
