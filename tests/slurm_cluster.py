"""A throw-away single-node SLURM cluster for tests: slurmctld + slurmd + slurmdbd (MariaDB on a local socket) + munge.

Everything (config, state, logs, sockets, the database) lives under one directory; daemons run in the foreground as
children of this process, listen on 127.0.0.1 only, and are stopped by `stop()` (also on `with` exit). The node
carries `gpus` fake GPUs: gres.conf points at character devices made with `mknod c 1 3` (a /dev/null twin), so jobs
asking `--gpus=N` are scheduled, get CUDA_VISIBLE_DEVICES, and are accounted as gres/gpu in sacct. Needs root and the
Debian packages slurm-wlm, slurmdbd, munge, mariadb-server (`missing_packages()` says which are absent).

    with SlurmCluster(tmp_path / "slurm") as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = {
    "munged": "munge",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "slurmdbd": "slurmdbd",
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sacct": "slurm-wlm",
    "sacctmgr": "slurm-wlm",
    "sbatch": "slurm-wlm",
}
APT_PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
GPU_TYPE = "fake"
CLIENTS = ("srun", "sbatch", "squeue", "scancel", "sacct", "sacctmgr", "scontrol", "sinfo")


class ClusterError(RuntimeError):
    """The cluster did not come up; the message carries the tail of the failing daemon's log."""


def missing_packages() -> list[str]:
    """Debian packages whose programs are not on PATH (sbin included)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return sorted({pkg for prog, pkg in DAEMONS.items() if shutil.which(prog, path=path) is None})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"({path} not written)"


def _exit_on_sigterm() -> None:
    """SIGTERM (CI cancelling, `timeout`) raises SystemExit so `with`/finally blocks still stop the daemons."""
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class SlurmCluster:
    """Single-node SLURM with accounting. `env` is what clients (sbatch, sacct, snakemake) need."""

    def __init__(
        self,
        root: Path,
        gpus: int = 2,
        account: str = "menagerie-test",
        partition: str = "debug",
        cluster_name: str = "menagerie",
        cpus: int = 16,
        memory_mb: int = 65536,
        min_job_age: int = 300,
    ):
        self.root = Path(root).resolve()
        self.gpus, self.account, self.partition = gpus, account, partition
        self.cluster_name, self.cpus, self.memory_mb, self.min_job_age = cluster_name, cpus, memory_mb, min_job_age
        self.host = socket.gethostname().split(".")[0]
        self.node = "node1"
        self.procs: dict[str, subprocess.Popen] = {}
        self.started_pids: dict[str, int] = {}
        self.ports = {name: _free_port() for name in ("ctld", "slurmd", "dbd")}
        d = self.root
        self.paths = {
            "conf": d / "etc/slurm.conf",
            "dbdconf": d / "etc/slurmdbd.conf",
            "gres": d / "etc/gres.conf",
            "munge_key": d / "munge/munge.key",
            "munge_sock": d / "munge/munge.socket",
            "db": d / "mysql/data",
            "db_sock": d / "mysql/mysqld.sock",
            "log": d / "log",
            "state": d / "state",
            "spool": d / "spool",
            "run": d / "run",
            "dev": d / "dev",
        }
        # client shims in bin/ pin SLURM_CONF: snakemake's slurm-jobstep strips SLURM_* before its nested srun
        self.bin = d / "bin"
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.paths["conf"]),
            "MYSQL_UNIX_PORT": str(self.paths["db_sock"]),
            "PATH": f"{self.bin}:{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
        }
        for var in ("SLURM_JOB_ID", "SLURM_JOBID", "SBATCH_ACCOUNT", "SBATCH_PARTITION"):
            self.env.pop(var, None)

    # ------------------------------------------------------------------ configuration
    def _write_configs(self) -> None:
        p = self.paths
        for key in ("log", "state", "spool", "run", "dev", "db"):
            p[key].mkdir(parents=True, exist_ok=True)
        p["conf"].parent.mkdir(parents=True, exist_ok=True)
        p["munge_key"].parent.mkdir(parents=True, exist_ok=True)
        os.chmod(p["munge_key"].parent, 0o700)
        p["munge_key"].write_bytes(os.urandom(1024))
        os.chmod(p["munge_key"], 0o600)
        devices = []
        for i in range(self.gpus):
            dev = p["dev"] / f"nvidia{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # character device, like /dev/null
            devices.append(str(dev))
        self.bin.mkdir(parents=True, exist_ok=True)
        for client in CLIENTS:
            real = shutil.which(client, path="/usr/bin:/usr/sbin:/bin:/sbin") or f"/usr/bin/{client}"
            shim = self.bin / client
            shim.write_text(f'#!/bin/sh\nSLURM_CONF="{p["conf"]}" exec {real} "$@"\n')
            shim.chmod(0o755)
        auth = f"AuthType=auth/munge\nAuthInfo=socket={p['munge_sock']}\n"
        p["gres"].write_text("".join(f"NodeName={self.node} Name=gpu Type={GPU_TYPE} File={dev}\n" for dev in devices))
        p["conf"].write_text(f"""# generated by tests/slurm_cluster.py (test cluster; everything under {self.root})
ClusterName={self.cluster_name}
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ports["ctld"]}
SlurmdPort={self.ports["slurmd"]}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
{auth}CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={p["state"]}
SlurmdSpoolDir={p["spool"]}/%n
SlurmctldPidFile={p["run"]}/slurmctld.pid
SlurmdPidFile={p["run"]}/slurmd-%n.pid
SlurmctldLogFile={p["log"]}/slurmctld.log
SlurmdLogFile={p["log"]}/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MinJobAge={self.min_job_age}
KillWait=2
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports["dbd"]}
AccountingStoragePass={p["munge_sock"]}
AccountingStorageTRES=gres/gpu,gres/gpu:{GPU_TYPE}
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.host} CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:{GPU_TYPE}:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        p["dbdconf"].write_text(f"""{auth}DbdHost={self.host}
DbdAddr=127.0.0.1
DbdPort={self.ports["dbd"]}
SlurmUser=root
LogFile={p["log"]}/slurmdbd.log
PidFile={p["run"]}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
""")
        os.chmod(p["dbdconf"], 0o600)

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, argv: list[str], log: Path | None = None) -> None:
        out = open(log or self.paths["log"] / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        out.close()
        self.started_pids[name] = self.procs[name].pid

    def _wait(self, what: str, check, timeout: float, log: Path, name: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name and self.procs[name].poll() is not None:
                raise ClusterError(f"{name} exited with {self.procs[name].returncode}:\n{_tail(log)}")
            if check():
                return
            time.sleep(0.2)
        raise ClusterError(f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}")

    def run(self, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a client command (sacctmgr, sinfo, sacct, ...) against this cluster, bounded in time."""
        result = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def _ok(self, *argv: str) -> bool:
        try:
            return self.run(*argv, timeout=10, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self, timeout: float = 60) -> "SlurmCluster":
        missing = missing_packages()
        if missing:
            raise ClusterError(
                f"missing Debian packages: {' '.join(missing)} (apt-get install -y {' '.join(APT_PACKAGES)})"
            )
        if os.geteuid() != 0:
            raise ClusterError("the test cluster runs its daemons as root (mknod, SlurmUser=root); run as root")
        self._write_configs()
        _exit_on_sigterm()
        p, log = self.paths, self.paths["log"]
        try:
            self._spawn(
                "munged",
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--key-file={p['munge_key']}",
                    f"--socket={p['munge_sock']}",
                    f"--pid-file={p['run']}/munged.pid",
                    f"--log-file={log}/munged.log",
                    f"--seed-file={p['run']}/munged.seed",
                ],
            )
            subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={p['db']}",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                env=self.env,
                stdout=open(log / "mariadb-install.log", "wb"),
                stderr=subprocess.STDOUT,
                timeout=120,
                check=True,
            )
            self._spawn(
                "mariadbd",
                [
                    "mariadbd",
                    "--no-defaults",
                    f"--datadir={p['db']}",
                    f"--socket={p['db_sock']}",
                    "--skip-networking",
                    "--user=root",
                    f"--pid-file={p['run']}/mariadbd.pid",
                    f"--log-error={log}/mariadbd.log",
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-log-file-size=16M",
                    "--skip-log-bin",
                ],
            )
            self._wait("munged", lambda: p["munge_sock"].exists(), timeout, log / "munged.log", "munged")
            self._wait("mariadbd", lambda: p["db_sock"].exists(), timeout, log / "mariadbd.log", "mariadbd")
            self._spawn("slurmdbd", ["slurmdbd", "-D"])  # reads slurmdbd.conf beside $SLURM_CONF
            self._wait(
                "slurmdbd",
                lambda: self._ok("sacctmgr", "-n", "list", "cluster"),
                timeout,
                log / "slurmdbd.log",
                "slurmdbd",
            )
            self.run("sacctmgr", "-i", "add", "cluster", self.cluster_name)
            self.run(
                "sacctmgr",
                "-i",
                "add",
                "account",
                self.account,
                f"Cluster={self.cluster_name}",
                "Description=test",
                "Organization=menagerie",
            )
            self.run("sacctmgr", "-i", "add", "user", "root", f"Account={self.account}", f"Cluster={self.cluster_name}")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(p["conf"])])
            self._wait("slurmctld", lambda: self._ok("scontrol", "ping"), timeout, log / "slurmctld.log", "slurmctld")
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(p["conf"])])
            self._wait("slurmd", self._node_idle, timeout, log / f"slurmd-{self.node}.log", "slurmd")
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        try:
            out = self.run("sinfo", "-h", "-n", self.node, "-o", "%t", timeout=10, check=False).stdout.strip()
        except subprocess.TimeoutExpired:
            return False
        return out in ("idle", "mix", "alloc")

    def stop(self, timeout: float = 15) -> None:
        """Cancel jobs, stop the daemons in reverse order (SIGTERM, then SIGKILL of their process group)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", "-u", "root", timeout=10, check=False)
            except subprocess.TimeoutExpired:
                pass
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            try:  # the whole session: slurmstepd and job processes that slurmd left behind
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def leftover_processes(self) -> list[str]:
        """Daemons this cluster started that are still alive, and processes whose command line mentions its
        directory (pgrep); both should be empty after stop()."""
        alive = []
        for name, pid in self.started_pids.items():
            try:
                os.kill(pid, 0)
                alive.append(f"{pid} {name}")
            except ProcessLookupError:
                pass
        out = subprocess.run(["pgrep", "-af", str(self.root)], capture_output=True, text=True, timeout=10).stdout
        return alive + [line for line in out.splitlines() if line.strip() and "pgrep" not in line]

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
