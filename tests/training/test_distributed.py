"""Several devices and several processes, on the CPU: virtual devices (``JAX_NUM_CPU_DEVICES``, fixed
per process, so each layout runs in a subprocess) and processes joined by ``jax.distributed`` on
127.0.0.1. The reference is the one-device run of the same experiment, in this process."""

import concurrent.futures
import glob
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from rich.console import Console

from conftest import child_env, compose_config
from lottery import hosts, imp
from lottery.training import mesh as mesh_module
from lottery.training import trainer as training
from lottery.errors import LotteryError

# 3 replicates (level 0: 3 networks on 4 devices, padded), a control (level 1: 6 networks, two rounds)
# and LMC copies (4 more); checkpoints between evaluations, so resuming restores the running loss sum.
# SGD: Adam divides by sqrt(v) + 1e-8, which turns the float rounding of data-parallel sums into
# visible differences of weights whose gradients are ~0 (the comparison of layouts would say little).
RUN = [
    "model.hidden=[64,32]",
    "optimizer=sgd",
    "optimizer.lr=0.05",
    "optimizer.momentum=0.9",
    "levels=1",
    "replicates=3",
    "controls=[random_reinit]",
    "lmc.levels=[1]",
    "lmc.points=3",
    "training.steps=4ep",
    "training.eval_every=25it",
    "checkpoint_every=20it",
    "progress=false",
]
HERE = os.path.dirname(os.path.abspath(__file__))  # tests/training: this module (diet_digest)
TESTS = os.path.dirname(HERE)  # tests: conftest.py


def results(root):
    """Every metrics.json (without wall times and provenance) and every saved array, by path."""
    (directory,) = glob.glob(os.path.join(root, "quickstart-*"))
    out = {}
    for path in sorted(glob.glob(f"{directory}/replicate_*/**/metrics.json", recursive=True)):
        metrics = json.load(open(path))
        for key in ("wall_time_s", "provenance", "group_size"):
            metrics.pop(key, None)
        out[os.path.relpath(path, directory)] = metrics
    experiment = imp.prepare(compose_config([*RUN, f"output_dir={root}"]))
    for what in ("trained", "ticket", "copy_a", "copy_b"):
        for path in sorted(glob.glob(f"{directory}/replicate_*/**/{what}", recursive=True)):
            saved = experiment.load(os.path.dirname(path), what)
            out[os.path.relpath(path, directory)] = [np.asarray(a) for a in jax.tree.leaves(saved)]
    return out


def bitwise(a, b) -> bool:
    return a.keys() == b.keys() and all(
        (all(np.array_equal(x, y) for x, y in zip(a[k], b[k])) if isinstance(a[k], list) else a[k] == b[k]) for k in a
    )


def close(a, b, atol=1e-4) -> None:
    """Equal up to float rounding: arrays within ``atol``, accuracies within 1%."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], list):
            for x, y in zip(a[key], b[key]):
                np.testing.assert_allclose(x, y, atol=atol, err_msg=key)
        elif "final" in a[key]:
            assert abs(a[key]["final"]["test_accuracy"] - b[key]["final"]["test_accuracy"]) <= 0.01, key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-device")
    assert jax.device_count() == 1
    imp.run(compose_config([*RUN, f"output_dir={root}"]), Console(quiet=True))
    return results(str(root))


def diet_digest(mesh) -> str:
    """8 networks trained 45 steps by a trainer with a data diet (every third example until step 30:
    5 epochs of the subset, then the whole set from the middle of its second epoch), on this
    process's devices as ``mesh`` lays them: a digest of their weights."""
    experiment = imp.prepare(compose_config([*RUN, *mesh]))  # writes nothing
    trainer = experiment.trainer.with_diet(np.arange(0, len(experiment.trainer.train_host[0]), 3), 30)
    keys = [experiment.keys(r) for r in range(8)]
    data_keys, augment_keys = (jax.numpy.stack([k[name] for k in keys]) for name in ("data", "augment"))
    start = training.stack([experiment.dense_start(r) for r in range(8)])
    states, sums = trainer.train(start, data_keys, augment_keys, 0, 20)
    assert not any(a.is_deleted() for a in jax.tree.leaves(start))  # the caller's stack: copied, not consumed
    if jax.device_count() == 1:
        states, _ = trainer.train(states, data_keys, augment_keys, 20, 45, sums)
    else:  # between chunks the states (two rounds of 4) stay split along members on the mesh, never via the host
        assert all(len(a.sharding.device_set) == 4 for a in jax.tree.leaves((states, sums)))
        refuse = lambda *a, **k: pytest.fail("a chunk's states went through the host")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(mesh_module, "to_host", refuse)
            patch.setattr(mesh_module.jax, "device_get", refuse)
            states, _ = trainer.train(states, data_keys, augment_keys, 20, 45, sums)
        assert all(len(a.sharding.device_set) == 4 for a in jax.tree.leaves(states))
        loss, accuracy = trainer.evaluate(states, "val")  # evaluated there, only the results to the host
        assert loss.shape == accuracy.shape == (8,)
        six = jax.tree.map(lambda a: a[:6], mesh_module.settled(states))  # padded to 8: through the host, as before
        np.testing.assert_array_equal(loss[:6], trainer.evaluate(six, "val")[0])  # each result the network's
    return hashlib.sha256(
        b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(jax.device_get(states)))
    ).hexdigest()


LAYOUTS = """
import json, sys
sys.path[:0] = [{tests!r}, {here!r}]
from rich.console import Console
from conftest import compose_config
from lottery import imp
from lottery.training.mesh import COLLECTIVES
run, root = {run!r}, {root!r}
for name, mesh in [("members", ["mesh=members"]), ("data", ["mesh=data"]), ("grid", ["mesh.members=2", "mesh.data=2"]),
                   ("data_again", ["mesh=data", "levels=0", "lmc.levels=[]"]),  # level 0 again, for run to run
                   ("members_stacked", ["mesh=members", "training.stack=2"])]:  # a stack of 2 on each device
    imp.run(compose_config([*run, *mesh, "output_dir=" + root + "/" + name]), Console(quiet=True))
trainer = imp.prepare(compose_config([*run, "output_dir=" + root + "/members"])).trainer
found = lambda text: [c for c in COLLECTIVES if c in text]
from test_distributed import diet_digest
print(json.dumps({{"members": found(trainer.over_mesh(4).compiled_text()),
                  "data": found(trainer.over_mesh(1).compiled_text()),
                  "shapes": [list(trainer.over_mesh(n).mesh.devices.shape) for n in (1, 3, 4, 6)],
                  "diet": diet_digest(["mesh=members"]),
                  "diet_stacked": diet_digest(["mesh=members", "training.stack=2"])}}))  # 2 on each device
"""


@pytest.mark.slow
def test_member_data_and_2d_meshes_on_4_devices_match_one_device(request, tmp_path):
    code = LAYOUTS.format(tests=TESTS, here=HERE, run=RUN, root=str(tmp_path))
    layouts = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=child_env(JAX_NUM_CPU_DEVICES="4"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The one-device runs train in this process while the 4-device process trains its layouts: the
    # two overlap on the machine's cores.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            outputs = pool.submit(layouts.communicate, timeout=600)
            reference = request.getfixturevalue("reference")  # (the module's, made here on first use)
            stacked = tmp_path / "one-device-stacked"  # stacks of 2 on one device: what stacks on 4 devices must equal
            imp.run(compose_config([*RUN, "training.stack=2", f"output_dir={stacked}"]), Console(quiet=True))
            stdout, stderr = outputs.result()
        finally:
            if layouts.poll() is None:  # a failure here: stop the 4-device process
                layouts.kill()
    assert layouts.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    # auto: members along the mesh from as many networks as devices, else the batch
    assert report["shapes"] == [[1, 4], [1, 4], [4, 1], [4, 1]]
    assert report["members"] == []  # member-parallel: no communication at all
    assert "all-reduce" in report["data"]  # data-parallel: XLA averages the gradients
    assert report["diet"] == diet_digest([])  # a data diet's subset epochs over the mesh: bitwise one device
    assert report["diet_stacked"] == diet_digest(["training.stack=2"])  # stacks of 2 kept on the mesh, too
    members = results(str(tmp_path / "members"))
    assert bitwise(members, reference)  # each device runs the one-network program: bitwise one device
    for layout in ("data", "grid"):
        close(results(str(tmp_path / layout)), reference)
    again, data = results(str(tmp_path / "data_again")), results(str(tmp_path / "data"))
    assert again and bitwise(again, {key: data[key] for key in again})  # run to run
    # Stacks per device (8 networks a round at level 1's 6: padded) train to the one-device stacks'
    # bits; their evaluations (one vmapped program inside shard_map) agree to the last bit of a loss.
    spread, alone = results(str(tmp_path / "members_stacked")), results(str(stacked))
    arrays = [key for key in alone if isinstance(alone[key], list)]
    assert arrays and bitwise({k: spread[k] for k in arrays}, {k: alone[k] for k in arrays})
    close(spread, alone)


def free_port(low=1024, high=65535) -> int:
    for port in range(low, high):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def launch(cwd, environments, *extra):
    """One process per environment, each with 2 virtual devices, running the same command (without
    the LMC copies, to keep it short: 4 processes share the test machine's cores)."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "lottery.run", *RUN, "mesh=members", "output_dir=runs", "lmc.levels=[]", *extra],
            cwd=cwd,
            env=child_env(JAX_NUM_CPU_DEVICES="2", **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in environments
    ]


def slurm(port: int, tasks: int):
    """A faked SLURM job step of ``tasks`` tasks on this host; JAX derives its coordinator port from
    the job id (ephemeral range 61440..65535), so the id is chosen to land on ``port``."""
    return [
        {
            "SLURM_JOB_ID": str(port - 61440 + 4096),
            "SLURM_STEP_NODELIST": "127.0.0.1",
            "SLURM_NTASKS": str(tasks),
            "SLURM_PROCID": str(i),
            "SLURM_LOCALID": str(i),
            "SLURM_STEP_NUM_NODES": "1",
        }
        for i in range(tasks)
    ]


def test_a_faked_slurm_step_is_detected():
    assert hosts.plan(compose_config().distributed, {}) is None
    env = slurm(61450, 2)[1]
    assert hosts.plan(compose_config().distributed, env) == {
        "source": "slurm",
        "num_processes": 2,
        "process_id": 1,
        "coordinator": None,
        "local_device_ids": None,
    }
    assert hosts.plan(compose_config().distributed, {**env, "SLURM_NTASKS": "1"}) is None  # one task: no join
    explicit = compose_config(
        ["distributed.coordinator=10.0.0.1:1234", "distributed.num_processes=4", "distributed.process_id=3"]
    ).distributed
    assert hosts.plan(explicit, env)["source"] == "config"  # config keys win
    with pytest.raises(LotteryError, match=r"distributed\.coordinator is not set"):
        hosts.plan(compose_config(["distributed.num_processes=2"]).distributed, {})


def joined(coordinator, process_id, num_processes=2):
    return compose_config(
        [
            f"distributed.coordinator='{coordinator}'",
            f"distributed.num_processes={num_processes}",
            f"distributed.process_id={process_id}",
        ]
    ).distributed


@pytest.mark.slow
def test_each_process_of_a_run_on_one_host_takes_its_own_device():
    # A coordinator on the loopback: every process is on this host, one device each, by process id.
    for address in ("127.0.0.1:1234", "localhost:1234", "[::1]:1234"):
        assert hosts.plan(joined(address, 1), {})["local_device_ids"] == [1]
    assert hosts.plan(joined("10.0.0.1:1234", 1), {})["local_device_ids"] is None  # one per host: all its devices
    assert hosts.plan(joined("host0:1234", 1), {})["local_device_ids"] is None
    # JAX's own variable says which, whatever the source; CUDA_VISIBLE_DEVICES: whoever set it chose.
    assert hosts.plan(joined("10.0.0.1:1234", 1), {"JAX_LOCAL_DEVICE_IDS": "2,3"})["local_device_ids"] == [2, 3]
    assert hosts.plan(joined("127.0.0.1:1234", 1), {"CUDA_VISIBLE_DEVICES": "5"})["local_device_ids"] is None
    assert (
        hosts.plan(compose_config().distributed, slurm(61450, 2)[1])["local_device_ids"] is None
    )  # JAX: SLURM_LOCALID
    env = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "2"}
    assert hosts.plan(compose_config().distributed, env)["local_device_ids"] == [2]
    with pytest.raises(
        LotteryError, match=r"^JAX_LOCAL_DEVICE_IDS='0,x': expected the numbers of this process's devices"
    ):
        hosts.plan(joined("127.0.0.1:1234", 0), {"JAX_LOCAL_DEVICE_IDS": "0,x"})


def test_processes_that_may_share_a_gpu_do_not_preallocate_it():
    decide = hosts.gpu_memory_environment
    assert decide(None, {}) == {}  # one process: JAX's default
    assert decide(hosts.plan(joined("10.0.0.1:1234", 0), {}), {}) == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    assert decide(None, {"SUBMITIT_EXECUTOR": "local"}) == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # local launcher
    assert decide(None, {"SUBMITIT_EXECUTOR": "slurm"}) == {}  # a SLURM job of one task has its GPUs to itself
    assert decide(None, {"SUBMITIT_EXECUTOR": "local", "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}) == {}  # the user's


def test_joining_settles_memory_and_devices_before_jax_starts(monkeypatch):
    calls = []

    def initialize(*args, **kwargs):  # stands for jax.distributed.initialize: what it would see
        calls.append((args, kwargs, os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")))

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    monkeypatch.setattr(hosts, "_JOINED", None)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.delenv("JAX_LOCAL_DEVICE_IDS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    hosts.initialize(joined("127.0.0.1:1234", 1))
    assert calls == [(("127.0.0.1:1234", 2, 1), {"local_device_ids": [1]}, "false")]
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"

    monkeypatch.setattr(hosts, "_JOINED", None)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # the user's choice is kept
    hosts.initialize(joined("127.0.0.1:1234", 0))
    assert calls[-1][2] == "true" and os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


@pytest.mark.slow
def test_nothing_starts_jaxs_backend_before_a_run_joins_its_processes(tmp_path):
    # imp.run calls hosts.initialize first: importing the command line and the library, and checking
    # a config (what a sweep does before its jobs start), must not have started the backend, or the
    # memory setting and the devices would come too late.
    code = (
        "from conftest import compose_config\n"
        "import lottery.run, lottery.imp\n"
        "from jax._src import xla_bridge\n"
        "lottery.imp.check(compose_config(['+exp=resnet']))\n"
        "print(xla_bridge.backends_are_initialized())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=child_env(PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


@pytest.mark.slow
def test_two_processes_sigterm_to_one_stops_both_and_the_resumed_run_is_bitwise(reference, tmp_path):
    port = free_port()
    processes = [
        process
        for i in range(2)
        for process in launch(
            tmp_path,
            [{}],
            "replicates=2",
            f"distributed.coordinator=127.0.0.1:{port}",
            "distributed.num_processes=2",
            f"distributed.process_id={i}",
        )
    ]
    deadline = time.time() + 300
    while not glob.glob(f"{tmp_path}/runs/quickstart-*/checkpoints/level_1/*/*") and time.time() < deadline:
        assert all(p.poll() is None for p in processes), [p.communicate()[1] for p in processes]
        time.sleep(0.01)
    processes[1].send_signal(signal.SIGTERM)  # to process 1 only
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 143, stderr
        assert "preempted: checkpoint written at level 1, step" in stderr
    steps = {stderr.split("step ")[1].split()[0] for _, stderr in outputs}
    assert len(steps) == 1  # the same checkpoint

    # The same command, now as a faked SLURM job step of 2 tasks (JAX finds the coordinator itself).
    resumed = launch(tmp_path, slurm(free_port(61440), 2), "replicates=2")
    outputs = [p.communicate(timeout=300) for p in resumed]
    assert [p.returncode for p in resumed] == [0, 0], [stderr for _, stderr in outputs]
    assert "level 1: resuming" in outputs[0][0]
    found = results(str(tmp_path / "runs"))
    assert found and bitwise(
        found, {key: reference[key] for key in found}
    )  # 2 processes x 2 devices: bitwise one device

    # Process 0 alone wrote: one start and one end line per invocation, its pid in the lock.
    (directory,) = glob.glob(f"{tmp_path}/runs/quickstart-*")
    entries = [json.loads(line) for line in open(os.path.join(directory, "invocations.jsonl"))]
    assert [e["event"] for e in entries] == ["start", "end", "start", "end"]
    assert [e["status"] for e in entries if e["event"] == "end"] == ["preempted", "finished"]
    assert all(e["program"]["processes"] == 2 for e in entries if e["event"] == "start")
    assert open(os.path.join(directory, "lock")).read() == f"pid {resumed[0].pid} on {os.uname().nodename}"
