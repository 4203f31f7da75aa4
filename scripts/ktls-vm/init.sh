#!/bin/busybox sh
# shellcheck shell=dash
# /init of the kTLS test VM. scripts/ktls-vm.sh packs this file into the initramfs together with
# busybox, the kernel's tls.ko and crypto modules, openssl, the proxy and the test executable, and
# writes /t/run.conf beside it (the test executable, the guest environment and the test
# arguments). Everything printed here goes to the serial console, which the host script streams
# and then reads for its verdict: `test result: ok` and `VM_EXIT=0`.
/bin/busybox --install -s
export PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip link set lo up
# The boot messages are of no interest; clearing them leaves what the tests caused for a failure.
dmesg -c >/dev/null

# Sets TEST_EXE, exports the guest environment and sets the positional arguments.
# shellcheck source=/dev/null
. /t/run.conf

finish() {
    echo "--- /proc/net/tls_stat"
    cat /proc/net/tls_stat 2>&1
    echo "--- modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
    if [ "$1" != 0 ]; then
        echo "--- kernel messages since /init started (last 60 lines)"
        dmesg | tail -n 60
    fi
    echo "VM_EXIT=$1"
    sync
    poweroff -f
    sleep 60 # poweroff -f does not return; keep init alive until the machine is off
}

echo "ktls-vm: kernel $(uname -r), $(nproc) CPU(s), $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
if ! insmod "/lib/modules/$(uname -r)/kernel/net/tls/tls.ko"; then
    echo "ktls-vm: insmod tls.ko failed"
    finish 90
fi
# What udev does on a real host: the AES-NI implementation when the CPU has it. The crypto the
# kTLS socket needs (gcm, chacha20poly1305, ...) the kernel loads itself through busybox modprobe.
# Under TCG this halves the time of the kernel's AES-GCM compared with aes-generic.
if grep -qw aes /proc/cpuinfo; then
    modprobe -q aesni_intel || echo "ktls-vm: aesni_intel not loaded (aes-generic is used)"
fi
ulp=$(cat /proc/sys/net/ipv4/tcp_available_ulp)
echo "tcp_available_ulp: $ulp"
case " $ulp " in
    *" tls "*) ;;
    *)
        echo "ktls-vm: tls.ko is loaded but tcp_available_ulp lacks tls"
        finish 91
        ;;
esac

# The harness finds gembok-proxy in the parent of the executable's deps/ directory.
cd /t || finish 92
echo "ktls-vm: running $TEST_EXE --include-ignored --test-threads=1 $*"
"$TEST_EXE" --include-ignored --test-threads=1 "$@"
finish $?
