#!/usr/bin/env bash
# Verifies glwarden's deployment files:
#   - the Prometheus alerting rules (promtool check rules + promtool test rules),
#   - the example Prometheus config (promtool check config),
#   - the example Alertmanager config (amtool check-config),
#   - the systemd unit (systemd-analyze verify, then systemd-analyze security
#     with its overall exposure score, which must stay at or below
#     MAX_EXPOSURE).
#
# Usage: deploy/verify.sh PATH-TO-GLWARDEN-BINARY
#   e.g. deploy/verify.sh target/release/glwarden
#
# Needs (Debian 12): apt-get install -y prometheus prometheus-alertmanager systemd procps
#   prometheus  ships /usr/bin/promtool (there is no separate promtool package)
#   prometheus-alertmanager ships /usr/bin/amtool
#   systemd     ships systemd-analyze; PID 1 need not be systemd (containers, CI)
#   procps      ships /bin/kill, which the unit's ExecReload= names and which
#               systemd-analyze verify checks for; minimal images lack it
set -euo pipefail

# Highest acceptable overall exposure, in systemd-analyze's tenths (0-100):
# 20 means 2.0 on its 0.0-10.0 scale. The unit scores 1.1 today; a change that
# weakens its hardening past this fails the check.
MAX_EXPOSURE=20

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
unit_src="$here/systemd/glwarden.service"
prom_dir="$here/prometheus"
# The path the unit's ExecStart= uses for the installed binary.
installed_bin=/usr/local/bin/glwarden

die() { printf 'verify.sh: %s\n' "$*" >&2; exit 1; }
step() { printf '\n=== %s\n' "$*"; }

[[ $# -eq 1 ]] || die "usage: $0 PATH-TO-GLWARDEN-BINARY"
for tool in promtool amtool systemd-analyze; do
    command -v "$tool" >/dev/null ||
        die "$tool not found: apt-get install -y prometheus prometheus-alertmanager systemd procps"
done

bin="$(realpath -- "$1")" || die "no such file: $1"
[[ -f $bin && -x $bin ]] || die "not an executable file: $bin"
# The path becomes the first word of an ExecStart= line: whitespace, quotes,
# backslashes and '$' would change how systemd splits or expands it.
[[ $bin =~ ^[A-Za-z0-9_./+@:%-]+$ ]] || die "unsupported characters in path: $bin"

step "promtool check rules"
promtool check rules "$prom_dir/alerts.yml"

step "amtool check-config"
amtool check-config "$here/alertmanager/alertmanager.yml"

step "promtool test rules"
# rule_files in the test file are resolved against the test file's directory.
(cd "$prom_dir" && promtool test rules alerts_test.yml)

step "promtool check config"
(cd "$prom_dir" && promtool check config prometheus.yml)

# systemd-analyze verify fails when an Exec*= binary does not exist. Rather
# than install the binary at /usr/local/bin/glwarden (which would change the
# machine, outlive this run and could overwrite a real installation), verify a
# temporary copy of the unit, identical except that ExecStart= names the given
# binary. The copy keeps the name glwarden.service, so messages name the unit.
tmp="$(mktemp -d)"
trap 'rm -rf -- "$tmp"' EXIT
unit="$tmp/glwarden.service"
replaced=0
while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line == "ExecStart=$installed_bin "* ]]; then
        # '%' starts a systemd specifier: double it to keep it literal.
        line="ExecStart=${bin//%/%%}${line#"ExecStart=$installed_bin"}"
        replaced=$((replaced + 1))
    fi
    printf '%s\n' "$line"
done <"$unit_src" >"$unit"
[[ $replaced -eq 1 ]] ||
    die "expected one 'ExecStart=$installed_bin ...' line in $unit_src, found $replaced"

step "systemd-analyze verify (ExecStart=$bin)"
grep '^ExecStart=' "$unit"
# verify exits 0 on unknown keys and unparsable values (it only prints a
# warning and ignores the line), so any message about our unit fails too.
# Messages about other units (e.g. the machine's own, pulled in through
# After=/Wants=) are shown but do not fail this check.
rc=0
out="$(systemd-analyze verify --man=no "$unit" 2>&1)" || rc=$?
[[ -z $out ]] || printf '%s\n' "$out"
if [[ $rc -ne 0 ]] || grep -q 'glwarden' <<<"$out"; then
    die "systemd-analyze verify reported problems with glwarden.service (exit status $rc)"
fi
echo "systemd-analyze verify: no problems"

step "systemd-analyze security"
# --offline reads the unit file instead of asking a running systemd (PID 1 is
# not systemd in containers); --threshold makes it fail above MAX_EXPOSURE.
rc=0
out="$(systemd-analyze security --no-pager --offline=true --threshold="$MAX_EXPOSURE" "$unit" 2>&1)" || rc=$?
printf '%s\n' "$out"
score="$(grep -F 'Overall exposure level' <<<"$out" || true)"
[[ -n $score ]] || die "systemd-analyze security printed no overall exposure level"
printf '\nsecurity score: %s\n' "${score#*: }"
[[ $rc -eq 0 ]] ||
    die "systemd-analyze security failed (exit status $rc): exposure above $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10))?"

step "all deployment checks passed"
