// Package nstest is the test helper for kernel and end-to-end tests: it makes
// throwaway network namespaces, runs commands inside them, wires them together
// with veth pairs and takes stable text snapshots of their network state for
// before/after comparisons.
//
// Rules it enforces for its callers:
//   - Nothing here touches the machine's root network namespace. Every command
//     runs through `ip netns exec NAME` (or `ip -n NAME`), and Do switches only
//     one locked OS thread.
//   - Every namespace has a unique name, brt-<role>-<pid>-<random>, so test
//     packages running in parallel never collide.
//   - Every namespace is deleted by t.Cleanup, also when the test fails or
//     calls t.FailNow; processes started with Start (and any process still
//     living in the namespace, which can only have been started by the test)
//     are killed by PID first.
//
// Typical use:
//
//	nstest.RequireRoot(t)
//	dom0 := nstest.New(t, "dom0")
//	guest := nstest.New(t, "guest")
//	nstest.Veth(t, dom0, "vg1", guest, "eth0")
//	guest.Exec(t, "ip", "addr", "add", "10.98.98.11/24", "dev", "eth0")
//	before := dom0.Dump(t)
//	... run the program under test inside dom0 ...
//	if d := nstest.Diff(before, dom0.Dump(t)); d != "" { t.Errorf("state changed:\n%s", d) }
package nstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "brt-"

var (
	probeOnce sync.Once
	probeErr  error
)

// RequireRoot skips the test unless it runs as root, `ip` is on PATH and a
// network namespace can actually be created (containers without CAP_SYS_ADMIN
// pass the uid check but fail there).
func RequireRoot(t testing.TB) {
	t.Helper()
	probeOnce.Do(func() { probeErr = probe() })
	if probeErr != nil {
		t.Skipf("needs root: %v", probeErr)
	}
}

func probe() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("running as uid %d, kernel tests need root to create network namespaces", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("`ip` (iproute2) not found on PATH: %w", err)
	}
	name := uniqueName("probe")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create a network namespace: ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NS is a network namespace owned by one test.
type NS struct {
	name string

	mu    sync.Mutex
	procs []*exec.Cmd
}

var roleRE = regexp.MustCompile(`[^a-z0-9]+`)

func uniqueName(role string) string {
	role = roleRE.ReplaceAllString(strings.ToLower(role), "")
	if len(role) > 12 {
		role = role[:12]
	}
	if role == "" {
		role = "ns"
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%s%s-%d-%s", Prefix, role, os.Getpid(), hex.EncodeToString(b[:]))
}

// New creates a network namespace named brt-<role>-<pid>-<random> with lo up.
// t.Cleanup kills the processes started in it and deletes it.
func New(t testing.TB, role string) *NS {
	t.Helper()
	RequireRoot(t)
	n := &NS{name: uniqueName(role)}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("nstest: ip netns add %s: %v: %s", n.name, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { n.destroy(t) })
	n.Exec(t, "ip", "link", "set", "lo", "up")
	return n
}

// destroy kills what runs in the namespace and deletes it. Deleting the
// namespace also deletes every veth end inside it, and so their peers.
func (n *NS) destroy(t testing.TB) {
	n.mu.Lock()
	procs := n.procs
	n.procs = nil
	n.mu.Unlock()
	for _, c := range procs {
		if c.Process != nil && c.ProcessState == nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	// Anything still in the namespace was started by this test (directly or by
	// the program under test, e.g. a dnsmasq); it would keep the namespace alive.
	if out, err := exec.Command("ip", "netns", "pids", n.name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	var out []byte
	var err error
	for i := 0; i < 5; i++ {
		if out, err = exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("nstest: ip netns del %s: %v: %s", n.name, err, strings.TrimSpace(string(out)))
}

// Name is the namespace's name, as `ip netns` knows it.
func (n *NS) Name() string { return n.name }

// Path is the namespace's bind mount (/run/netns/NAME).
func (n *NS) Path() string { return "/run/netns/" + n.name }

// Cmd returns `ip netns exec NAME args...`, to adjust (Env, Stdin) and run.
func (n *NS) Cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
}

// CmdContext is Cmd with a context that kills the command.
func (n *NS) CmdContext(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name}, args...)...)
}

// Try runs args inside the namespace and returns the combined output; the
// error, if any, includes the command and its output.
func (n *NS) Try(args ...string) (string, error) {
	out, err := n.Cmd(args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("[%s] %s: %w: %s", n.name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Exec runs args inside the namespace and returns the combined output; it
// fails the test with that output if the command fails.
func (n *NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Try(args...)
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	return out
}

// Start starts args in the background inside the namespace. The process is
// killed when the test ends (before the namespace is deleted).
func (n *NS) Start(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	return n.StartCmd(t, n.Cmd(args...))
}

// StartCmd is Start for a command made with Cmd and given its environment
// or output by the caller; it is killed by PID at cleanup like Start's.
func (n *NS) StartCmd(t testing.TB, c *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := c.Start(); err != nil {
		t.Fatalf("nstest: [%s] start %s: %v", n.name, strings.Join(c.Args, " "), err)
	}
	n.mu.Lock()
	n.procs = append(n.procs, c)
	n.mu.Unlock()
	return c
}

// Do runs fn with the calling goroutine's OS thread switched into the
// namespace, and switches back afterwards. Goroutines started by fn do not
// run in the namespace. If switching back fails the thread stays locked, so
// the Go runtime discards it rather than reusing a thread in the wrong netns.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("nstest: current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("nstest: open netns %s: %w", n.name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("nstest: enter netns %s: %w", n.name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with this goroutine.
		return errors.Join(ferr, fmt.Errorf("nstest: return from netns %s: %w", n.name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Veth creates a veth pair, aName in a and bName in b, and sets both ends up.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	out, err := exec.Command("ip", "-n", a.name, "link", "add", aName, "type", "veth",
		"peer", "name", bName, "netns", b.name).CombinedOutput()
	if err != nil {
		t.Fatalf("nstest: veth %s/%s <-> %s/%s: %v: %s", a.name, aName, b.name, bName, err, strings.TrimSpace(string(out)))
	}
	a.Exec(t, "ip", "link", "set", aName, "up")
	b.Exec(t, "ip", "link", "set", bName, "up")
}

// Sysctl reads a sysctl (e.g. "net.ipv4.ip_forward") inside the namespace.
func (n *NS) Sysctl(t testing.TB, key string) string {
	t.Helper()
	return strings.TrimSpace(n.Exec(t, "cat", "/proc/sys/"+strings.ReplaceAll(key, ".", "/")))
}

// ReadSys reads a file under /sys/class/net inside the namespace
// (e.g. "br0/bridge/stp_state"); `ip netns exec` remounts /sys for it.
func (n *NS) ReadSys(t testing.TB, rel string) string {
	t.Helper()
	return strings.TrimSpace(n.Exec(t, "cat", "/sys/class/net/"+rel))
}

// Ping sends one echo request to addr (-W 2) and retries twice, to ride out
// ARP resolution and bridge port state changes. nil means a reply came back.
func (n *NS) Ping(t testing.TB, addr string) error {
	t.Helper()
	var err error
	for i := 0; i < 3; i++ {
		if err = n.PingOnce(addr); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// PingOnce sends one echo request to addr and waits up to 2 s for the reply,
// without retrying: use it to show that something is unreachable.
func (n *NS) PingOnce(addr string) error {
	_, err := n.Try("ping", "-n", "-q", "-c", "1", "-W", "2", addr)
	return err
}

// Dump returns a stable text snapshot of the namespace's network state, for
// before/after comparisons with Diff. Sections, each sorted:
//
//	links:     name, kind, master, mtu, qdisc, flags, MAC, promiscuity; for a bridge its
//	           stp_state/forward_delay/vlan_filtering, for a bridge port its learning/flood/isolated
//	addresses: per interface, family address/prefix scope (no lifetimes or DAD flags)
//	routes:    `ip -4|-6 route show table main` ("expires N" removed)
//	nft:       `nft list ruleset` without comments and with counters zeroed out
//	iptables:  `iptables-save` and `ip6tables-save` without comments and chain counters
//
// Counters, ifindexes and lifetimes are left out so that traffic and time do
// not make two snapshots differ. Failing to read a section fails the test.
func (n *NS) Dump(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	section := func(title string, lines []string) {
		fmt.Fprintf(&b, "== %s ==\n", title)
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	section("links", n.dumpLinks(t))
	section("addresses", n.dumpAddrs(t))
	section("routes", n.dumpRoutes(t))
	section("nft", n.dumpNft(t))
	section("iptables", n.dumpXtables(t, "iptables-save"))
	section("ip6tables", n.dumpXtables(t, "ip6tables-save"))
	return b.String()
}

type jsonLink struct {
	Ifname      string   `json:"ifname"`
	Flags       []string `json:"flags"`
	MTU         int      `json:"mtu"`
	Qdisc       string   `json:"qdisc"`
	Master      string   `json:"master"`
	LinkType    string   `json:"link_type"`
	Address     string   `json:"address"`
	Promiscuity int      `json:"promiscuity"`
	Linkinfo    *struct {
		InfoKind      string                     `json:"info_kind"`
		InfoData      map[string]json.RawMessage `json:"info_data"`
		InfoSlaveKind string                     `json:"info_slave_kind"`
		InfoSlaveData map[string]json.RawMessage `json:"info_slave_data"`
	} `json:"linkinfo"`
}

func (n *NS) dumpLinks(t testing.TB) []string {
	t.Helper()
	var links []jsonLink
	if err := json.Unmarshal([]byte(n.Exec(t, "ip", "-j", "-d", "link", "show")), &links); err != nil {
		t.Fatalf("nstest: parse ip -j -d link show: %v", err)
	}
	var lines []string
	for _, l := range links {
		flags := append([]string(nil), l.Flags...)
		sort.Strings(flags)
		kind := l.LinkType
		var extra []string
		if li := l.Linkinfo; li != nil {
			if li.InfoKind != "" {
				kind = li.InfoKind
			}
			for _, k := range []string{"stp_state", "forward_delay", "vlan_filtering"} {
				if v, ok := li.InfoData[k]; ok && kind == "bridge" {
					extra = append(extra, k+"="+string(v))
				}
			}
			if li.InfoSlaveKind != "" {
				extra = append(extra, "port="+li.InfoSlaveKind)
				for _, k := range []string{"learning", "flood", "isolated", "neigh_suppress"} {
					if v, ok := li.InfoSlaveData[k]; ok {
						extra = append(extra, k+"="+string(v))
					}
				}
			}
		}
		line := fmt.Sprintf("link %s kind=%s mtu=%d qdisc=%s flags=%s mac=%s promisc=%d",
			l.Ifname, kind, l.MTU, l.Qdisc, strings.Join(flags, ","), l.Address, l.Promiscuity)
		if l.Master != "" {
			line += " master=" + l.Master
		}
		if len(extra) > 0 {
			line += " " + strings.Join(extra, " ")
		}
		lines = append(lines, line)
	}
	sort.Strings(lines)
	return lines
}

type jsonAddrs struct {
	Ifname   string `json:"ifname"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		Prefixlen int    `json:"prefixlen"`
		Scope     string `json:"scope"`
		Label     string `json:"label"`
	} `json:"addr_info"`
}

func (n *NS) dumpAddrs(t testing.TB) []string {
	t.Helper()
	var ifs []jsonAddrs
	if err := json.Unmarshal([]byte(n.Exec(t, "ip", "-j", "addr", "show")), &ifs); err != nil {
		t.Fatalf("nstest: parse ip -j addr show: %v", err)
	}
	var lines []string
	for _, i := range ifs {
		for _, a := range i.AddrInfo {
			line := fmt.Sprintf("addr %s %s %s/%d scope %s", i.Ifname, a.Family, a.Local, a.Prefixlen, a.Scope)
			if a.Label != "" && a.Label != i.Ifname {
				line += " label " + a.Label
			}
			lines = append(lines, line)
		}
	}
	sort.Strings(lines)
	return lines
}

var expiresRE = regexp.MustCompile(`\s+expires \S+`)

func (n *NS) dumpRoutes(t testing.TB) []string {
	t.Helper()
	var lines []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(n.Exec(t, "ip", fam, "route", "show", "table", "main"), "\n") {
			l = strings.TrimSpace(expiresRE.ReplaceAllString(l, ""))
			if l != "" {
				lines = append(lines, "route"+fam+" "+l)
			}
		}
	}
	sort.Strings(lines)
	return lines
}

var (
	nftCounterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	nftQuotaRE   = regexp.MustCompile(`used \d+ \w+`)
	xtCounterRE  = regexp.MustCompile(`\s*\[\d+:\d+\]$`)
)

func (n *NS) dumpNft(t testing.TB) []string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		return []string{"(nft not installed)"}
	}
	out := n.Exec(t, "nft", "list", "ruleset")
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimRight(l, " \t")
		if strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		l = nftCounterRE.ReplaceAllString(l, "counter")
		l = nftQuotaRE.ReplaceAllString(l, "")
		l = expiresRE.ReplaceAllString(l, "")
		lines = append(lines, l)
	}
	// nft prints tables, and the chains, sets, ... of a table, in creation
	// order; sort them (keeping the rules of a chain in order) so that the
	// order things were made in does not count.
	return sortNft(lines)
}

// sortNft sorts the tables of an nft ruleset listing, and the objects
// (chains, sets, maps, counters, ...) inside each table. Rules keep their order.
func sortNft(lines []string) []string {
	tables := sortBlocks(lines, 0)
	var out []string
	for i := 0; i < len(tables); {
		// A table block runs from "table ..." to its closing "}" at column 0.
		j := i + 1
		for j < len(tables) && tables[j] != "}" {
			j++
		}
		if j >= len(tables) || !strings.HasPrefix(tables[i], "table ") {
			out = append(out, tables[i:]...)
			break
		}
		out = append(out, tables[i])
		out = append(out, sortBlocks(tables[i+1:j], 1)...)
		out = append(out, tables[j])
		i = j + 1
	}
	return out
}

// sortBlocks sorts the blocks of lines that start at the given tab depth (a
// line with exactly depth leading tabs, other than a closing "}", starts a
// block that runs up to the next one), keeping each block's lines in order.
func sortBlocks(lines []string, depth int) []string {
	starts := func(l string) bool {
		rest, ok := strings.CutPrefix(l, strings.Repeat("\t", depth))
		return ok && rest != "" && rest[0] != '\t' && rest[0] != ' ' && rest != "}"
	}
	var blocks [][]string
	for _, l := range lines {
		if len(blocks) == 0 || starts(l) {
			blocks = append(blocks, nil)
		}
		blocks[len(blocks)-1] = append(blocks[len(blocks)-1], l)
	}
	sort.SliceStable(blocks, func(i, j int) bool { return blocks[i][0] < blocks[j][0] })
	var out []string
	for _, b := range blocks {
		out = append(out, b...)
	}
	return out
}

func (n *NS) dumpXtables(t testing.TB, tool string) []string {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		return []string{"(" + tool + " not installed)"}
	}
	out := n.Exec(t, tool)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimRight(l, " \t")
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			l = xtCounterRE.ReplaceAllString(l, "")
		}
		lines = append(lines, l)
	}
	// iptables-save prints tables in kernel order; sort the *table blocks.
	var blocks [][]string
	for _, l := range lines {
		if strings.HasPrefix(l, "*") || len(blocks) == 0 {
			blocks = append(blocks, nil)
		}
		blocks[len(blocks)-1] = append(blocks[len(blocks)-1], l)
	}
	sort.SliceStable(blocks, func(i, j int) bool { return blocks[i][0] < blocks[j][0] })
	lines = lines[:0]
	for _, b := range blocks {
		lines = append(lines, b...)
	}
	return lines
}

// Diff returns "" when before and after are equal, else a line diff: lines
// only in before start with "- ", lines only in after with "+ ", and up to two
// unchanged lines around each change are shown with "  " for context.
func Diff(before, after string) string {
	if before == after {
		return ""
	}
	a := splitLines(before)
	b := splitLines(after)
	// Longest common subsequence table (the snapshots are a few hundred lines).
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type op struct {
		kind byte // ' ', '-', '+'
		text string
	}
	var ops []op
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			ops = append(ops, op{' ', a[i]})
			i++
			j++
		case j < len(b) && (i == len(a) || lcs[i][j+1] > lcs[i+1][j]):
			ops = append(ops, op{'+', b[j]})
			j++
		default:
			ops = append(ops, op{'-', a[i]})
			i++
		}
	}
	const context = 2
	show := make([]bool, len(ops))
	for k, o := range ops {
		if o.kind != ' ' {
			for d := max(0, k-context); d <= min(len(ops)-1, k+context); d++ {
				show[d] = true
			}
		}
	}
	var buf bytes.Buffer
	gap := false
	for k, o := range ops {
		if !show[k] {
			gap = true
			continue
		}
		if gap && buf.Len() > 0 {
			buf.WriteString("  ...\n")
		}
		gap = false
		fmt.Fprintf(&buf, "%c %s\n", o.kind, o.text)
	}
	if buf.Len() == 0 {
		// Only a trailing newline differs.
		return fmt.Sprintf("- %q\n+ %q\n", before, after)
	}
	return buf.String()
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
