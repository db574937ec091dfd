#!/bin/sh
# System packages the test suite and the benchmarks need (Debian/Ubuntu).
#   chromium                 the real browser for the console tests (Playwright drives it)
#   xvfb                     a private X display for the x11 capture test
#   libisal2                 Intel ISA-L 2.30: a second GF(2^8) kernel the FEC tests check (the host
#                            prefers the newer ISA-L the pyeclib wheel ships)
#   libyuv0                  libyuv: BGRA -> I420/NV12 for x11 capture (~0.4 ms per 1080p frame, swscale ~7 ms)
#   gstreamer1.0-x           ximagesink: the moving content on the desktop benchmark's private Xvfb
#   gcc libssl-dev           build the optional batch sealer of the native data plane (setup.py)
#   linux-libc-dev           kernel headers (linux/input.h, uinput.h): python-evdev builds against them where
#                            no evdev-binary wheel exists (not x86-64, or CPython 3.14+)
#   gstreamer1.0-*           the peer in the pipeline benchmark (x264enc lives in -ugly)
#   iproute2                 tc netem for loss injection in a network namespace
#   wrk                      load generator for the console benchmark
#   valgrind                 callgrind instruction counts in the full benchmark run
#   pulseaudio pulseaudio-utils  a private sound server for the desktop audio tests (null sink, pacat plays a
#                            tone into it); parec is what the `desktop` audio source records with
#   libopus0                 libopus through ctypes: the `opus` stage encodes with it, the surround tests decode
#                            with its own multistream decoder
#   gstreamer1.0-pulseaudio  pulsesrc: the peer in the audio benchmark
#   systemd                  systemd-analyze verifies the user unit `punktfunk service install` writes (nothing
#                            starts systemd; in a container the package is only its tools)
#   prometheus               the real Prometheus the fleet test scrapes two hosts with; promtool lints /metrics
# Safe to run again; uses sudo only when not root.
set -eu
PKGS="chromium xvfb libisal2 libyuv0 gstreamer1.0-x gcc libssl-dev linux-libc-dev gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly iproute2 wrk valgrind pulseaudio pulseaudio-utils libopus0 gstreamer1.0-pulseaudio systemd prometheus"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >/dev/null
fi
