// Package qemu assembles and boots a tiny real QEMU guest for end-to-end
// tests: a Debian cloud kernel plus a busybox initramfs that takes a DHCP
// lease, pings and resolves what the test asks for on the kernel command line,
// reports on the serial console and powers off.
//
// Everything is assembled at run time from Debian packages (apt-get download,
// dpkg-deb -x) into a cache directory outside the repository; nothing
// downloaded is ever committed. A second build with the same package versions
// downloads nothing.
package qemu

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
)

// Debian packages the guest is made of.
const (
	KernelMetaPackage = "linux-image-cloud-amd64"
	BusyboxPackage    = "busybox-static"
)

// builderRevision changes whenever the layout of the initramfs changes in a
// way the scripts' text does not show, so that old cached guests are rebuilt.
const builderRevision = "1"

// rootModules are the kernel modules the guest needs for its NIC; their
// dependencies are found in the modules' own .modinfo. A module that is not
// there because the kernel has it built in is fine.
var rootModules = []string{"virtio_pci", "virtio_net"}

// ErrUnavailable wraps the errors that mean "this machine cannot make a guest"
// (no apt, no package lists, the packages cannot be downloaded): a test skips
// on them instead of failing.
var ErrUnavailable = errors.New("guest packages unavailable")

// Guest is a built guest: a kernel and an initramfs to pass to QEMU.
type Guest struct {
	Kernel  string // path of the vmlinuz
	Initrd  string // path of the gzip'd newc initramfs
	Version string // the kernel package and busybox versions it was made from
	Modules []string
	Cached  bool // true when nothing had to be built
}

// DefaultCacheDir is where guests are kept between runs unless
// BROUTER_E2E_CACHE says otherwise: /var/cache/brouter-e2e when writable
// (root), else the user's cache directory.
func DefaultCacheDir() string {
	if d := os.Getenv("BROUTER_E2E_CACHE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/brouter-e2e"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "brouter-e2e")
	}
	return filepath.Join(os.TempDir(), "brouter-e2e-cache")
}

// BuildGuest returns the kernel and initrd of the test guest, building them in
// cacheDir if this combination of package versions has not been built yet.
func BuildGuest(ctx context.Context, cacheDir string) (kernel, initrd string, err error) {
	g, err := Build(ctx, cacheDir)
	if err != nil {
		return "", "", err
	}
	return g.Kernel, g.Initrd, nil
}

// Build is BuildGuest with the details.
func Build(ctx context.Context, cacheDir string) (*Guest, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: cache dir: %w", err)
	}
	unlock, err := lockDir(cacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	kpkg, kver, bver, err := resolveVersions(ctx)
	if err != nil {
		// No package lists or no apt: a guest built earlier still does.
		if g, lerr := lastGuest(cacheDir); lerr == nil {
			g.Cached = true
			return g, nil
		}
		return nil, err
	}
	version := fmt.Sprintf("%s=%s %s=%s", kpkg, kver, BusyboxPackage, bver)
	dhcp6cDir, dhcp6cSrc, err := dhcp6cSource()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{version, builderRevision, initScript, udhcpcScript, dhcp6cSrc}, "\x00")))
	key := hex.EncodeToString(sum[:8])
	dir := filepath.Join(cacheDir, "guest-"+key)
	g := &Guest{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.gz"), Version: version}
	if mods, err := os.ReadFile(filepath.Join(dir, "modules")); err == nil {
		if _, err := os.Stat(g.Kernel); err == nil {
			if _, err := os.Stat(g.Initrd); err == nil {
				g.Modules = strings.Fields(string(mods))
				g.Cached = true
				_ = os.WriteFile(filepath.Join(cacheDir, "last"), []byte(dir+"\n"), 0o644)
				return g, nil
			}
		}
	}

	debs := filepath.Join(cacheDir, "debs")
	kdeb, err := download(ctx, debs, kpkg, kver)
	if err != nil {
		return nil, err
	}
	bdeb, err := download(ctx, debs, BusyboxPackage, bver)
	if err != nil {
		return nil, err
	}

	work, err := os.MkdirTemp(cacheDir, "build-")
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	defer os.RemoveAll(work)
	kroot, broot := filepath.Join(work, "kernel"), filepath.Join(work, "busybox")
	for _, x := range [][2]string{{kdeb, kroot}, {bdeb, broot}} {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", x[0], x[1]).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("qemu: dpkg-deb -x %s: %v: %s", filepath.Base(x[0]), err, bytes.TrimSpace(out))
		}
	}

	vmlinuz, err := findOne(kroot, []string{"boot/vmlinuz-*"})
	if err != nil {
		return nil, err
	}
	busybox, err := findOne(broot, []string{"bin/busybox", "usr/bin/busybox"})
	if err != nil {
		return nil, err
	}
	modDir, err := findOne(kroot, []string{"lib/modules/*", "usr/lib/modules/*"})
	if err != nil {
		return nil, err
	}
	kconfig, _ := findOne(kroot, []string{"boot/config-*"})
	mods, err := resolveModules(modDir, kconfig, rootModules)
	if err != nil {
		return nil, err
	}

	tmpDir, err := os.MkdirTemp(cacheDir, "guest-tmp-")
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	if err := os.Chmod(tmpDir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	if err := copyFile(vmlinuz, filepath.Join(tmpDir, "vmlinuz")); err != nil {
		return nil, err
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	dhcp6c, err := buildDHCP6C(ctx, dhcp6cDir, work)
	if err != nil {
		return nil, err
	}
	if err := writeInitramfs(filepath.Join(tmpDir, "initrd.gz"), busybox, dhcp6c, mods); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmpDir, "modules"), []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmpDir, "version"), []byte(version+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmpDir, dir); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	_ = os.WriteFile(filepath.Join(cacheDir, "last"), []byte(dir+"\n"), 0o644)
	g.Modules = names
	return g, nil
}

// lastGuest is the guest built last, for when apt cannot say which versions
// are current.
func lastGuest(cacheDir string) (*Guest, error) {
	b, err := os.ReadFile(filepath.Join(cacheDir, "last"))
	if err != nil {
		return nil, err
	}
	dir := strings.TrimSpace(string(b))
	g := &Guest{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.gz")}
	v, err := os.ReadFile(filepath.Join(dir, "version"))
	if err != nil {
		return nil, err
	}
	g.Version = strings.TrimSpace(string(v))
	// A guest built from other scripts would not report what the test reads.
	sum := sha256.Sum256([]byte(strings.Join([]string{g.Version, builderRevision, initScript, udhcpcScript}, "\x00")))
	if filepath.Base(dir) != "guest-"+hex.EncodeToString(sum[:8]) {
		return nil, fmt.Errorf("qemu: last guest %s is from other scripts", dir)
	}
	if m, err := os.ReadFile(filepath.Join(dir, "modules")); err == nil {
		g.Modules = strings.Fields(string(m))
	}
	for _, f := range []string{g.Kernel, g.Initrd} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("qemu: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("qemu: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

var depRE = regexp.MustCompile(`^\s*([a-z0-9][a-z0-9+.-]*)\s*\(=\s*([^)\s]+)\s*\)`)

// resolveVersions asks apt (locally, from its package lists) which kernel
// package linux-image-cloud-amd64 currently points at and which busybox.
func resolveVersions(ctx context.Context) (kpkg, kver, bver string, err error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", "", "", fmt.Errorf("qemu: %w: apt-cache not found (needs a Debian system)", ErrUnavailable)
	}
	meta, err := aptShow(ctx, KernelMetaPackage)
	if err != nil {
		return "", "", "", err
	}
	for _, d := range strings.Split(meta["Depends"], ",") {
		if m := depRE.FindStringSubmatch(d); m != nil && strings.HasPrefix(m[1], "linux-image-") {
			kpkg, kver = m[1], m[2]
			break
		}
	}
	if kpkg == "" {
		return "", "", "", fmt.Errorf("qemu: %w: %s depends on no linux-image-VERSION package (Depends: %s)", ErrUnavailable, KernelMetaPackage, meta["Depends"])
	}
	bb, err := aptShow(ctx, BusyboxPackage)
	if err != nil {
		return "", "", "", err
	}
	return kpkg, kver, bb["Version"], nil
}

// aptShow returns the fields of a package's candidate version.
func aptShow(ctx context.Context, pkg string) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return nil, fmt.Errorf("qemu: %w: apt-cache show %s: %v %s (run apt-get update?)", ErrUnavailable, pkg, err, strings.TrimSpace(stderr.String()))
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" {
			break // the first stanza only
		}
		if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if fields["Version"] == "" {
		return nil, fmt.Errorf("qemu: %w: apt-cache show %s: no version", ErrUnavailable, pkg)
	}
	return fields, nil
}

// download fetches pkg=ver into dir unless it is there already, and returns
// the .deb's path.
func download(ctx context.Context, dir, pkg, ver string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("qemu: %w", err)
	}
	// apt names the file pkg_VERSION_ARCH.deb with ':' in the version escaped as %3a.
	pattern := filepath.Join(dir, pkg+"_"+strings.ReplaceAll(ver, ":", "%3a")+"_*.deb")
	if m, _ := filepath.Glob(pattern); len(m) > 0 {
		return m[0], nil
	}
	tmp, err := os.MkdirTemp(dir, "dl-")
	if err != nil {
		return "", fmt.Errorf("qemu: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg+"="+ver)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("qemu: %w: apt-get download %s=%s: %v: %s", ErrUnavailable, pkg, ver, err, bytes.TrimSpace(out))
	}
	m, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(m) != 1 {
		return "", fmt.Errorf("qemu: apt-get download %s=%s: no .deb in %s", pkg, ver, tmp)
	}
	dst := filepath.Join(dir, filepath.Base(m[0]))
	if err := os.Rename(m[0], dst); err != nil {
		return "", fmt.Errorf("qemu: %w", err)
	}
	return dst, nil
}

func findOne(root string, patterns []string) (string, error) {
	for _, p := range patterns {
		m, _ := filepath.Glob(filepath.Join(root, p))
		sort.Strings(m)
		if len(m) > 0 {
			return m[len(m)-1], nil
		}
	}
	return "", fmt.Errorf("qemu: none of %s in the extracted package", strings.Join(patterns, ", "))
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}

// module is a kernel module to load, decompressed.
type module struct {
	name string
	data []byte
}

func modName(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if strings.HasSuffix(base, ext) {
			return strings.ReplaceAll(strings.TrimSuffix(base, ext), "-", "_")
		}
	}
	return ""
}

// resolveModules returns roots and their dependencies, each after the modules
// it depends on (the order insmod needs). A root the kernel has built in
// (CONFIG_...=y, or simply absent from the modules) is skipped.
func resolveModules(modDir, kconfig string, roots []string) ([]module, error) {
	index := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n := modName(p); n != "" && !d.IsDir() {
			index[n] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("qemu: modules: %w", err)
	}
	var cfg []byte
	if kconfig != "" {
		cfg, _ = os.ReadFile(kconfig)
	}
	var out []module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, root bool) error
	visit = func(name string, root bool) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("qemu: module dependency cycle at %s", name)
		case 2:
			return nil
		}
		path, ok := index[name]
		if !ok {
			if root && (len(cfg) == 0 || bytes.Contains(cfg, []byte("\nCONFIG_"+strings.ToUpper(name)+"=y"))) {
				state[name] = 2 // built in
				return nil
			}
			return fmt.Errorf("qemu: kernel module %s not in the kernel package", name)
		}
		state[name] = 1
		data, err := readModule(path)
		if err != nil {
			return err
		}
		deps, err := modDepends(data)
		if err != nil {
			return fmt.Errorf("qemu: %s: %w", filepath.Base(path), err)
		}
		for _, d := range deps {
			if err := visit(d, false); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, module{name: name, data: data})
		return nil
	}
	for _, r := range roots {
		if err := visit(r, true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readModule reads a .ko, decompressing .ko.xz/.ko.zst/.ko.gz: busybox insmod
// in the guest is given plain ELF only.
func readModule(path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".ko.xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".ko.zst"):
		tool = "zstd"
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("qemu: %s: %w", path, err)
		}
		return io.ReadAll(zr)
	default:
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		return b, nil
	}
	if _, err := exec.LookPath(tool); err != nil {
		pkg := map[string]string{"xz": "xz-utils", "zstd": "zstd"}[tool]
		return nil, fmt.Errorf("qemu: %s is compressed and %s is not installed (Debian package %s)", filepath.Base(path), tool, pkg)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("qemu: %s -dc %s: %v: %s", tool, filepath.Base(path), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// modDepends reads "depends=" from a module's .modinfo section (what
// `modinfo -F depends` prints), so that kmod need not be installed.
func modDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// writeInitramfs packs the guest's root: busybox, /init, the udhcpc hook, the
// modules and /dev/console, as a gzip'd newc cpio.
func writeInitramfs(dst, busybox string, dhcp6c []byte, mods []module) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	c := newCPIOWriter(zw)
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "etc", "tmp", "run", "modules"} {
		c.Dir(d)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.CharDev("dev/null", 0o666, 1, 3)
	c.File("bin/busybox", 0o755, bb)
	c.Symlink("bin/sh", "busybox")
	c.File("init", 0o755, []byte(initScript))
	c.File("udhcpc.script", 0o755, []byte(udhcpcScript))
	c.File("bin/dhcp6c", 0o755, dhcp6c)
	var order []string
	for _, m := range mods {
		c.File("modules/"+m.name+".ko", 0o644, m.data)
		order = append(order, m.name)
	}
	c.File("modules/order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	if err := c.Close(); err != nil {
		return fmt.Errorf("qemu: initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("qemu: initramfs: %w", err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}

// dhcp6cSource returns the directory and the source of the guest's DHCPv6
// client (./dhcp6c beside this file; Debian's busybox has no udhcpc6).
func dhcp6cSource() (dir, src string, err error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", "", errors.New("qemu: cannot locate the dhcp6c source")
	}
	dir = filepath.Join(filepath.Dir(self), "dhcp6c")
	b, err := os.ReadFile(filepath.Join(dir, "main.go"))
	if err != nil {
		return "", "", fmt.Errorf("qemu: dhcp6c source: %w", err)
	}
	return dir, string(b), nil
}

// buildDHCP6C compiles the guest's DHCPv6 client, static, into work.
func buildDHCP6C(ctx context.Context, dir, work string) ([]byte, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	out := filepath.Join(work, "dhcp6c")
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu: build the guest's dhcp6c: %v: %s", err, bytes.TrimSpace(b))
	}
	return os.ReadFile(out)
}
