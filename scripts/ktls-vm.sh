#!/usr/bin/env bash
# Runs the kTLS integration tests (tests/tests/ktls.rs, all `#[ignore]`d on a host without kTLS)
# inside a qemu VM whose Debian kernel has CONFIG_TLS. One command:
#
#   scripts/ktls-vm.sh [TEST ARGS...]     # e.g. scripts/ktls-vm.sh sidecar_pair --nocapture
#
# Steps (each one is timed; the summary is printed at the end):
#   download   resolve the kernel through its meta package (the ABI name changes with security
#              updates), busybox-static, openssl + libssl3, and the qemu-system-x86 packages this
#              host lacks (`apt-get install -s`), and `apt-get download` those not cached yet.
#              qemu is never installed: on this machine that would remove the preinstalled
#              qemu-utils. If, and only if, the packages cannot be fetched, print SKIP and exit 0.
#   extract    `dpkg-deb --fsys-tarfile` / `dpkg -x` into the cache, once per package version;
#              `.ko.xz` modules (6.12 kernels) are decompressed because busybox insmod needs `.ko`.
#   build      `cargo test --workspace --no-run`, `cargo test --workspace --test ktls --no-run
#              --message-format=json` (the JSON names the test executable). --workspace, not -p:
#              the same features as scripts/test.sh's builds, so nothing is rebuilt after them.
#   initramfs  /t/deps/<test exe>, /t/gembok-proxy (the harness looks for the proxy beside deps/),
#              their shared libraries (ldd), openssl, busybox, tls.ko and the crypto modules the
#              kernel autoloads through busybox modprobe (after `busybox depmod`), /tmp, and
#              scripts/ktls-vm/init.sh as /init.
#   boot+tests qemu with `-accel tcg,thread=single` (the host's KVM is PVM: a normal guest hangs)
#              under a hard `timeout`; the serial console is streamed to stdout and written to a
#              log (a guest kernel that crashes before /init starts is booted once more). /init runs
#              the test executable with `--include-ignored --test-threads=1 [TEST ARGS...]`, prints
#              /proc/net/tls_stat and `VM_EXIT=<rc>`, and powers off.
# Verdict: exit 0 only if the log has `test result: ok`, at least one test ran, and `VM_EXIT=0`;
# a hang (timeout), a missing verdict or any failure exits non-zero.
#
# Environment (defaults in brackets):
#   GEMBOK_KTLS_VM_TEST     test target of gembok-tests to run [ktls]
#   GEMBOK_KTLS_VM_TIMEOUT  hard limit for the VM run, seconds [600]
#   GEMBOK_KTLS_VM_CACHE    downloaded .debs and extracted trees, reused across runs, keyed by
#                           package version [${XDG_CACHE_HOME:-$HOME/.cache}/gembok/ktls-vm]
#   GEMBOK_KTLS_VM_KERNEL   kernel meta package [linux-image-cloud-amd64]
#   GEMBOK_KTLS_VM_SUITE    take the kernel from this Debian suite instead of the host's apt
#                           sources, e.g. trixie-backports (a kernel that can rekey kTLS, 6.14+);
#                           its package list is kept in the cache, the host's apt is untouched
#   GEMBOK_KTLS_VM_MIRROR   Debian mirror for GEMBOK_KTLS_VM_SUITE [http://deb.debian.org/debian]
#   GEMBOK_KTLS_VM_MEM      guest memory, MiB [1024]
#   GEMBOK_KTLS_VM_SMP      guest CPUs [2]
#   GEMBOK_KTLS_VM_CPU      qemu CPU model [max]
#   GEMBOK_KTLS_VM_TCG_THREAD  single or multi [single]: multi-threaded TCG is about 1.5 times
#                           faster but once crashed the 7.3 kernel while it patched its own text
#   GEMBOK_KTLS_VM_APPEND   more kernel command-line words, e.g. rdinit=/nonexistent to see a
#                           crash before /init (and its one retry)
#   GEMBOK_KTLS_VM_HANDSHAKE_TIMEOUT  the proxy's --handshake-timeout in the guest [60s]
#   GEMBOK_KTLS_VM_OUT      work directory: initramfs tree, serial.log [<cargo target dir>/ktls-vm]
#   GEMBOK_KTLS_VM_GUEST_ENV  extra NAME=VALUE words exported in the guest, e.g. GEMBOK_LOG=debug
#   RUST_BACKTRACE, RUST_LOG are passed to the guest when set. GEMBOK_EXPECT_KTLS_REKEY is set
#   in the guest from the kernel version (1 from 6.14 on: the kernel can follow a TLS 1.3
#   KeyUpdate), so the tests check the proxy's probe against it.
# The serial log (<out>/serial.log) holds the whole console: kernel version, tcp_available_ulp,
# the test harness output, /proc/net/tls_stat, the last dmesg lines on failure, and VM_EXIT.
# Measured timings are in scripts/ktls-vm/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

test_target=${GEMBOK_KTLS_VM_TEST:-ktls}
vm_timeout=${GEMBOK_KTLS_VM_TIMEOUT:-600}
kernel_suite=${GEMBOK_KTLS_VM_SUITE:-}
mirror=${GEMBOK_KTLS_VM_MIRROR:-http://deb.debian.org/debian}
# One cache (and work directory) per kernel source, so runs with two kernels do not evict
# each other's packages.
suffix=${kernel_suite:+-$kernel_suite}
cache=${GEMBOK_KTLS_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gembok/ktls-vm$suffix}
kernel_meta=${GEMBOK_KTLS_VM_KERNEL:-linux-image-cloud-amd64}
vm_mem=${GEMBOK_KTLS_VM_MEM:-1024}
vm_smp=${GEMBOK_KTLS_VM_SMP:-2}
vm_cpu=${GEMBOK_KTLS_VM_CPU:-max}
vm_tcg_thread=${GEMBOK_KTLS_VM_TCG_THREAD:-single}

say() { printf 'ktls-vm: %s\n' "$*" >&2; }
die() {
    say "FAIL: $*"
    exit 1
}
skip() {
    say "SKIP: $*"
    say "SKIP: the kTLS tests did not run (the Debian packages for the VM cannot be fetched)"
    exit 0
}

now() { date +%s.%N; }
t_start=$(now)
declare -a timing=()
phase_start=$t_start
phase_end() {
    local t
    t=$(now)
    timing+=("$(awk -v n="$1" -v a="$t" -v b="$phase_start" 'BEGIN {printf "%-10s %6.1f s", n, a - b}')")
    phase_start=$t
}
print_timings() {
    local t
    t=$(now)
    say "timings:"
    printf '  %s\n' "${timing[@]}" >&2
    printf '  %-10s %6.1f s\n' total "$(awk -v a="$t" -v b="$t_start" 'BEGIN{print a-b}')" >&2
}

apt_helper=/usr/lib/apt/apt-helper
[[ -x $apt_helper ]] || skip "$apt_helper is not available on this host"
for tool in apt-get apt-cache dpkg-deb cargo python3 timeout ldd sha256sum flock xz; do
    command -v "$tool" >/dev/null || {
        [[ $tool == apt-* || $tool == dpkg-deb ]] && skip "$tool is not available on this host"
        die "$tool is required"
    }
done

# ---------------------------------------------------------------------------------------------
# download
mkdir -p "$cache/debs"
# One run at a time per cache: a second one waits instead of extracting over the first.
exec 9>"$cache/.lock"
flock -n 9 || {
    say "another ktls-vm run holds $cache/.lock; waiting"
    flock 9
}

key() { sha256sum <<<"$*" | cut -c1-16; }

# apt options for the kernel's own package list (GEMBOK_KTLS_VM_SUITE), kept in the cache.
kernel_apt=()
if [[ -n $kernel_suite ]]; then
    suite_dir=$cache/apt
    mkdir -p "$suite_dir/lists/partial"
    printf 'deb %s %s main\n' "$mirror" "$kernel_suite" >"$suite_dir/sources.list"
    kernel_apt=(-o "Dir::Etc::SourceList=$suite_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$suite_dir/lists")
fi
update_kernel_lists() {
    ((${#kernel_apt[@]})) || return 0
    apt-get "${kernel_apt[@]}" update -qq >/dev/null 2>&1
}

# "<file> <sha256> <url>" lines from `apt-get download --print-uris`.
uris() { awk '{gsub("\047", "", $1); split($4, h, ":"); print $2, h[2], $1}'; }

# Prints "<file> <sha256> <url>" for every package to use; the qemu list depends on the host.
# Since Linux 7, Debian splits the image into linux-binary-* (vmlinuz) and linux-modules-*.
resolve() {
    local kpkg kdeps qpkgs
    kpkg=$(apt-cache "${kernel_apt[@]}" depends "$kernel_meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    [[ -n $kpkg ]] || return 1
    kdeps=$(apt-cache "${kernel_apt[@]}" depends "$kpkg" 2>/dev/null |
        awk '/Depends: linux-(binary|modules)-/ && !/unsigned/ {print $2}')
    qpkgs=$(apt-get install -s --no-install-recommends qemu-system-x86 2>/dev/null | awk '/^Inst / {print $2}') || return 1
    # shellcheck disable=SC2086 # word splitting of the package lists is intended
    apt-get "${kernel_apt[@]}" download --print-uris ${kdeps:-$kpkg} 2>/dev/null | uris
    # shellcheck disable=SC2086
    apt-get download --print-uris busybox-static openssl libssl3 $qpkgs 2>/dev/null | uris
}

# Downloads what the cache lacks into a scratch directory, checks SHA-256, then moves it in.
# apt-helper is apt's own transport: the same proxy and authentication settings as apt-get.
fetch() {
    local list=$1 file sum url scratch
    local -a missing=()
    while read -r file sum url; do
        if [[ -f $cache/debs/$file ]] && echo "$sum  $cache/debs/$file" | sha256sum -c --status; then
            continue
        fi
        missing+=("$file $sum $url")
    done <<<"$list"
    ((${#missing[@]})) || return 0
    say "downloading ${#missing[@]} package(s)"
    scratch=$(mktemp -d "$cache/debs/.partial.XXXXXX")
    local entry err
    for entry in "${missing[@]}"; do
        read -r file sum url <<<"$entry"
        if ! err=$("$apt_helper" -o APT::Sandbox::User=root download-file "$url" "$scratch/$file" "SHA256:$sum" 2>&1); then
            say "download of $file failed: $(tail -n 1 <<<"$err")"
            rm -rf "$scratch"
            return 1
        fi
        if ! echo "$sum  $scratch/$file" | sha256sum -c --status; then
            say "$file: missing or wrong SHA-256 after download"
            rm -rf "$scratch"
            return 1
        fi
    done
    for entry in "${missing[@]}"; do
        read -r file _ <<<"$entry"
        mv "$scratch/$file" "$cache/debs/$file"
    done
    rm -rf "$scratch"
}

# Resolving takes apt several seconds; the answer only changes with the package lists, the
# host's installed packages and the kernel meta package, so it is kept under that key.
resolve_cached() {
    local k f
    k=$(key "$kernel_meta" "$kernel_suite" "$(stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* \
        ${suite_dir:+"$suite_dir"/lists/*Packages*} /var/lib/dpkg/status 2>/dev/null)")
    f=$cache/resolved-$k
    if [[ ! -s $f ]]; then
        rm -f "$cache"/resolved-*
        if ! resolve >"$f.tmp" || [[ ! -s $f.tmp ]]; then
            rm -f "$f.tmp"
            return 1
        fi
        mv "$f.tmp" "$f"
    fi
    cat "$f"
}

if ((${#kernel_apt[@]})) && ! compgen -G "$suite_dir/lists/*Packages*" >/dev/null; then
    update_kernel_lists || skip "cannot fetch the package list of $kernel_suite from $mirror"
fi
list=$(resolve_cached) || list=
if [[ -z $list ]] || ! fetch "$list"; then
    say "package lists missing or stale: apt-get update"
    apt-get update -qq >/dev/null 2>&1 || skip "apt-get update failed"
    update_kernel_lists || skip "cannot fetch the package list of $kernel_suite from $mirror"
    if ! list=$(resolve_cached) || [[ -z $list ]]; then
        # Lists without even busybox-static mean the mirrors were not reached; otherwise the
        # kernel meta package is wrong, which is an error, not a reason to skip.
        grep -q 'Candidate: [0-9]' <<<"$(apt-cache policy busybox-static 2>/dev/null)" ||
            skip "no Debian package lists (the mirrors cannot be reached)"
        die "cannot resolve $kernel_meta (GEMBOK_KTLS_VM_KERNEL${kernel_suite:+ in $kernel_suite}), busybox-static, openssl, libssl3 or qemu-system-x86"
    fi
    fetch "$list" || skip "apt-get download failed"
fi
debs() { awk -v re="$1" '$1 ~ re {print $1}' <<<"$list"; }
kernel_debs=$(debs '^linux-(image|binary|modules)-')
busybox_deb=$(debs '^busybox-static_')
openssl_debs=$(debs '^(openssl|libssl3)_')
qemu_debs=$(debs '.' | grep -Ev '^(linux-(image|binary|modules)-|busybox-static_|openssl_|libssl3_)' || true)
[[ -n $kernel_debs && -n $busybox_deb ]] || die "package resolution gave no kernel or busybox"
phase_end download

# ---------------------------------------------------------------------------------------------
# extract: one directory per package set, named after its versions; a stamp marks it complete.
extracted() { # DIR: true when DIR was extracted completely before
    [[ -f $1/.complete ]]
}
fresh_dir() {
    rm -rf "$1"
    mkdir -p "$1"
}

# Kept: vmlinuz and the modules the guest needs, as boot/vmlinuz-<kver> and lib/modules/<kver>,
# whether the packages use /boot + /lib/modules (up to Linux 6) or /usr/lib/modules/<kver>.
kdir=$cache/kernel-$(key "$kernel_debs")
if ! extracted "$kdir"; then
    say "extracting $(tr '\n' ' ' <<<"$kernel_debs")"
    fresh_dir "$kdir"
    all=$kdir/.all
    mkdir -p "$all"
    for deb in $kernel_debs; do dpkg-deb --fsys-tarfile "$cache/debs/$deb" | tar -x -C "$all"; done
    moddir=$(find "$all/lib/modules" "$all/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -n 1 || true)
    [[ -n $moddir ]] || die "no modules directory in $kernel_debs"
    kv=${moddir##*/}
    image=$(find "$all/boot/vmlinuz-$kv" "$moddir/vmlinuz" -maxdepth 0 -type f 2>/dev/null | head -n 1 || true)
    [[ -n $image ]] || die "no vmlinuz for $kv in $kernel_debs"
    mkdir -p "$kdir/boot" "$kdir/lib/modules/$kv/kernel"
    cp "$image" "$kdir/boot/vmlinuz-$kv"
    for sub in crypto arch/x86/crypto lib/crypto net/tls; do
        [[ -d $moddir/kernel/$sub ]] || continue
        dest=$kdir/lib/modules/$kv/kernel/$(dirname "$sub")
        mkdir -p "$dest"
        cp -a "$moddir/kernel/$sub" "$dest/"
    done
    for f in modules.builtin modules.order; do
        [[ -f $moddir/$f ]] && cp "$moddir/$f" "$kdir/lib/modules/$kv/"
    done
    rm -rf "$all"
    find "$kdir/lib/modules" -name '*.ko.xz' -exec xz -d {} +
    touch "$kdir/.complete"
fi
vmlinuz=$(echo "$kdir"/boot/vmlinuz-*)
kver=${vmlinuz##*/vmlinuz-}
[[ -f $vmlinuz && -f $kdir/lib/modules/$kver/kernel/net/tls/tls.ko ]] ||
    die "$kernel_debs: no vmlinuz or net/tls/tls.ko (kernel without CONFIG_TLS=m?)"
# TLS 1.3 rekey of kTLS sockets arrived in Linux 6.14.
IFS=. read -r kmajor kminor _ <<<"$kver"
if ((kmajor > 6 || (kmajor == 6 && ${kminor%%[!0-9]*} >= 14))); then expect_rekey=1; else expect_rekey=0; fi

bdir=$cache/busybox-${busybox_deb%.deb}
if ! extracted "$bdir"; then
    fresh_dir "$bdir"
    dpkg -x "$cache/debs/$busybox_deb" "$bdir"
    touch "$bdir/.complete"
fi
busybox=$bdir/bin/busybox
[[ -x $busybox ]] || die "$busybox_deb has no bin/busybox"

odir=$cache/openssl-$(key "$openssl_debs")
if ! extracted "$odir"; then
    fresh_dir "$odir"
    for deb in $openssl_debs; do dpkg -x "$cache/debs/$deb" "$odir"; done
    touch "$odir/.complete"
fi

if [[ -n $qemu_debs ]]; then
    qdir=$cache/qemu-$(key "$qemu_debs")
    if ! extracted "$qdir"; then
        say "extracting $(wc -w <<<"$qemu_debs") qemu package(s)"
        fresh_dir "$qdir"
        for deb in $qemu_debs; do dpkg -x "$cache/debs/$deb" "$qdir"; done
        touch "$qdir/.complete"
    fi
    grep -q '^qemu-system-x86_' <<<"$qemu_debs" ||
        die "the host has part of qemu-system-x86 installed: install it completely or remove it"
    qemu=$qdir/usr/bin/qemu-system-x86_64
    qemu_env=(env "LD_LIBRARY_PATH=$qdir/usr/lib/x86_64-linux-gnu:$qdir/lib/x86_64-linux-gnu")
    qemu_fw=(-L "$qdir/usr/share/seabios" -L "$qdir/usr/share/qemu")
else
    # qemu-system-x86 is installed on this host already (apt-get install -s has nothing to do).
    qemu=$(command -v qemu-system-x86_64) || die "apt says qemu-system-x86 is installed, but no qemu-system-x86_64"
    qemu_env=()
    qemu_fw=()
    qdir=
fi

# Keep only what the current package versions use.
current=" $(tr '\n' ' ' <<<"$(awk '{print $1}' <<<"$list")") "
for f in "$cache"/debs/*.deb; do
    [[ -e $f && $current != *" ${f##*/} "* ]] && rm -f "$f"
done
for d in "$cache"/kernel-* "$cache"/busybox-* "$cache"/openssl-* "$cache"/qemu-*; do
    [[ -d $d && $d != "$kdir" && $d != "$bdir" && $d != "$odir" && $d != "$qdir" ]] && rm -rf "$d"
done
phase_end extract

# ---------------------------------------------------------------------------------------------
# build
# cargo test --workspace, like scripts/test.sh's build and nextest run: the same feature set (the
# dev-dependencies' included), so the artifacts those built are reused, gembok-proxy's binary
# among them. `cargo build --bins` or -p would resolve other features and rebuild the tree.
cargo test --locked --workspace --no-run
cargo_json=$(cargo test --locked --workspace --test "$test_target" --no-run --message-format=json) ||
    die "cargo test --test $test_target --no-run failed"
test_exe=$(python3 -c '
import json, sys
target = sys.argv[1]
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if (msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == target
            and "test" in msg["target"]["kind"] and msg.get("executable")):
        print(msg["executable"])
' "$test_target" <<<"$cargo_json")
[[ -n $test_exe && -x $test_exe ]] || die "no executable for test target $test_target in cargo's output"
proxy_exe=$(dirname "$(dirname "$test_exe")")/gembok-proxy
[[ -x $proxy_exe ]] || die "$proxy_exe is missing after cargo build"
target_dir=$(dirname "$(dirname "$(dirname "$test_exe")")")
out=${GEMBOK_KTLS_VM_OUT:-$target_dir/ktls-vm$suffix}
phase_end build

# ---------------------------------------------------------------------------------------------
# initramfs
root=$out/root
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,root,etc,t/deps,lib/modules}
install -d -m 1777 "$root/tmp"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
cp "$busybox" "$root/bin/busybox"

# Debug symbols are most of a debug build's size; the guest keeps the symbol table only.
pack_exe() { # SRC DST
    if command -v objcopy >/dev/null; then
        objcopy --strip-debug "$1" "$2"
    else
        cp "$1" "$2"
    fi
}
pack_exe "$test_exe" "$root/t/deps/${test_exe##*/}"
pack_exe "$proxy_exe" "$root/t/gembok-proxy"

# openssl from the Debian packages (binary, libssl/libcrypto, providers, openssl.cnf).
cp -a "$odir/." "$root/"
rm -f "$root/.complete"
rm -rf "${root:?}/usr/share"

# The host's shared libraries each binary needs (glibc and friends), at the same paths.
libs=$(for exe in "$test_exe" "$proxy_exe"; do ldd "$exe"; done
    LD_LIBRARY_PATH=$odir/usr/lib/x86_64-linux-gnu ldd "$odir/usr/bin/openssl")
while read -r lib; do
    [[ $lib == "$odir"/* ]] && continue # packed above, from the package
    cp -L --parents "$lib" "$root/"
done < <(awk '$1 ~ /^\// {print $1} $2 == "=>" && $3 ~ /^\// {print $3}' <<<"$libs" | sort -u)
grep -q 'not found' <<<"$libs" && die "missing shared libraries: $(grep 'not found' <<<"$libs")"

mkdir -p "$root/lib/modules/$kver"
cp -a "$kdir/lib/modules/$kver/." "$root/lib/modules/$kver/"
"$busybox" depmod -b "$root" "$kver"

install -m 0755 "$repo/scripts/ktls-vm/init.sh" "$root/init"
{
    printf 'TEST_EXE=/t/deps/%s\n' "${test_exe##*/}"
    printf 'export GEMBOK_EXPECT_KTLS_REKEY=%s\n' "$expect_rekey"
    # The emulated CPU is some 30 times slower than the host, and single-threaded: 40 concurrent
    # handshakes (X25519MLKEM768, both sidecars) beside megabytes of kernel AES-GCM can take
    # longer than the proxy's 10 s default. The timeout itself is tested on the host.
    printf 'export GEMBOK_HANDSHAKE_TIMEOUT=%s\n' "${GEMBOK_KTLS_VM_HANDSHAKE_TIMEOUT:-60s}"
    for var in RUST_BACKTRACE RUST_LOG; do
        [[ -n ${!var:-} ]] && printf 'export %s=%s\n' "$var" "'${!var//\'/\'\\\'\'}'"
    done
    read -ra guest_env <<<"${GEMBOK_KTLS_VM_GUEST_ENV:-}"
    for assignment in "${guest_env[@]}"; do
        [[ $assignment =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] ||
            die "GEMBOK_KTLS_VM_GUEST_ENV: '$assignment' is not NAME=VALUE"
        value=${assignment#*=}
        printf "export %s='%s'\n" "${assignment%%=*}" "${value//\'/\'\\\'\'}"
    done
    printf 'set --'
    for arg in "$@"; do printf " '%s'" "${arg//\'/\'\\\'\'}"; done
    printf '\n'
} >"$root/t/run.conf"

initrd=$out/initrd.cpio.gz
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1 >"$initrd")
say "initramfs $(du -h "$initrd" | cut -f1) ($kver, ${test_exe##*/})"
phase_end initramfs

# ---------------------------------------------------------------------------------------------
# boot+tests
log=$out/serial.log
rm -f "$out/serial-boot-crash.log"
boot() {
    say "booting $kver under qemu -accel tcg,thread=$vm_tcg_thread (hard limit ${vm_timeout}s); serial log: $log"
    set +e
    "${qemu_env[@]}" timeout --kill-after=10 "$vm_timeout" "$qemu" "${qemu_fw[@]}" \
        -accel "tcg,thread=$vm_tcg_thread" -cpu "$vm_cpu" -smp "$vm_smp" -m "$vm_mem" \
        -display none -monitor none -serial stdio -nic none -no-reboot \
        -kernel "$vmlinuz" -initrd "$initrd" -append "console=ttyS0 quiet panic=-1${GEMBOK_KTLS_VM_APPEND:+ $GEMBOK_KTLS_VM_APPEND}" \
        </dev/null | sed -u 's/\r$//' | tee "$log"
    qemu_rc=${PIPESTATUS[0]}
    set -e
}
boot
# A guest kernel that crashed while booting, before /init printed its first line, ran none of
# our code: that is the emulator's or the kernel's failure (seen once in CI: an int3 oops from
# kernel text patching racing across vCPUs under multi-threaded TCG, now single-threaded by
# default). It is retried once, in the open; a crash after /init started is never retried.
if ((qemu_rc == 0)) && ! grep -q '^ktls-vm: kernel ' "$log" && grep -Eq 'Kernel panic|Oops:' "$log"; then
    mv "$log" "$out/serial-boot-crash.log"
    say "RETRY: the guest kernel crashed before /init started (log kept in $out/serial-boot-crash.log):"
    grep -Em3 'Kernel panic|Oops:|RIP:' "$out/serial-boot-crash.log" | sed 's/^/    /' >&2
    boot
fi
phase_end boot+tests
print_timings

if ((qemu_rc == 124 || qemu_rc == 137)); then
    die "the VM did not finish within ${vm_timeout}s (hang; see $log)"
fi
((qemu_rc == 0)) || die "qemu exited with $qemu_rc (see $log)"
vm_exit=$(sed -n 's/^VM_EXIT=\([0-9]*\)$/\1/p' "$log" | tail -n 1)
[[ -n $vm_exit ]] || die "no VM_EXIT line in $log (the guest did not finish /init)"
((vm_exit == 0)) || die "the tests failed in the VM (VM_EXIT=$vm_exit; see $log)"
grep -q '^test result: ok\.' "$log" || die "no 'test result: ok' in $log"
if grep -q '^running 0 tests$' "$log" || ! grep -q '^running [0-9]* tests\?$' "$log"; then
    die "no test ran in the VM (check the test arguments: $*)"
fi
say "PASS: $(grep '^test result:' "$log" | tail -n 1)"
