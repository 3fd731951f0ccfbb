#!/usr/bin/env bash
# Run one lakepipe command on a Dask cluster made of SLURM jobs (dask-jobqueue).
#
#   sbatch deploy/slurm/run_lakepipe.sh jobs run jobs/nightly-lesions.yaml
#   sbatch deploy/slurm/run_lakepipe.sh run fnm --cohort stroke --connectome gsp1000 --atlas Seitzman2018
#   deploy/slurm/run_lakepipe.sh parcellate --connectome gsp1000 --atlas Seitzman2018   (from a login node)
#
# This script is the driver (Dask scheduler + lakepipe client; small): it submits LAKEPIPE_SLURM_JOBS worker
# jobs as configured in jobqueue.yaml, waits for the first worker, runs `lakepipe --scheduler ADDRESS ARGS...`
# and cancels the worker jobs when lakepipe exits (also after a failure or an scancel of the driver).
# Arguments are lakepipe's. Environment: LAKEPIPE_VENV (virtualenv to activate here and on the nodes),
# LAKEPIPE_SLURM_JOBS (default 4), LAKEPIPE_SLURM_WAIT (seconds to wait for a worker, default 3600),
# LAKEPIPE_JOBQUEUE_DIR (folder with jobqueue.yaml; default this script's folder), plus the usual
# LAKEPIPE_LAKE, LAKEPIPE_CATALOG and AWS_* variables. The lake must be reachable from every node
# (a shared file system or S3). Logs: lakepipe-driver-<jobid>.log and lakepipe-worker-<jobid>.log.
#SBATCH --job-name=lakepipe-driver
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --output=lakepipe-driver-%j.log
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 LAKEPIPE-ARGUMENTS...   (e.g. jobs run jobs/nightly-lesions.yaml)" >&2
    exit 2
fi
if [[ -n "${LAKEPIPE_VENV:-}" ]]; then
    # shellcheck disable=SC1091
    . "$LAKEPIPE_VENV/bin/activate"
fi
# sbatch runs a copy of this script from its spool folder: find jobqueue.yaml next to the original
if [[ -n "${LAKEPIPE_JOBQUEUE_DIR:-}" ]]; then
    conf="$LAKEPIPE_JOBQUEUE_DIR"
elif [[ -f "$(dirname "${BASH_SOURCE[0]}")/jobqueue.yaml" ]]; then
    conf="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
else
    conf="${SLURM_SUBMIT_DIR:-$PWD}/deploy/slurm"
fi
if [[ ! -f "$conf/jobqueue.yaml" ]]; then
    echo "$0: no jobqueue.yaml in $conf (set LAKEPIPE_JOBQUEUE_DIR)" >&2
    exit 2
fi
export DASK_CONFIG="$conf"
export LAKEPIPE_VENV="${LAKEPIPE_VENV:-}"

exec python - "$@" <<'PY'
import os
import signal
import subprocess
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client

# scancel/timeout send SIGTERM: leave through the context managers so the worker jobs are cancelled
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
n_jobs = int(os.environ.get("LAKEPIPE_SLURM_JOBS", "4"))
wait_s = float(os.environ.get("LAKEPIPE_SLURM_WAIT", "3600"))
rc = 1
with SLURMCluster() as cluster, Client(cluster) as client:
    cluster.scale(jobs=n_jobs)
    print(f"lakepipe: Dask scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}; "
          f"{n_jobs} worker job(s) submitted", file=sys.stderr, flush=True)
    client.wait_for_workers(1, timeout=wait_s)
    rc = subprocess.call(["lakepipe", "--scheduler", cluster.scheduler_address, *sys.argv[1:]])
sys.exit(rc)
PY
