"""SLURM side of the scale-out: the spec's `resources:` section (validated) and small squeue/scontrol helpers.

resources (all optional):
  partition: debug            # sbatch --partition
  time: 60                    # minutes (int) or a SLURM time string "HH:MM:SS" / "D-HH:MM:SS"; default 60
  cpus: 1                     # cpus per job (torch threads follow it)
  gpus: 0                     # GPUs per job (slurm: --gpus-per-node; submitit-local: CUDA_VISIBLE_DEVICES)
  mem: 4G                     # number = GB, or a string with unit K/M/G/T (e.g. 512M, 4G)
  array_parallelism: 8        # most array tasks running at once (slurm)
  signal_delay_s: 90          # SIGUSR2 this long before the time limit: checkpoint + requeue
  max_timeouts: 3             # requeues after a time limit (preemptions do not count)
  sbatch: {qos: high}         # extra sbatch options, verbatim (key without the leading --; true = a bare flag)
  setup: ["module load cuda"] # SHELL lines run in the job before the python command (they run as you: only
                              # run specs whose setup you have read)
partition and sbatch values become #SBATCH lines: newlines, control characters and '#' are rejected.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from bench.config import SpecError, in_range, parse, satisfies

RESOURCE_KEYS = ("partition", "time", "cpus", "gpus", "mem", "array_parallelism", "signal_delay_s",
                 "max_timeouts", "sbatch", "setup")


@dataclass
class Resources:
    partition: str | None = None
    time_min: int = 60
    cpus: int = 1
    gpus: int = 0
    mem_gb: float | None = None
    array_parallelism: int = 256
    signal_delay_s: int = 90
    max_timeouts: int = 3
    sbatch: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)


def parse_time_min(value: Any, path: str = "resources.time") -> int:
    """Minutes from an int/float of minutes or a SLURM time string (MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]])."""
    allowed = "minutes (a positive number) or a SLURM time string: MM, HH:MM:SS or D-HH:MM:SS"
    if isinstance(value, bool):
        raise SpecError(path, value, allowed)
    if isinstance(value, (int, float)):
        if value <= 0:
            raise SpecError(path, value, allowed)
        return max(1, math.ceil(value))
    if not isinstance(value, str):
        raise SpecError(path, value, allowed)
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not m:
        raise SpecError(path, value, allowed)
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        h, mi, s = (nums + [0, 0])[:3]
        seconds = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif len(nums) == 1:
        seconds = nums[0] * 60
    elif len(nums) == 2:
        seconds = nums[0] * 60 + nums[1]
    else:
        seconds = nums[0] * 3600 + nums[1] * 60 + nums[2]
    if seconds <= 0:
        raise SpecError(path, value, allowed)
    return max(1, math.ceil(seconds / 60))


def parse_mem_gb(value: Any, path: str = "resources.mem") -> float:
    allowed = "a number of GB (> 0) or a string with a unit K, M, G or T (e.g. 512M, 4G)"
    if isinstance(value, bool):
        raise SpecError(path, value, allowed)
    if isinstance(value, (int, float)):
        if value <= 0:
            raise SpecError(path, value, allowed)
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT])B?\s*", value.upper())
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) * {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[m.group(2)]
    raise SpecError(path, value, allowed)


_DIRECTIVE_NOTE = " on one line, without '#' or control characters (it becomes an #SBATCH line)"


def _unsafe_directive(value: str) -> bool:
    """True when `value` could end its #SBATCH line and start another directive or a shell line (a newline or
    other control character) or comment out the rest ('#')."""
    return "#" in value or any(ord(c) < 32 or ord(c) == 127 for c in value)


def _valid(parser: Any) -> Any:
    def check(value: Any) -> bool:
        try:
            parser(value)
            return True
        except SpecError:
            return False
    return check


@dataclass
class ResourcesSpec:
    """The spec's `resources:` section as written (parsed by bench.config.parse; see `Resources` for the values)."""
    partition: Optional[str] = field(default=None, metadata=satisfies(
        lambda p: bool(p.strip()) and not _unsafe_directive(p), "a non-empty partition name" + _DIRECTIVE_NOTE))
    time: Union[int, float, str] = field(default=60, metadata=satisfies(
        _valid(parse_time_min), "minutes (a positive number) or a SLURM time string: MM, HH:MM:SS or D-HH:MM:SS"))
    cpus: int = field(default=1, metadata=in_range(1))
    gpus: int = field(default=0, metadata=in_range(0))
    mem: Optional[Union[float, str]] = field(default=None, metadata=satisfies(
        _valid(parse_mem_gb), "a number of GB (> 0) or a string with a unit K, M, G or T (e.g. 512M, 4G)"))
    array_parallelism: int = field(default=256, metadata=in_range(1))
    signal_delay_s: int = field(default=90, metadata=in_range(0))
    max_timeouts: int = field(default=3, metadata=in_range(0))
    sbatch: dict[str, Any] = field(default_factory=dict)    # long option (no --) -> value; checked by check_sbatch
    setup: Union[str, list[str]] = field(default_factory=list)   # shell lines run before the job (they ARE shell)


def check_sbatch(sb: dict[str, Any]) -> None:
    """Every extra sbatch option: a long option name and a one-line value that cannot start another directive."""
    for k, v in sb.items():
        if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", k):
            raise SpecError(f"resources.sbatch.{k}", k, "an sbatch long option name without the leading --, e.g. qos")
        if not isinstance(v, (str, int, float, bool)) or v is False:
            raise SpecError(f"resources.sbatch.{k}", v, "a string, a number, or true for a bare flag")
        if isinstance(v, str) and _unsafe_directive(v):
            raise SpecError(f"resources.sbatch.{k}", v, "a value" + _DIRECTIVE_NOTE)
        if isinstance(v, float) and not math.isfinite(v):
            raise SpecError(f"resources.sbatch.{k}", v, "a finite number")


def parse_resources(raw: Any) -> Resources:
    """Validate the spec's `resources:` mapping; errors name the field, the value and what is allowed."""
    spec = parse(ResourcesSpec, {} if raw is None else raw, "resources")
    check_sbatch(spec.sbatch)
    return Resources(partition=spec.partition, time_min=parse_time_min(spec.time), cpus=spec.cpus, gpus=spec.gpus,
                     mem_gb=None if spec.mem is None else parse_mem_gb(spec.mem),
                     array_parallelism=spec.array_parallelism, signal_delay_s=spec.signal_delay_s,
                     max_timeouts=spec.max_timeouts, sbatch=dict(spec.sbatch),
                     setup=[spec.setup] if isinstance(spec.setup, str) else list(spec.setup))


def slurm_executor_params(res: Resources, job_name: str) -> dict[str, Any]:
    """`submitit.SlurmExecutor.update_parameters` keywords (sbatch names) for these resources."""
    p: dict[str, Any] = {"job_name": job_name, "time": res.time_min, "cpus_per_task": res.cpus,
                         "array_parallelism": res.array_parallelism, "signal_delay_s": res.signal_delay_s}
    if res.partition:
        p["partition"] = res.partition
    if res.gpus:
        p["gpus_per_node"] = res.gpus
    if res.mem_gb is not None:
        p["mem"] = f"{max(1, round(res.mem_gb * 1024))}M"
    if res.sbatch:
        p["additional_parameters"] = dict(res.sbatch)
    if res.setup:
        p["setup"] = list(res.setup)
    return p


# ------------------------------------------------------------------------------------------- cluster queries
def available() -> bool:
    """True when the SLURM client commands are installed (sbatch, squeue, srun)."""
    return all(shutil.which(c) for c in ("sbatch", "squeue", "srun"))


def squeue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (STATE, reason)} of the jobs SLURM still knows (array tasks expanded as ARRAY_TASK).

    A job missing from the answer has left the queue (finished and purged, or never existed). Raises
    RuntimeError when squeue cannot be run.
    """
    if not job_ids:
        return {}
    bases = sorted({str(j).split("_")[0] for j in job_ids})
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(bases)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"squeue failed: {e}") from None
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:  # every listed job has been purged
            return {}
        raise RuntimeError(f"squeue failed: {proc.stderr.strip()}")
    out: dict[str, tuple[str, str]] = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2:
            out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return out


ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED", "PREEMPTED"}


def scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job -o JOBID` as a dict ({} when SLURM no longer knows the job)."""
    try:
        proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    out: dict[str, str] = {}
    for tok in proc.stdout.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out.setdefault(k, v)
    return out
