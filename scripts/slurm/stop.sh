#!/usr/bin/env bash
# Stops the daemons scripts/slurm/start.sh started, by the PIDs it recorded in FOLDER, and removes FOLDER.
set -uo pipefail
dir="${1:?usage: stop.sh FOLDER (the folder start.sh printed)}"
[ -f "$dir/slurm.conf" ] || { echo "stop.sh: $dir is not a folder start.sh made" >&2; exit 2; }
for f in slurmd.pid slurmctld.pid started-munged.pid; do
  [ -s "$dir/$f" ] || continue
  pid="$(cat "$dir/$f")"
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
rm -rf "$dir"
