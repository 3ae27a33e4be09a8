#!/usr/bin/env bash
# A real network filesystem for the tests: sshfs over loopback.
#
#   scripts/sshfs.sh up <state-dir>     start a throwaway sshd on 127.0.0.1 and mount its
#                                       <state-dir>/export twice, at <state-dir>/mnt and
#                                       <state-dir>/mnt2 (two mounts behave like two hosts);
#                                       prints <state-dir>/mnt as the last line on stdout
#   scripts/sshfs.sh down <state-dir>   unmount both and stop that sshd (by PID)
#
# Installs nothing: scripts/test installs openssh-server, sshfs and fuse3 first. Everything
# else (keys, logs, pid file) lives in <state-dir>. Diagnostics go to stderr; sshd logs to
# <state-dir>/sshd.log and sshfs/ssh to <state-dir>/sshfs.log.
set -euo pipefail

SSHD=/usr/sbin/sshd   # sshd insists on being started by absolute path

die() {
    echo "sshfs.sh: error: $*" >&2
    exit 1
}

log() {
    echo "sshfs.sh: $*" >&2
}

usage() {
    echo "usage: $0 up|down <state-dir>" >&2
    exit 2
}

# True if <dir> is a mount point according to /proc/self/mountinfo (field 5). Unlike
# `mountpoint`, this still sees a FUSE mount whose server died (stat gives ENOTCONN then).
# The state dir is checked to hold no whitespace or backslash, so no octal unescaping needed.
in_mountinfo() {
    awk -v d="$1" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# The filesystem type mountinfo records for <dir>: the field after the " - " separator.
mount_fstype() {
    awk -v d="$1" '$5 == d { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' \
        /proc/self/mountinfo
}

# True if something listens on TCP <port> (v4 or v6); /proc/net/tcp holds ports in hex.
port_in_use() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# True once 127.0.0.1:<port> accepts a TCP connection.
port_accepts() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if <pid> is a live process (a zombie counts as dead: orphans are reaped late here).
pid_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# True if <pid> is the sshd this state dir started (guards against a recycled PID).
is_our_sshd() {
    local pid=$1 dir=$2
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-h $dir/ssh_host_ed25519_key"
}

unmount_one() {
    local mnt=$1
    in_mountinfo "$mnt" || return 0
    if ! fusermount3 -u -q "$mnt" 2>/dev/null; then
        log "fusermount3 -u $mnt failed; lazy unmount"
        umount -l "$mnt" || log "warning: could not unmount $mnt"
    fi
}

cmd_down() {
    local dir=$1 pid i
    # Unmount first so the sftp sessions close before their server goes away.
    unmount_one "$dir/mnt2"
    unmount_one "$dir/mnt"
    if [[ -f $dir/sshd.pid ]]; then
        pid=$(<"$dir/sshd.pid")
        if [[ $pid =~ ^[0-9]+$ ]] && is_our_sshd "$pid" "$dir"; then
            kill -TERM "$pid" 2>/dev/null || true
            # Not our child (started by an earlier `up`), so poll instead of `wait`.
            for ((i = 0; i < 50; i++)); do
                pid_alive "$pid" || break
                sleep 0.1
            done
            if pid_alive "$pid"; then
                log "sshd $pid ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$dir/sshd.pid"
    fi
}

cmd_up() {
    local dir=$1 mnt port pid="" attempt i
    local hostkey clientkey authkeys
    for tool in ssh-keygen sshfs fusermount3 mountpoint awk; do
        command -v "$tool" >/dev/null || die "$tool not found (scripts/test installs it)"
    done
    [[ -x $SSHD ]] || die "$SSHD not found (apt-get install openssh-server)"
    [[ -e /dev/fuse ]] || die "/dev/fuse is missing: no FUSE on this machine"

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    [[ $dir =~ [[:space:]\\] ]] && die "state dir must not contain whitespace or backslashes: $dir"

    # Leftovers of an earlier run in the same state dir would confuse everything below.
    cmd_down "$dir"

    hostkey=$dir/ssh_host_ed25519_key
    clientkey=$dir/client_ed25519_key
    authkeys=$dir/authorized_keys
    rm -f "$hostkey" "$hostkey.pub" "$clientkey" "$clientkey.pub"
    ssh-keygen -q -t ed25519 -N '' -C warden-test-host -f "$hostkey"
    ssh-keygen -q -t ed25519 -N '' -C warden-test-client -f "$clientkey"
    cp "$clientkey.pub" "$authkeys"
    chmod 600 "$authkeys"
    mkdir -p /run/sshd            # privilege-separation dir sshd refuses to start without
    chmod 755 /run/sshd
    mkdir -p "$dir/export" "$dir/mnt" "$dir/mnt2"

    # Pick a free high port below the ephemeral range (32768+), so outgoing connections
    # can't be holding it; retry if another process wins the race for it.
    for ((attempt = 1; attempt <= 10; attempt++)); do
        port=$((20000 + RANDOM % 12000))
        port_in_use "$port" && continue
        # -f /dev/null: ignore the machine's sshd_config, set just what we need.
        # StrictModes=no: the state dir usually lives under /tmp (mode 1777), which strict
        # modes reject as a parent of authorized_keys. No PAM (the default without a config).
        "$SSHD" -D -f /dev/null -p "$port" \
            -o ListenAddress=127.0.0.1 \
            -h "$hostkey" \
            -o "AuthorizedKeysFile=$authkeys" \
            -o PasswordAuthentication=no \
            -o KbdInteractiveAuthentication=no \
            -o PermitRootLogin=prohibit-password \
            -o StrictModes=no \
            -o PidFile=none \
            -o "Subsystem=sftp internal-sftp" \
            -E "$dir/sshd.log" \
            </dev/null >/dev/null 2>&1 &
        pid=$!
        echo "$pid" >"$dir/sshd.pid"
        for ((i = 0; i < 100; i++)); do
            port_accepts "$port" && break
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid" && port_accepts "$port"; then
            break
        fi
        log "sshd on port $port did not come up (attempt $attempt); see $dir/sshd.log"
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -f "$dir/sshd.pid"
        pid=""
    done
    [[ -n $pid ]] || die "could not start sshd; last log lines:
$(tail -n 20 "$dir/sshd.log" 2>/dev/null)"
    echo "$port" >"$dir/sshd.port"
    log "sshd pid $pid listening on 127.0.0.1:$port"

    # dir_cache=no: with the default cache, files deleted through the other mount (-wal,
    # -shm) stay listed and the next open fails with "unable to open database file".
    local opts="IdentityFile=$clientkey,IdentitiesOnly=yes,BatchMode=yes"
    opts+=",StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR"
    opts+=",ConnectTimeout=10,dir_cache=no,port=$port"
    for mnt in "$dir/mnt" "$dir/mnt2"; do
        # sshfs daemonizes once mounted, but its ssh child keeps the stderr it was given:
        # send that to a file so callers capturing our output never wait on it.
        if ! sshfs -o "$opts" "root@127.0.0.1:$dir/export" "$mnt" \
            </dev/null >>"$dir/sshfs.log" 2>&1; then
            cmd_down "$dir"
            die "sshfs mount of $mnt failed:
$(tail -n 20 "$dir/sshfs.log" 2>/dev/null)"
        fi
        # A failed mount leaves a plain local directory: prove this one is real.
        if ! mountpoint -q "$mnt" || [[ $(mount_fstype "$mnt") != fuse.sshfs ]]; then
            cmd_down "$dir"
            die "$mnt is not a fuse.sshfs mount after sshfs returned"
        fi
    done
    log "mounted root@127.0.0.1:$dir/export at $dir/mnt and $dir/mnt2"
    echo "$dir/mnt"
}

[[ $# -eq 2 ]] || usage
case $1 in
    up) cmd_up "$2" ;;
    down)
        [[ -d $2 ]] || exit 0   # nothing was ever brought up there
        cmd_down "$(cd "$2" && pwd -P)"
        ;;
    *) usage ;;
esac
