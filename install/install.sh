#!/usr/bin/env bash
# install/install.sh — install the built brouter programs where their callers look for them.
#
#   DESTDIR=   staging root (default: empty, i.e. the live system); DESTDIR=/tmp/x is a dry run
#   PREFIX=    /usr/local by default
#   BINDIR=    where `make build` put the binaries (default: bin)
#
# Layout (paths below are inside $DESTDIR):
#   $PREFIX/lib/brouter/<program>         every built program (brouter-wg: found next to network-virtual)
#   $PREFIX/sbin/network-virtual          -> ../lib/brouter/network-virtual (for admins)
#   /etc/xen/scripts/network-virtual      -> $PREFIX/lib/brouter/network-virtual   (xend network-script)
#   /etc/xen/scripts/vif-brouter          -> $PREFIX/lib/brouter/vif-brouter       (if built)
#   /etc/qemu-ifup, /etc/qemu-ifdown      -> $PREFIX/lib/brouter/qemu-if{up,down}  (if built)
#   /opt/cni/bin/brouter                  copy of the CNI plugin                   (if built)
#   $PREFIX/lib/brouter/bridge-helper     QEMU's bridge helper, setuid root (mode 4755) (if built)
#   /lib/systemd/system/brouter-network@.service
#   /lib/systemd/system/brouter-watch.service   enabled (network-virtual watch)
#   /etc/brouter/brouter.toml             only if absent (never overwrites a host's config)
#
# A file at a caller location that is not ours is kept as <file>.brouter-orig.
set -euo pipefail

cd "$(dirname "$0")/.."

DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/usr/local}"
BINDIR="${BINDIR:-bin}"
LIBDIR="$PREFIX/lib/brouter"

log() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

case "$PREFIX" in
/*) ;;
*) die "PREFIX must be an absolute path, got '$PREFIX'" ;;
esac
[ -x "$BINDIR/network-virtual" ] || die "$BINDIR/network-virtual not found; run 'make build' first"
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
	die "installing into the live system needs root (or set DESTDIR=/some/staging/dir)"
fi

# link TARGET LINK: make $DESTDIR$LINK a symlink to TARGET (a path on the installed system),
# keeping anything else found there as LINK.brouter-orig.
link() {
	local target=$1 path=$DESTDIR$2
	mkdir -p "$(dirname "$path")"
	if [ -L "$path" ] && [ "$(readlink "$path")" = "$target" ]; then
		return 0
	fi
	if [ -e "$path" ] || [ -L "$path" ]; then
		if [ -L "$path" ]; then
			rm -f "$path"
		else
			log "keeping existing $2 as $2.brouter-orig"
			mv -f "$path" "$path.brouter-orig"
		fi
	fi
	ln -s "$target" "$path"
	log "$2 -> $target"
}

# 1. Programs: the suite's own (hooks/ and plugins/), not the test tools the demo builds
#    into the same directory (xenstored-double, qemu-guest).
install -d -m 0755 "$DESTDIR$LIBDIR"
for name in network-virtual vif-brouter qemu-ifup qemu-ifdown brouter brouter-wg; do
	f=$BINDIR/$name
	[ -f "$f" ] && [ -x "$f" ] || continue
	install -m 0755 "$f" "$DESTDIR$LIBDIR/"
	log "$LIBDIR/$name"
done
link "../lib/brouter/network-virtual" "$PREFIX/sbin/network-virtual"

# The bridge helper is run by unprivileged users (QEMU's -netdev bridge,helper=): setuid
# root, since it keeps root's records under run_dir; it drops every capability but
# NET_ADMIN, NET_RAW, KILL and BPF at once (file capabilities alone cannot do: README).
if [ -x "$BINDIR/bridge-helper" ]; then
	if [ "$(id -u)" -eq 0 ]; then
		install -o root -g root -m 4755 "$BINDIR/bridge-helper" "$DESTDIR$LIBDIR/bridge-helper"
		log "$LIBDIR/bridge-helper (setuid root)"
	else
		install -m 0755 "$BINDIR/bridge-helper" "$DESTDIR$LIBDIR/bridge-helper"
		log "warning: $LIBDIR/bridge-helper is not setuid root (not installing as root); as root: chown root:root $LIBDIR/bridge-helper && chmod 4755 $LIBDIR/bridge-helper"
	fi
fi

# 2. Where the callers look.
link "$LIBDIR/network-virtual" /etc/xen/scripts/network-virtual
if [ -x "$BINDIR/vif-brouter" ]; then
	link "$LIBDIR/vif-brouter" /etc/xen/scripts/vif-brouter
fi
if [ -x "$BINDIR/qemu-ifup" ]; then
	link "$LIBDIR/qemu-ifup" /etc/qemu-ifup
	# qemu-ifdown: its own binary if built, else the same program called by that name.
	if [ -x "$BINDIR/qemu-ifdown" ]; then
		link "$LIBDIR/qemu-ifdown" /etc/qemu-ifdown
	else
		link "$LIBDIR/qemu-ifup" /etc/qemu-ifdown
	fi
fi
if [ -x "$BINDIR/brouter" ]; then
	# A copy, not a symlink: CNI bin dirs are often bind-mounted into runtimes' containers.
	install -d -m 0755 "$DESTDIR/opt/cni/bin"
	install -m 0755 "$BINDIR/brouter" "$DESTDIR/opt/cni/bin/brouter"
	log "/opt/cni/bin/brouter"
fi

# 3. systemd units (pointing at $PREFIX): the networks' template and the watcher.
install -d -m 0755 "$DESTDIR/lib/systemd/system"
for unit in brouter-network@.service brouter-watch.service; do
	sed "s|/usr/local/lib/brouter/|$LIBDIR/|g" "install/$unit" >"$DESTDIR/lib/systemd/system/$unit"
	chmod 0644 "$DESTDIR/lib/systemd/system/$unit"
	log "/lib/systemd/system/$unit"
done

# 4. Host config, only if absent.
install -d -m 0755 "$DESTDIR/etc/brouter"
if [ -e "$DESTDIR/etc/brouter/brouter.toml" ]; then
	log "/etc/brouter/brouter.toml exists; left unchanged (example: conf/brouter.toml)"
else
	install -m 0644 conf/brouter.toml "$DESTDIR/etc/brouter/brouter.toml"
	log "/etc/brouter/brouter.toml (example config; edit it)"
fi

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || log "warning: systemctl daemon-reload failed"
	# The watcher does nothing while no network runs; it is enabled with the suite.
	systemctl enable --now brouter-watch.service || log "warning: could not enable brouter-watch.service"
elif [ -z "$DESTDIR" ] || [ -n "${ENABLE_UNITS:-}" ]; then
	# No running systemd (a chroot, an image build): enable it for the next boot.
	install -d -m 0755 "$DESTDIR/etc/systemd/system/multi-user.target.wants"
	ln -sf /lib/systemd/system/brouter-watch.service "$DESTDIR/etc/systemd/system/multi-user.target.wants/brouter-watch.service"
	log "brouter-watch.service enabled (multi-user.target)"
fi
log "done. Enable a network at boot with: systemctl enable --now brouter-network@NAME"
