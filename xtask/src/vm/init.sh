#!/bin/busybox sh
# /init of pathcost's test VM (PID 1, busybox sh). Written into the initramfs by
# `cargo xtask`; see xtask/src/vm/initramfs.rs.
#
# It mounts the kernel file systems, loads the modules listed in
# /etc/pathcost-modules (dependencies first), mounts the host workspace over 9p at
# the path given as pathcost.workspace= on the kernel command line, runs /job.sh
# there, prints exactly one `init: success` or `init: failure (...)` line for the
# host to find, and powers off. PID 1 must never exit: that would panic the kernel.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export RUST_BACKTRACE=1

finish() {
    echo "init: $1"
    sync
    poweroff -f
    # Not reached; if power-off failed, wait for the host's timeout rather than
    # letting PID 1 exit.
    while :; do sleep 3600; done
}

fail() {
    finish "failure ($*)"
}

mount_fs() { # type source target
    mkdir -p "$3" || fail "mkdir $3"
    mount -t "$1" "$2" "$3" || fail "mount -t $1 on $3"
}

echo "init: started on $(uname -r)"
mount_fs proc proc /proc
mount_fs sysfs sysfs /sys
mount_fs devtmpfs devtmpfs /dev
mount_fs debugfs debugfs /sys/kernel/debug
mount_fs tracefs tracefs /sys/kernel/tracing
mount_fs bpf bpffs /sys/fs/bpf
mount_fs tmpfs tmpfs /tmp
mount_fs tmpfs tmpfs /run
mount_fs tmpfs tmpfs /dev/shm

loaded=0
failed=""
while read -r module; do
    if insmod "$module"; then
        loaded=$((loaded + 1))
    else
        failed="$failed $(basename "$module" .ko)"
    fi
done < /etc/pathcost-modules
if [ -n "$failed" ]; then
    echo "init: modules: $loaded loaded, failed:$failed"
else
    echo "init: modules: $loaded loaded, none failed"
fi

ip link set lo up || fail "ip link set lo up"

workspace=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        pathcost.workspace=*) workspace="${arg#pathcost.workspace=}" ;;
    esac
done
[ -n "$workspace" ] || fail "no pathcost.workspace= on the kernel command line"
mkdir -p "$workspace" || fail "mkdir $workspace"
# msize: 9p's default 8 KiB messages make large reads crawl under TCG.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 workspace "$workspace" \
    || fail "mount 9p workspace on $workspace"
cd "$workspace" || fail "cd $workspace"

echo "init: running /job.sh in $workspace"
sh /job.sh
status=$?
if [ "$status" -eq 0 ]; then
    finish success
else
    fail "status $status"
fi
