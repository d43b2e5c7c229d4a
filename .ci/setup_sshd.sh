#!/usr/bin/env bash
# Make an OpenSSH server and client available for the ssh-target tests of `csideploy bench`.
#
# The tests start their own sshd on 127.0.0.1 (a free port, throwaway host and client keys, a
# temporary config); this script only installs the binaries. Idempotent: when /usr/sbin/sshd,
# ssh and ssh-keygen are there it changes nothing.
# Exit codes: 0 ready, 3 cannot be installed here (not root and no sudo, or no apt-get).
set -euo pipefail

say() { echo "setup_sshd: $*"; }

ready() {
    [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null
}

privsep_dir() {
    # sshd started as root refuses to run without its privilege-separation directory.
    if [ "$(id -u)" = 0 ] && [ ! -d /run/sshd ]; then
        say "creating /run/sshd (privilege separation directory)"
        mkdir -p /run/sshd && chmod 0755 /run/sshd
    fi
}

if ready; then
    say "already installed: $(ssh -V 2>&1)"
    privsep_dir
    exit 0
fi

if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    say "cannot install openssh-server: not root and no password-less sudo"
    exit 3
fi
if ! command -v apt-get >/dev/null; then
    say "cannot install openssh-server: no apt-get on this system"
    exit 3
fi

export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
$SUDO apt-get update -qq
say "apt-get install openssh-server openssh-client"
$SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
privsep_dir
ready || { say "sshd still missing after the install"; exit 1; }
say "installed: $(ssh -V 2>&1)"
