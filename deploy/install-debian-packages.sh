#!/bin/sh
# Install the Debian binaries the tests run: Prometheus and Alertmanager for the stack tests
# (promtool, prometheus, amtool, prometheus-alertmanager) and chromium (with a font) for the
# page's browser test. Idempotent: does nothing when all five are on PATH. Safe in containers
# without systemd: the packages' postinst may try to start daemons; a policy-rc.d forbids that
# and any that still start are stopped.
set -eu

need=""
BINARIES="promtool prometheus amtool prometheus-alertmanager chromium"
for bin in $BINARIES; do
    command -v "$bin" >/dev/null 2>&1 || need="$need $bin"
done
if [ -z "$need" ]; then
    echo "install-debian-packages: all present"
    exit 0
fi
echo "install-debian-packages: missing:$need"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# Forbid service starts during install (invoke-rc.d honours exit 101).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 0755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager \
    chromium fonts-dejavu-core

# Stop any daemon a postinst started anyway. The binaries were missing before this script
# ran, so a process running /usr/bin/<daemon> now can only have been started by its package.
for daemon in prometheus prometheus-alertmanager; do
    for exe in /proc/[0-9]*/exe; do
        if [ "$(readlink "$exe" 2>/dev/null)" = "/usr/bin/$daemon" ]; then
            pid=${exe#/proc/}
            pid=${pid%/exe}
            echo "install-debian-packages: stopping $daemon ($pid) started by its package"
            $SUDO kill "$pid" || true
        fi
    done
done

for bin in $BINARIES; do
    command -v "$bin" >/dev/null 2>&1 || { echo "install-debian-packages: $bin still missing" >&2; exit 1; }
done
echo "install-debian-packages: installed"
