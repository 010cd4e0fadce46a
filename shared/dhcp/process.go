package dhcp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/proc"
)

// startTimeout bounds one dnsmasq start (it forks, binds, writes its pid
// file and only then lets its parent exit).
const startTimeout = 10 * time.Second

// Start makes the network's dnsmasq run with the configuration s describes,
// in the calling thread's network namespace:
//   - running with the same configuration: nothing happens;
//   - running with another configuration: it is stopped and started again;
//   - not running (never started, or dead with a stale pid file): it starts.
//
// Static leases added with AddStaticLease survive a restart.
func Start(s Spec) error {
	conf, err := s.Config()
	if err != nil {
		return err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("dhcp: network %s: "+format, append([]any{s.Network}, args...)...)
	}
	if _, err := os.Stat(Binary); err != nil {
		return fail("%s: %w", Binary, ErrNotInstalled)
	}
	for _, d := range []string{s.RunDir, filepath.Join(s.RunDir, DHCPHostDir), filepath.Join(s.RunDir, DNSHostDir), s.StateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail("%w", err)
		}
		if d != s.StateDir {
			if err := removeTemps(d); err != nil {
				return fail("%w", err)
			}
		}
	}
	for _, d := range []string{DHCPHostDir, DNSHostDir} { // ours alone, whatever the umask
		if err := os.Chmod(filepath.Join(s.RunDir, d), 0o755); err != nil {
			return fail("%w", err)
		}
	}
	u := s.runUser()
	if err := reachable(filepath.Join(s.RunDir, DHCPHostDir)); err != nil {
		return fail("dnsmasq runs as user %s and could not read its static leases: %w", u, err)
	}
	confPath := filepath.Join(s.RunDir, ConfFile)
	if pid, ok := find(s.RunDir); ok {
		old, err := os.ReadFile(confPath)
		if err == nil && string(old) == conf {
			return nil
		}
		if err := terminate(pid, confPath); err != nil {
			return fail("restart with a new configuration: %w", err)
		}
	}
	if err := writeFile(confPath, []byte(conf)); err != nil {
		return fail("%w", err)
	}
	pidPath := filepath.Join(s.RunDir, PidFile)
	if err := os.Remove(pidPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail("remove stale pid file: %w", err)
	}
	if err := run(confPath, s.RunDir); err != nil {
		return fail("%w", err)
	}
	if _, ok := find(s.RunDir); !ok {
		return fail("dnsmasq exited right after starting; see %s", filepath.Join(s.RunDir, LogFile))
	}
	return nil
}

// run starts dnsmasq and waits for its first process to exit, which it does
// once the daemon has bound its sockets and written its pid file, or failed.
func run(confPath, runDir string) error {
	// Not a pipe: the daemon could keep it open and Wait would block.
	errf, err := os.CreateTemp(runDir, ".dnsmasq-start-*")
	if err != nil {
		return err
	}
	defer os.Remove(errf.Name())
	defer errf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary, "--conf-file="+confPath)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Stdout = errf
	cmd.Stderr = errf
	cmd.Dir = "/"
	runErr := cmd.Run()
	if runErr == nil {
		return nil
	}
	out, _ := os.ReadFile(errf.Name())
	msg := strings.Join(strings.Fields(string(out)), " ")
	if len(msg) > 400 {
		msg = msg[:400] + "..."
	}
	var ee *exec.ExitError
	if errors.As(runErr, &ee) && ee.Exited() {
		return fmt.Errorf("dnsmasq failed to start (exit status %d, %s): %s", ee.ExitCode(), exitMeaning(ee.ExitCode()), msg)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("dnsmasq did not start within %s: %s", startTimeout, msg)
	}
	return fmt.Errorf("run dnsmasq: %w: %s", runErr, msg)
}

// exitMeaning explains dnsmasq's exit codes (dnsmasq(8), EXIT CODES).
func exitMeaning(code int) string {
	switch code {
	case 1:
		return "configuration problem"
	case 2:
		return "network problem: address in use, or no permission"
	case 3:
		return "file system problem"
	case 4:
		return "out of memory"
	default:
		return "other problem"
	}
}

// Stop stops the network's dnsmasq and removes what Start and AddStaticLease
// wrote under runDir (configuration, pid file, log, run-time static leases).
// The leases file in the state directory stays. A process is signalled only
// after /proc shows it is dnsmasq running runDir's configuration. Stopped
// already: success.
func Stop(network, runDir string) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	if err := validDir("run directory", runDir); err != nil {
		return err
	}
	confPath := filepath.Join(runDir, ConfFile)
	if pid, ok := find(runDir); ok {
		if err := terminate(pid, confPath); err != nil {
			return fmt.Errorf("dhcp: network %s: stop: %w", network, err)
		}
	}
	// A Start killed while dnsmasq daemonised leaves two processes for a
	// moment (the first one waits for its daemon child to be ready): stop
	// every one that runs this configuration, until none is left.
	for round := 0; round < 5; round++ {
		pids := findAll(confPath)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if err := terminate(pid, confPath); err != nil {
				return fmt.Errorf("dhcp: network %s: stop: %w", network, err)
			}
		}
	}
	var errs []error
	for _, f := range []string{ConfFile, PidFile, LogFile, DHCPHostDir, DNSHostDir} {
		if err := os.RemoveAll(filepath.Join(runDir, f)); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeTemps(runDir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dhcp: network %s: stop: %w", network, err)
	}
	return nil
}

// Running reports the PID of the network's dnsmasq if it is alive.
func Running(network, runDir string) (pid int, ok bool) {
	if validNetwork(network) != nil || validDir("run directory", runDir) != nil {
		return 0, false
	}
	return find(runDir)
}

// find returns the living dnsmasq that runs runDir's configuration: the one
// in the pid file, or else (pid file lost) the one /proc shows.
func find(runDir string) (int, bool) {
	confPath := filepath.Join(runDir, ConfFile)
	if data, err := os.ReadFile(filepath.Join(runDir, PidFile)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 1 && ours(pid, confPath) {
			return pid, true
		}
	}
	if pids := findAll(confPath); len(pids) > 0 {
		return pids[0], true
	}
	return 0, false
}

// findAll lists every living dnsmasq that runs confPath, from /proc.
func findAll(confPath string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 1 && ours(pid, confPath) {
			out = append(out, pid)
		}
	}
	return out
}

// ours reports whether pid is a living (not zombie) dnsmasq started with
// --conf-file=confPath.
func ours(pid int, confPath string) bool { return proc.Alive(pid, dnsmasqOf(confPath)) }

// dnsmasqOf matches the command line of the dnsmasq running confPath.
func dnsmasqOf(confPath string) func([]string) bool {
	return func(args []string) bool {
		return filepath.Base(args[0]) == "dnsmasq" && slices.Contains(args[1:], "--conf-file="+confPath)
	}
}

// terminate stops the dnsmasq of confPath whose PID is pid (see proc.Terminate).
func terminate(pid int, confPath string) error {
	return proc.Terminate(pid, "dnsmasq", dnsmasqOf(confPath))
}

// signal sends sig to the network's dnsmasq if it runs; ok says whether it did.
func signal(runDir string, sig unix.Signal) (bool, error) {
	pid, ok := find(runDir)
	if !ok {
		return false, nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !ours(pid, filepath.Join(runDir, ConfFile)) {
		return false, nil
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("signal dnsmasq %d: %w", pid, err)
	}
	return true, nil
}

// reachable checks that every directory from / down to dir can be searched by
// other users, and dir read, as dnsmasq needs after dropping privileges.
func reachable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		need := fs.FileMode(0o001)
		if d == dir {
			need = 0o005
		}
		if fi.Mode().Perm()&need != need {
			return fmt.Errorf("%s is mode %04o; other users need %s on it", d, fi.Mode().Perm(), map[fs.FileMode]string{1: "x", 5: "r-x"}[need])
		}
		if d == "/" {
			return nil
		}
	}
}

// writeFile writes data to path atomically (temp file in the same directory,
// fsync, rename), mode 0644. The temp file's name starts with a dot, which
// dnsmasq's directory watch ignores.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// removeTemps removes what a Start or a write killed midway left in dir: the
// daemon's start-up output file and the temp files of atomic writes. Every
// writer of runDir holds the network's lock, as do Start and Stop, so none
// of them is in use.
func removeTemps(dir string) error {
	var errs []error
	for _, pattern := range []string{".dnsmasq-start-*", ".*.tmp*"} {
		names, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, n := range names {
			if err := os.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
