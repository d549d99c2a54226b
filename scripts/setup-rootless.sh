#!/usr/bin/env bash
# Prepares USER for a rootless containerd (`ctrexec rootless start`), as root, once. Idempotent: does only what is
# missing. Installs rootlesskit, slirp4netns and uidmap; gives USER subuid and subgid ranges of 65536; creates the
# runtime dir /run/user/<uid> (no logind here to make it); and checks /dev/net/tun, which it never changes: who may
# open it is the host's policy, so it says what the administrator could run instead.
# Exit: 0 done (or nothing to do), 1 error (message on stderr).
set -euo pipefail

say() { printf 'setup-rootless: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# ctrexec's own pool of user-namespace ranges (userns per run, as root) starts here: a user's range must end below.
readonly POOL_START=268435456
readonly POOL_END=$((POOL_START + 1024 * 65536))
readonly RANGE=65536
readonly FIRST=100000

[ "$#" -eq 1 ] || die "usage: $0 USER"
[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and edits /etc/subuid); try: sudo $0 $1"
user="$1"
uid="$(id -u -- "$user" 2>/dev/null)" || die "unknown user '$user'; create it first (e.g. useradd -m $user)"
gid="$(id -g -- "$user")"
[ "$uid" != 0 ] || die "'$user' is root; root uses the system containerd, rootless mode is for unprivileged users"

# 1. Debian packages (as scripts/setup.sh installs its own).
packages=(rootlesskit slirp4netns uidmap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} with this system's package manager"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  say "packages ${packages[*]}: already installed"
fi
for c in containerd runc; do
  command -v "$c" >/dev/null || say "warning: $c not found on PATH; scripts/setup.sh installs it"
done

# 2. subuid/subgid ranges. A line may name the user or its uid. The new range starts at the lowest start >= FIRST
#    whose [start, start+RANGE) overlaps no line of the file, and ends below ctrexec's pool.
has_range() { awk -F: -v n="$user" -v u="$uid" '$1 == n || $1 == u { found = 1 } END { exit !found }' "$1"; }
free_start() {
  awk -F: -v first="$FIRST" -v size="$RANGE" 'NF >= 3 && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ { print $2, $2 + $3 }' "$1" |
    sort -n |
    awk -v cand="$FIRST" -v size="$RANGE" '{ if ($1 >= cand + size) exit; if ($2 > cand) cand = $2 } END { print cand }'
}
add_range() { # file, usermod flag, label
  local file="$1" flag="$2" label="$3" start
  touch "$file"
  if has_range "$file"; then
    say "$label: $user already has $(awk -F: -v n="$user" -v u="$uid" '$1 == n || $1 == u { printf "%s%s:%s", sep, $2, $3; sep = " " }' "$file")"
    # Such a range may have been made by useradd (login.defs SUB_UID_MAX reaches far): shared ids would let a
    # rootless container and a root run with its own user namespace touch each other's files.
    if awk -F: -v n="$user" -v u="$uid" -v lo="$POOL_START" -v hi="$POOL_END" '($1 == n || $1 == u) && $2 < hi && $2 + $3 > lo { bad = 1 } END { exit !bad }' "$file"; then
      say "warning: that $label range overlaps ctrexec's user-namespace pool ($POOL_START-$((POOL_END - 1))), so ctrexec" \
        "refuses runs with a user namespace of their own while it does; replace it:" \
        "usermod $(sed 's/add/del/' <<<"$flag") START-END $user, then run this script again"
    fi
    return
  fi
  start="$(free_start "$file")"
  [ $((start + RANGE)) -le "$POOL_START" ] || die "no free $label range of $RANGE below $POOL_START in $file"
  usermod "$flag" "$start-$((start + RANGE - 1))" "$user"
  say "$label: gave $user $start-$((start + RANGE - 1)) ($RANGE ids)"
}
command -v usermod >/dev/null || die "usermod not found (package passwd)"
add_range /etc/subuid --add-subuids subuid
add_range /etc/subgid --add-subgids subgid

# 3. The runtime dir: ctrexec finds the rootless daemon's socket in $XDG_RUNTIME_DIR, else /run/user/<uid>.
#    /run is a tmpfs: after a reboot, run this script again (it only recreates what is missing).
rt="/run/user/$uid"
if [ -d "$rt" ]; then
  owner="$(stat -c %u "$rt")"
  [ "$owner" = "$uid" ] || die "$rt exists but belongs to uid $owner, not $user ($uid); fix or remove it"
  say "runtime dir $rt: exists"
else
  install -d -m 0755 -o root -g root /run/user
  install -d -m 0700 -o "$uid" -g "$gid" "$rt"
  say "runtime dir $rt: created (0700, $user)"
fi

# 4. Checks only: user namespaces enabled, and /dev/net/tun (slirp4netns needs it; without it the daemon uses
#    the host network).
if [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 1)" = 0 ]; then
  say "warning: user namespaces are disabled (user.max_user_namespaces = 0); rootless mode cannot work until an" \
    "administrator enables them: sysctl -w user.max_user_namespaces=15000"
fi
if runuser -u "$user" -- sh -c 'exec 3<>/dev/net/tun' 2>/dev/null; then
  say "/dev/net/tun: $user can open it; 'ctrexec rootless start' will use slirp4netns networking"
else
  say "/dev/net/tun: $user cannot open it ($(stat -c '%a %U:%G' /dev/net/tun 2>/dev/null || echo missing))." \
    "The rootless daemon will use the host network (--net=host) instead of slirp4netns. Left unchanged: it is the" \
    "host's policy. To allow it, an administrator may run: chmod 0666 /dev/net/tun" \
    "(persistently: echo 'KERNEL==\"tun\", MODE=\"0666\"' > /etc/udev/rules.d/60-tun.rules)"
fi

say "done. Next, as $user: ctrexec rootless start"
say "  (from root: runuser -u $user -- env XDG_RUNTIME_DIR=$rt ctrexec rootless start)"
