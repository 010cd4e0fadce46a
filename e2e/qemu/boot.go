package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/brouter/brouter/shared/nstest"
)

// Binary is the QEMU system emulator the guest runs in.
const Binary = "qemu-system-x86_64"

// Available says why QEMU cannot run here, or nil.
func Available() error {
	if _, err := exec.LookPath(Binary); err != nil {
		return fmt.Errorf("%s not installed (Debian package qemu-system-x86)", Binary)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("no /dev/net/tun: QEMU cannot make a tap: %v", err)
	}
	return nil
}

// Options of one boot.
type Options struct {
	NS             *nstest.NS // QEMU (and so its tap and scripts) runs in this namespace
	Kernel, Initrd string

	Tap    string // the tap's name (ifname=)
	IfUp   string // script=; "" means "no"
	IfDown string // downscript=; "" means "no"
	MAC    string // the guest NIC's MAC; "" lets QEMU choose

	// Bridge and Helper, instead of Tap and the scripts: -netdev
	// bridge,br=Bridge,helper=Helper (QEMU runs the helper, which makes the
	// tap and sends it back).
	Bridge, Helper string
	// Prefix is run in front of QEMU inside NS, e.g. setpriv's arguments to
	// start it as another user.
	Prefix []string

	// Append is added to the kernel command line: brtest.ping=A,B,
	// brtest.resolve=NAME, brtest.ip=A/LEN,GW (see the guest's /init).
	Append []string
	// Env is added to QEMU's environment, which QEMU passes on to the
	// scripts (e.g. BROUTER_CONFIG, BROUTER_RUN_DIR, BROUTER_STATE_DIR).
	Env []string

	Timeout time.Duration // default 90 s; QEMU gets SIGTERM then, SIGKILL 5 s later
	// Logf, if set, gets every console line as it comes (t.Logf).
	Logf func(format string, args ...any)
}

// Result of one boot.
type Result struct {
	Console  string        // everything the serial console and QEMU printed
	Lines    []string      // the guest's report lines, without the "BRTEST " prefix
	ExitCode int           // QEMU's exit status (-1 when killed by a signal)
	TimedOut bool          // QEMU was stopped at the timeout
	Elapsed  time.Duration // from QEMU's start to its exit
	Done     bool          // the guest reported "done" (it ran all its checks)
}

// Get returns the rest of the first report line whose first word is key
// ("lease" -> "10.98.98.57"), and whether there was one.
func (r *Result) Get(key string) (string, bool) {
	for _, l := range r.Lines {
		k, v, _ := strings.Cut(l, " ")
		if k == key {
			return v, true
		}
	}
	return "", false
}

// Find returns the rest of the first report line that starts with prefix
// ("ping 192.0.2.2" -> "ok").
func (r *Result) Find(prefix string) (string, bool) {
	for _, l := range r.Lines {
		if l == prefix {
			return "", true
		}
		if v, ok := strings.CutPrefix(l, prefix+" "); ok {
			return v, true
		}
	}
	return "", false
}

// Args returns QEMU's command line for o (without the `ip netns exec` in front).
func Args(o Options) []string {
	script := func(s string) string {
		if s == "" {
			return "no"
		}
		return s
	}
	cmdline := append([]string{"console=ttyS0", "quiet", "loglevel=3", "panic=-1", "rdinit=/init"}, o.Append...)
	netdev := fmt.Sprintf("tap,id=n0,ifname=%s,script=%s,downscript=%s", o.Tap, script(o.IfUp), script(o.IfDown))
	if o.Bridge != "" {
		netdev = fmt.Sprintf("bridge,id=n0,br=%s,helper=%s", o.Bridge, o.Helper)
	}
	device := "virtio-net-pci,netdev=n0,romfile="
	if o.MAC != "" {
		device += ",mac=" + o.MAC
	}
	return []string{Binary,
		"-machine", "q35,accel=tcg",
		"-cpu", "max",
		"-m", "256",
		"-smp", "1",
		"-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-kernel", o.Kernel,
		"-initrd", o.Initrd,
		"-append", strings.Join(cmdline, " "),
		"-netdev", netdev,
		"-device", device,
	}
}

// Boot runs the guest in o.NS until it powers off (QEMU then runs the
// downscript and exits) or the timeout. A non-nil error means QEMU could not
// be started or was stopped at the timeout; the Result is filled either way.
func Boot(ctx context.Context, o Options) (*Result, error) {
	if o.NS == nil || o.Kernel == "" || o.Initrd == "" || o.Tap == "" && (o.Bridge == "" || o.Helper == "") {
		return nil, errors.New("qemu: Boot needs NS, Kernel, Initrd and Tap (or Bridge and Helper)")
	}
	if o.Timeout == 0 {
		o.Timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	// `ip netns exec` (and a Prefix such as setpriv) execs QEMU in place:
	// the PID is QEMU's.
	cmd := o.NS.CmdContext(ctx, append(slices.Clone(o.Prefix), Args(o)...)...)
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.Stdin = nil
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // lets QEMU run its downscript
	cmd.WaitDelay = 5 * time.Second                                          // then SIGKILL
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw

	res := &Result{}
	var console strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := strings.TrimRight(sc.Text(), "\r")
			console.WriteString(l + "\n")
			if o.Logf != nil {
				o.Logf("guest: %s", l)
			}
			// Kernel messages may land in front of a report on the same line.
			if i := strings.Index(l, "BRTEST "); i >= 0 {
				rep := strings.TrimSpace(l[i+len("BRTEST "):])
				res.Lines = append(res.Lines, rep)
				if rep == "done" {
					res.Done = true
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()

	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		wg.Wait()
		return res, fmt.Errorf("qemu: start %s: %w", Binary, err)
	}
	err := cmd.Wait()
	res.Elapsed = time.Since(start)
	pw.Close()
	wg.Wait()
	res.Console = console.String()
	res.ExitCode = -1
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		res.TimedOut = true
		return res, fmt.Errorf("qemu: guest did not power off within %s (stopped it)", o.Timeout)
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return res, fmt.Errorf("qemu: %w", err)
		}
	}
	return res, nil
}
