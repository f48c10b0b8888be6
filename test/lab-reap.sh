#!/usr/bin/env bash
# Remove what lab runs killed with SIGKILL left behind: for each lab
# directory /tmp/affinity-lab-<id>.*/ whose owner (the PID of the script
# that built it, in ./owner) is gone, its recorded processes, namespaces
# and the directory. Labs whose owner still runs are left alone, and so is
# anything the lab did not record (it never matches names by pattern).
set -u
if [ "$(id -u)" != 0 ]; then echo "lab-reap: needs root (network namespaces)"; exit 1; fi
for LAB_DIR in /tmp/affinity-lab-*.*; do
    [ -f "$LAB_DIR/owner" ] || continue
    owner=$(cat "$LAB_DIR/owner")
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
        echo "lab-reap: $LAB_DIR: owner $owner still runs, left alone"
        continue
    fi
    LAB_ID=x # lab.sh needs one; lab_down uses only $LAB_DIR's records
    source "$(dirname "$0")/lab.sh"
    echo "lab-reap: $LAB_DIR: owner $owner gone, removing $(tr '\n' ' ' <"$LAB_DIR/netns" 2>/dev/null)"
    lab_down
    rm -rf "$LAB_DIR"
done
