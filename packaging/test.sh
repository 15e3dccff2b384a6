#!/usr/bin/env bash
# The packages as an operator gets them: builds both (packaging/build.sh),
# installs the .deb with dpkg, and checks what an operator relies on:
#
# - every file in place with its owner and mode, the config a conffile, the
#   service user in the group adm;
# - the unit: `systemd-analyze verify`, and `systemd-analyze security`
#   (its score is printed, and must be 2.0 or lower);
# - the installed binary run as the user cerberus reads a log that only
#   root and the group adm may read, and says how to fix a log it may not
#   read; run as root it warns; a world-readable file with the token is
#   warned about;
# - a reinstall keeps the operator's edits and the checkpoints; remove keeps
#   configuration, state and user; purge removes them;
# - the .rpm: the same files, owners and modes, and the user creation;
# - the container image (an OCI archive): its user, entrypoint, command and
#   files as `skopeo inspect` and `umoci` show them, nothing else in it
#   (no shell), and its binary, run from its own root file system
#   (chroot), says its version and reads a CRI log.
#
# Needs root (CI runs as root) and changes the system: it installs and
# purges the package, and leaves nothing behind. Fails loudly, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

fail() {
    echo "packaging test FAILED: $*" >&2
    exit 1
}
expect() { # description, then a command that must succeed
    local what=$1
    shift
    "$@" || fail "$what"
    echo "ok: $what"
}
mode_of() { stat -c '%U:%G %a' "$1"; }
expect_mode() { # path, "user:group mode"
    local got
    got=$(mode_of "$1" 2>/dev/null) || fail "$1 is missing"
    [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
    echo "ok: $1 $2"
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs the .deb)"
for cmd in dpkg rpm systemd-analyze runuser setpriv adduser strace; do
    command -v "$cmd" >/dev/null || fail "$cmd is missing (tests/setup.sh installs it)"
done

packaging/build.sh
deb=$(ls target/packages/cerberus-agent_*.deb)
rpm_file=$(ls target/packages/cerberus-agent-*.rpm)
version=$(dpkg-deb -f "$deb" Version)

# A clean start: an earlier run that failed half-way may have left it.
dpkg --purge cerberus-agent >/dev/null 2>&1 || true

echo "== install $deb"
dpkg -i "$deb"
expect "--version runs" sh -c "/usr/bin/cerberus-agent --version | grep -qx 'cerberus-agent $version'"
expect_mode /usr/bin/cerberus-agent "root:root 755"
expect_mode /etc/cerberus/agent.toml "root:cerberus 640"
expect_mode /etc/cerberus/agent.env "root:cerberus 640"
expect_mode /etc/cerberus/patterns.d "root:root 755"
expect_mode /var/lib/cerberus-agent "cerberus:cerberus 750"
unit=$(dpkg -L cerberus-agent | grep '/systemd/system/cerberus-agent.service$')
expect_mode "$unit" "root:root 644"
expect_mode /usr/share/man/man1/cerberus-agent.1.gz "root:root 644"
expect_mode /usr/share/bash-completion/completions/cerberus-agent "root:root 644"
expect_mode /usr/share/zsh/vendor-completions/_cerberus-agent "root:root 644"
expect_mode /usr/share/fish/vendor_completions.d/cerberus-agent.fish "root:root 644"
for p in patterns/*.toml; do
    expect_mode "/usr/share/doc/cerberus-agent/patterns/$(basename "$p")" "root:root 644"
done
expect "the config is a conffile" sh -c \
    "dpkg-query -W -f='\${Conffiles}' cerberus-agent | grep -q '/etc/cerberus/agent.toml '"
expect "the man page names the command" sh -c \
    "zcat /usr/share/man/man1/cerberus-agent.1.gz | grep -q 'cerberus-agent'"
expect "the user cerberus exists, without a login shell" sh -c \
    "getent passwd cerberus | grep -q ':/usr/sbin/nologin$'"
expect "the user cerberus is in the group adm" sh -c "id -nG cerberus | grep -qw adm"
expect "the default config loads as it is" \
    runuser -u cerberus -- /usr/bin/cerberus-agent patterns --config /etc/cerberus/agent.toml

echo "== the unit"
verify=$(cd / && systemd-analyze verify "$unit" 2>&1) || {
    echo "$verify"
    fail "systemd-analyze verify $unit"
}
# Keys of systemd 254 (RestartSteps=, RestartMaxDelaySec=) are unknown to an
# older systemd, which ignores them: anything else is a defect.
unexpected=$(echo "$verify" | grep -v -e "Unknown key 'RestartSteps'" -e "Unknown key 'RestartMaxDelaySec'" || true)
[ -z "$unexpected" ] || fail "systemd-analyze verify said: $unexpected"
echo "ok: systemd-analyze verify"
security=$(systemd-analyze security --offline=true "$unit" 2>/dev/null)
echo "$security" | grep -v '✓' | grep -v '^$'
score=$(echo "$security" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
[ -n "$score" ] || fail "no score from systemd-analyze security"
expect "systemd-analyze security rates the unit $score (at most 2.0)" \
    python3 -c "import sys; sys.exit(0 if float('$score') <= 2.0 else 1)"

echo "== the installed binary as the service user"
work=$(mktemp -d /var/tmp/cerberus-package-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
cp tests/samples/nginx_combined.log "$work/access.log"
chown root:adm "$work/access.log"
chmod 0640 "$work/access.log"
lines=$(grep -c . "$work/access.log")
run_once() { # user, log; the events on stdout, messages in $work/stderr
    runuser -u "$1" -- /usr/bin/cerberus-agent --log "$2" --format nginx_combined \
        --once --no-checkpoints --stdout 2>"$work/stderr"
}
events=$(run_once cerberus "$work/access.log" | grep -c '"event_id"') ||
    fail "cerberus could not read a root:adm 0640 log: $(cat "$work/stderr")"
[ "$events" -ge $((lines - 2)) ] || fail "only $events events from $lines lines"
echo "ok: as cerberus, $events events from a root:adm 0640 log"
if grep -q "running as root" "$work/stderr"; then
    fail "the root warning was given to cerberus"
fi
chmod 0600 "$work/access.log"
if run_once cerberus "$work/access.log" >/dev/null; then
    fail "a log only root may read was read by cerberus"
fi
expect "an unreadable log is explained with the setfacl line" \
    grep -q "setfacl -m u:cerberus:r" "$work/stderr"
run_once root "$work/access.log" >/dev/null || fail "root could not run it: $(cat "$work/stderr")"
expect "as root, the agent warns once" sh -c "[ \"\$(grep -c 'running as root' '$work/stderr')\" = 1 ]"
printf 'CERBERUS_TOKEN=t0ken\n' >>/etc/cerberus/agent.env
chmod 0644 /etc/cerberus/agent.env
runuser -u cerberus -- /usr/bin/cerberus-agent --log "$work/none.log" --once --no-checkpoints \
    --stdout 2>"$work/stderr" || true
expect "a world-readable agent.env with a token is warned about" \
    grep -q "agent.env sets token and every user may read it" "$work/stderr"
if grep -q t0ken "$work/stderr"; then fail "the token reached the agent's messages"; fi

echo "== every system call the agent makes is allowed by the unit's filter"
# The unit's SystemCallFilter= lines (allowed, and ~refused), expanded;
# and the calls of a run as cerberus that follows a
# log, serves its metrics, reloads and stops, traced by strace.
expand_group() {
    systemd-analyze syscall-filter "$1" | tail -n +2 | grep -v '#' | tr -d ' ' | grep -v '^$' |
        while read -r s; do case $s in @*) expand_group "$s" ;; *) echo "$s" ;; esac; done
}
expand_names() { # names and @groups
    for n in "$@"; do case $n in @*) expand_group "$n" ;; *) echo "$n" ;; esac; done
}
filters=$(sed -n 's/^SystemCallFilter=//p' "$unit")
# shellcheck disable=SC2046 # the unit's names, split on purpose
expand_names $(grep -v '^~' <<<"$filters") | sort -u >"$work/allowed"
# shellcheck disable=SC2046
expand_names $(grep '^~' <<<"$filters" | tr -d '~') | sort -u >"$work/denied"
[ -s "$work/allowed" ] && [ -s "$work/denied" ] || fail "no SystemCallFilter= in $unit"
mkdir "$work/logs" "$work/state"
chown cerberus:cerberus "$work/state"
cp tests/samples/nginx_combined.log "$work/logs/access.log"
chmod 644 "$work/logs/access.log"
# setpriv, not runuser: it executes the agent in its own process, so every
# call after the agent's execve is the agent's.
strace -f -qq -o "$work/trace" setpriv --reuid cerberus --regid cerberus --init-groups \
    /usr/bin/cerberus-agent \
    --log "$work/logs/access.log" --format nginx_combined --state-dir "$work/state" \
    --metrics-addr 127.0.0.1:0 --stdout >/dev/null 2>"$work/stderr" &
tracer=$!
for _ in $(seq 100); do grep -q "metrics at" "$work/stderr" && break; sleep 0.1; done
agent=$(pgrep -u cerberus -f "^/usr/bin/cerberus-agent --log $work/logs/access.log") ||
    fail "the traced agent did not start: $(cat "$work/stderr")"
cat tests/samples/nginx_combined.log >>"$work/logs/access.log"
addr=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/stderr" | head -1)
python3 -c "import urllib.request; urllib.request.urlopen('$addr/metrics').read()"
kill -HUP "$agent"
for _ in $(seq 100); do grep -q "configuration reloaded" "$work/stderr" && break; sleep 0.1; done
kill -TERM "$agent"
wait "$tracer" || fail "the traced agent failed: $(cat "$work/stderr")"
sample_lines=$(wc -l <tests/samples/nginx_combined.log)
grep -q "done: $sample_lines lines read" "$work/stderr" ||
    fail "the traced agent did not read the $sample_lines lines appended: $(cat "$work/stderr")"
# The agent's own calls: from its execve on (setpriv's are not the unit's).
sed -nE 's/^[0-9]+ +([a-z_0-9]+)\(.*/\1/p; s/^[0-9]+ +<\.\.\. ([a-z_0-9]+) resumed>.*/\1/p' \
    <(sed -n '/execve("\/usr\/bin\/cerberus-agent"/,$p' "$work/trace") | sort -u >"$work/used"
[ "$(wc -l <"$work/used")" -gt 20 ] || fail "strace saw too few calls: $(cat "$work/used")"
outside=$(comm -23 "$work/used" "$work/allowed")
[ -z "$outside" ] || fail "calls outside @system-service: $outside"
refused=$(comm -12 "$work/used" "$work/denied")
[ -z "$refused" ] || fail "calls the unit refuses (@privileged, @resources): $refused"
echo "ok: the agent's $(wc -l <"$work/used") system calls are all allowed by the unit"

echo "== reading the journal stays within the unit's filter too"
# A journal written by systemd's own writer, readable by its group as
# journald's are; the agent (in systemd-journal, from the postinst) reads it
# through the journalctl it runs, both traced.
expect "the service user is in systemd-journal" bash -c 'id -nG cerberus | grep -qw systemd-journal'
remote=/lib/systemd/systemd-journal-remote
[ -x "$remote" ] || remote=/usr/lib/systemd/systemd-journal-remote
mkdir "$work/journal"
printf '%s\n' '__REALTIME_TIMESTAMP=1796551201000000' '_BOOT_ID=3a2b0e6b4a1c4c4e9b0b2d7e8f9a0b1c' \
    '_SYSTEMD_UNIT=gunicorn.service' \
    'MESSAGE=127.0.0.1 - - [06/Dec/2026:10:00:01 +0000] "GET /from-journal HTTP/1.1" 200 5 "-" "curl"' '' \
    >"$work/journal.export"
"$remote" --output="$work/journal/remote.journal" "$work/journal.export" 2>/dev/null
chgrp -R systemd-journal "$work/journal"
chmod 0750 "$work/journal"
chmod 0640 "$work/journal/remote.journal"
strace -f -qq -o "$work/trace-journal" setpriv --reuid cerberus --regid cerberus --init-groups \
    /usr/bin/cerberus-agent --journal-directory "$work/journal" --journal-unit gunicorn.service \
    --once --no-checkpoints --stdout >"$work/journal-events" 2>"$work/stderr" ||
    fail "the agent reading the journal failed: $(cat "$work/stderr")"
grep -q '"endpoint":"/from-journal"' "$work/journal-events" ||
    fail "the journal entry was not read: $(cat "$work/stderr")"
sed -nE 's/^[0-9]+ +([a-z_0-9]+)\(.*/\1/p; s/^[0-9]+ +<\.\.\. ([a-z_0-9]+) resumed>.*/\1/p' \
    <(sed -n '/execve("\/usr\/bin\/cerberus-agent"/,$p' "$work/trace-journal") | sort -u >"$work/used-journal"
grep -q '^execve$' "$work/used-journal" || fail "journalctl was not traced"
outside=$(comm -23 "$work/used-journal" "$work/allowed")
[ -z "$outside" ] || fail "reading the journal calls outside @system-service: $outside"
refused=$(comm -12 "$work/used-journal" "$work/denied")
[ -z "$refused" ] || fail "reading the journal calls what the unit refuses: $refused"
echo "ok: the agent and its journalctl make $(wc -l <"$work/used-journal") system calls, all allowed"

echo "== reinstall (as an upgrade): edits and checkpoints stay"
echo '# edited by the operator' >>/etc/cerberus/agent.toml
echo '{"version": 1, "files": []}' >/var/lib/cerberus-agent/checkpoints.json
dpkg -i "$deb"
expect "the operator's edit is kept" grep -q 'edited by the operator' /etc/cerberus/agent.toml
expect "the checkpoints are kept" test -s /var/lib/cerberus-agent/checkpoints.json
expect_mode /etc/cerberus/agent.toml "root:cerberus 640"
expect_mode /etc/cerberus/agent.env "root:cerberus 640"

echo "== remove: configuration, state and user stay"
dpkg -r cerberus-agent
expect "the binary is gone" test ! -e /usr/bin/cerberus-agent
expect "the config stays" test -e /etc/cerberus/agent.toml
expect "the state stays" test -e /var/lib/cerberus-agent/checkpoints.json
expect "the user stays" getent passwd cerberus

echo "== purge: all of it goes"
dpkg -P cerberus-agent
expect "/etc/cerberus is gone" test ! -e /etc/cerberus
expect "/var/lib/cerberus-agent is gone" test ! -e /var/lib/cerberus-agent
expect "the user is gone" sh -c "! getent passwd cerberus"
expect "the group is gone" sh -c "! getent group cerberus"

echo "== $rpm_file"
listing=$(rpm -qpl "$rpm_file")
for f in /usr/bin/cerberus-agent /etc/cerberus/agent.toml /etc/cerberus/agent.env \
    /etc/cerberus/patterns.d/README /usr/lib/systemd/system/cerberus-agent.service \
    /usr/share/man/man1/cerberus-agent.1.gz /usr/share/bash-completion/completions/cerberus-agent \
    /usr/share/zsh/site-functions/_cerberus-agent \
    /usr/share/fish/vendor_completions.d/cerberus-agent.fish \
    /usr/share/doc/cerberus-agent/patterns/nginx_combined.toml; do
    echo "$listing" | grep -qx "$f" || fail "the .rpm lacks $f"
done
echo "ok: the .rpm holds every file"
# --dump: path size mtime digest mode owner group isconfig isdoc ...
config_entry=$(rpm -qp --dump "$rpm_file" |
    awk '$1 == "/etc/cerberus/agent.toml" { print $5, $6, $7, $8 }')
[ "$config_entry" = "0100640 root cerberus 1" ] ||
    fail "the .rpm's config is '$config_entry', expected '0100640 root cerberus 1'"
echo "ok: the .rpm's config is root:cerberus 0640 and a config file"
flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm_file" |
    awk '$1 == "/etc/cerberus/agent.toml" { print $2 }')
[ "$flags" = "cn" ] || fail "the .rpm's config flags are '$flags', expected cn (noreplace)"
echo "ok: the .rpm's config keeps the operator's edits (noreplace)"
scripts=$(rpm -qp --scripts "$rpm_file")
grep -q 'useradd -r -g cerberus' <<<"$scripts" || fail "the .rpm does not create the user"
echo "ok: the .rpm creates the user cerberus"
grep -q 'systemctl try-restart cerberus-agent.service' <<<"$scripts" ||
    fail "the .rpm does not restart the service after an upgrade"
echo "ok: the .rpm restarts the service after an upgrade"

image=$(ls target/packages/cerberus-agent-*.oci.tar)
echo "== $image"
config=$(skopeo inspect --config "oci-archive:$image")
check_config() { # python expression over the image config `c`, what it says
    python3 -c "import json,sys; c=json.load(sys.stdin)['config']; sys.exit(0 if ($1) else 1)" <<<"$config" ||
        fail "the image's $2: $(python3 -c 'import json,sys; print(json.load(sys.stdin)["config"])' <<<"$config")"
    echo "ok: the image's $2"
}
check_config "c['User'] == '0:0'" "user is root (with capabilities dropped by the DaemonSet)"
check_config "c['Entrypoint'] == ['/usr/bin/cerberus-agent']" "entrypoint is the agent"
check_config "c['Cmd'] == ['--config', '/etc/cerberus/agent.toml']" "command reads /etc/cerberus/agent.toml"
check_config "'9478/tcp' in c.get('ExposedPorts', {})" "metrics port is declared"
unpacked="$work/image"
rm -rf "$unpacked"
mkdir -p "$unpacked"
skopeo copy --quiet "oci-archive:$image" "oci:$unpacked/oci:latest"
umoci unpack --image "$unpacked/oci:latest" "$unpacked/bundle" >/dev/null
rootfs="$unpacked/bundle/rootfs"
for f in usr/bin/cerberus-agent etc/ssl/certs/ca-certificates.crt etc/passwd \
    usr/share/doc/cerberus-agent/patterns/nginx_combined.toml var/lib/cerberus-agent; do
    [ -e "$rootfs/$f" ] || fail "the image lacks /$f"
done
echo "ok: the image holds the agent, the CA certificates, the patterns and its state folder"
for f in bin/sh usr/bin/sh bin/bash usr/bin/apt; do
    [ ! -e "$rootfs/$f" ] || fail "the image holds /$f: it should hold the agent and its libraries only"
done
files=$(find "$rootfs" -type f | wc -l)
[ "$files" -le 40 ] || fail "the image holds $files files; expected the agent, its libraries and a few more"
echo "ok: no shell, no package manager: $files files, $(du -sh "$rootfs" | cut -f1)"
got=$(chroot "$rootfs" /usr/bin/cerberus-agent --version) || fail "the image's binary does not run"
[ "$got" = "cerberus-agent $version" ] || fail "the image's binary says '$got', expected 'cerberus-agent $version'"
echo "ok: the image's binary, from its own root file system, says $got"
mkdir -p "$rootfs/tmp/pods/shop_web-1_0b6f9a52-3c1e-4d7a-9f0e-2a1b3c4d5e6f/nginx"
printf '%s\n' '2026-12-06T23:35:41.5Z stdout F 10.0.0.1 - - [06/Dec/2026:23:35:41 +0000] "GET /a HTTP/1.1" 200 5 "-" "curl/8"' \
    >"$rootfs/tmp/pods/shop_web-1_0b6f9a52-3c1e-4d7a-9f0e-2a1b3c4d5e6f/nginx/0.log"
event=$(chroot "$rootfs" /usr/bin/cerberus-agent --log '/tmp/pods/*/*/*.log' --once --stdout \
    --state-dir /tmp/state --node-name node-1 2>/dev/null) || fail "the image's binary cannot read a CRI log"
grep -q '"kubernetes":{"namespace":"shop","pod":"web-1"' <<<"$event" ||
    fail "the image's binary printed no event with the pod's metadata: $event"
echo "ok: the image's binary reads a pod's CRI log with its metadata"
rm -rf "$unpacked"

echo "packaging test passed: $deb, $rpm_file and $image"
