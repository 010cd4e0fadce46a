package wg

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/brouter/brouter/shared/proc"
)

// ProgramName is the userspace WireGuard program (hooks/brouter-wg).
const ProgramName = "brouter-wg"

// startTimeout bounds how long Start waits for a new process's socket.
const startTimeout = 5 * time.Second

// Daemon is a userspace WireGuard device: a brouter-wg process that creates
// the TUN device Device and serves UAPI on a socket in Dir, where its pid
// file and log are too. It lives as long as the network: started by Start,
// found again by Running (its pid file, checked against /proc), stopped by Stop.
type Daemon struct {
	Binary string // path of brouter-wg
	Device string
	Dir    string
}

// Socket is where the process serves UAPI.
func (d Daemon) Socket() string  { return filepath.Join(d.Dir, "wg.sock") }
func (d Daemon) pidFile() string { return filepath.Join(d.Dir, "wg.pid") }
func (d Daemon) logFile() string { return filepath.Join(d.Dir, "wg.log") }

// Start starts the process unless it runs; started says whether it did.
// It returns once the device exists and the socket answers.
func (d Daemon) Start(mtu int) (started bool, err error) {
	if _, ok := d.Running(); ok {
		return false, nil
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("wg: %s: "+format, append([]any{d.Device}, a...)...)
	}
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return false, fail("%w", err)
	}
	for _, f := range []string{d.Socket(), d.pidFile()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fail("remove stale %s: %w", f, err)
		}
	}
	logf, err := os.OpenFile(d.logFile(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return false, fail("%w", err)
	}
	defer logf.Close()
	cmd := exec.Command(d.Binary, "--device="+d.Device, "--socket="+d.Socket(), "--mtu="+strconv.Itoa(mtu))
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Stdout, cmd.Stderr, cmd.Dir = logf, logf, "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives its caller, in no caller's session
	if err := cmd.Start(); err != nil {
		return false, fail("run %s: %w", d.Binary, err)
	}
	pid := cmd.Process.Pid
	// Whether it exited is known from waiting on it, not from its command
	// line: right after exec, /proc/PID/cmdline can still be empty.
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := os.WriteFile(d.pidFile(), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		_ = proc.Terminate(pid, ProgramName, d.matches)
		return false, fail("%w", err)
	}
	deadline := time.After(startTimeout)
	for {
		if c, err := net.Dial("unix", d.Socket()); err == nil {
			c.Close()
			return true, nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
			continue
		case <-exited:
		case <-deadline:
			_ = proc.Terminate(pid, ProgramName, d.matches)
		}
		out, _ := os.ReadFile(d.logFile())
		return true, fail("%s did not start: %s", ProgramName, oneLine(string(out)))
	}
}

// Running returns the pid of the device's process if it is alive.
func (d Daemon) Running() (int, bool) {
	data, err := os.ReadFile(d.pidFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 || !proc.Alive(pid, d.matches) {
		return 0, false
	}
	return pid, true
}

// Stop ends the process (the device goes with it) and removes its files.
// Not running: success.
func (d Daemon) Stop() error {
	if pid, ok := d.Running(); ok {
		if err := proc.Terminate(pid, ProgramName, d.matches); err != nil {
			return fmt.Errorf("wg: %s: stop %s: %w", d.Device, ProgramName, err)
		}
	}
	var errs []error
	for _, f := range []string{d.Socket(), d.pidFile(), d.logFile()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wg: %s: %w", d.Device, err)
	}
	return nil
}

// matches reports whether a command line is this device's process.
func (d Daemon) matches(args []string) bool {
	return len(args) > 0 && filepath.Base(args[0]) == ProgramName && contains(args[1:], "--socket="+d.Socket())
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// Serve is the brouter-wg process: it creates the TUN device name with
// WireGuard behind it, serves UAPI on socket (mode 0600), and runs until
// SIGTERM or SIGINT, or until the device is deleted. Configuration comes
// over the socket only (no key on a command line).
func Serve(name, socket string, mtu int) error {
	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return fmt.Errorf("wg: create TUN device %s: %w", name, err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "brouter-wg "+name+": "))
	defer dev.Close()
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", socket)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("wg: %s: listen on %s: %w", name, socket, err)
	}
	defer os.Remove(socket)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-dev.Wait():
	}
	return nil
}
