"""``fedledger bench fl``: what the ledger costs around hierarchical FedAvg, in one run.

Three things are measured on the same data set, partition, initial model and
training program (:mod:`fedledger.sim.ledgered_fl` has the details):

* the **plain arm**: hierarchical FedAvg (devices → edges → cloud) with local
  training in recorded steps, and nothing else;
* the **ledger arm**: the same training plus everything the ledger adds, with the
  chains, signatures, sealed blobs and on-disk stores of a real deployment, timed
  per stage like seed 004 Table III (``train``, ``encrypt``, ``store``, ``commit``,
  ``download``, ``decrypt``, ``verify``). Its final model must hash identically to
  the plain arm's (``same_model``); a mismatch is an error;
* the **centralised baseline**: the same model trained on every device's data
  pooled, for the same total epochs (rounds × k × local epochs).

How overhead is measured. The two arms run in turn, round by round (ABBA order, so
neither always goes first), pinned to one core; a round is timed from handing out the
global model to publishing the next one. ``round_s_plain`` and ``round_s_with_ledger``
are the medians over the rounds, and ``overhead_ratio`` is their ratio (1.04 means 4 %
overhead). ``overhead_ratio_cpu`` is the same ratio of the rounds' thread CPU times: it
leaves out waiting for the disk (the stores' fsyncs) and time other processes took the
core, so it is steadier on a busy machine but blind to I/O. One-off work before round 1 (opening the task, sealing, storing and
recording every data batch, publishing the initial model) is reported as ``setup_s``,
not in the rounds; the cloud's test-set evaluation is reported as ``evaluate_s``.

``stages_s[stage]`` gives ``total`` (setup included), ``per_round`` (mean over the
rounds) and ``setup`` seconds; ``other`` is what a ledger round spends outside the
stages (FedAvg, the engine), the same work as in a plain round. Spot checks (the
edge re-running ``--verify-steps`` N recorded steps per update, seed 000 §V-B) are
part of the rounds when N > 0. With N = 0 (the default) one sampled step per update
is still re-run, outside the round: ``spot_check_s`` is its total, and
``spot_check_ratio`` its cost per round over a plain round (0.08: it would add 8 %).

Like every benchmark, the last line of stdout is exactly one JSON object.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from fedledger.cli.bench import pinned_to_one_core
from fedledger.fl.specs import check_model_dataset, model_spec
from fedledger.node.roles.base import FLSettings
from fedledger.sim.ledgered_fl import LEDGER_STAGES, PipelineConfig, PipelineOutcome, run_pipeline

FULL = {"devices": 5, "rounds": 5, "epochs": FLSettings.epochs}
QUICK = {"devices": 3, "rounds": 2, "epochs": 1}
OTHER = "other"


@dataclass(frozen=True)
class Options:
    """The pipeline to run, and whether it is the ``--quick`` size."""

    pipeline: PipelineConfig
    quick: bool


def options(model: str, dataset: str, data_dir: Path | None, edges: int, devices: int | None,
            rounds: int | None, device_rounds: int, epochs: int | None, partition: str, readings: int,
            verify_steps: int, seal: bool, quick: bool, record_steps: bool = True) -> Options:
    """Command-line values to :class:`Options`; ``--quick`` shrinks what was not given."""
    check_model_dataset(model, dataset)
    size = QUICK if quick else FULL
    settings = FLSettings(model=model, dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
                          epochs=size["epochs"] if epochs is None else epochs,
                          partition=partition, readings=readings, device_rounds=device_rounds, seal=seal,
                          verify_steps=verify_steps)
    settings.program()  # a bad setting fails here, before anything is loaded
    pipeline = PipelineConfig(settings, edges=edges,
                              devices_per_edge=size["devices"] if devices is None else devices,
                              rounds=size["rounds"] if rounds is None else rounds, record_steps=record_steps)
    return Options(pipeline, quick)


def run(opts: Options, console: Console) -> dict[str, Any]:
    """Run both arms and the centralised baseline pinned to one core; the JSON result."""
    t0 = time.perf_counter()
    with pinned_to_one_core() as cpu, tempfile.TemporaryDirectory(prefix="fedledger-bench-fl-") as tmp:
        out = run_pipeline(opts.pipeline, Path(tmp), note=lambda msg: console.print(f"[dim]{msg}[/dim]"))
        ledger = ledger_summary(out)
    return {**summary(out), "ledger": ledger, "quick": opts.quick, "cpu": cpu, "python": platform.python_version(),
            "seconds": round(time.perf_counter() - t0, 2)}


def _s(x: float) -> float:
    return round(x, 5)


def stage_seconds(out: PipelineOutcome) -> dict[str, dict[str, float]]:
    """Per ledger stage: total seconds (setup included), mean per round, and setup; plus ``other``."""
    clock = out.ledger.clock
    stages: dict[str, dict[str, float]] = {
        name: {"total": _s(clock.total(name)), "per_round": _s(statistics.fmean(clock.per_round(name))),
               "setup": _s(clock.stages[0][name])}
        for name in LEDGER_STAGES
    }
    timed = set().union(*clock.stages) - clock.untimed
    other = [r - sum(s[n] for n in timed) for r, s in zip(clock.round_s, clock.stages[1:], strict=True)]
    stages[OTHER] = {"total": _s(sum(other)), "per_round": _s(statistics.fmean(other)), "setup": 0.0}
    return stages


def summary(out: PipelineOutcome) -> dict[str, Any]:
    """The JSON keys describing the run and its measurements (see the module docstring)."""
    cfg, s = out.work.config, out.work.settings
    ledger, plain = out.ledger.clock, out.plain.clock
    round_plain, round_ledger = statistics.median(plain.round_s), statistics.median(ledger.round_s)
    cpu_plain, cpu_ledger = statistics.median(plain.round_cpu_s), statistics.median(ledger.round_cpu_s)
    spot_per_round = statistics.fmean(ledger.per_round("spot_check"))
    steps = out.ledger.ledger.tx_counts()["fl.record_step"]
    return {
        "bench": "fl",
        "overhead_ratio": round(round_ledger / round_plain, 4),
        "round_s_with_ledger": _s(round_ledger),
        "round_s_plain": _s(round_plain),
        "rounds_s_with_ledger": [_s(x) for x in ledger.round_s],
        "rounds_s_plain": [_s(x) for x in plain.round_s],
        "overhead_ratio_cpu": round(cpu_ledger / cpu_plain, 4),
        "round_cpu_s_with_ledger": _s(cpu_ledger),
        "round_cpu_s_plain": _s(cpu_plain),
        "stages_s": stage_seconds(out),
        "plain_train_s": {"total": _s(plain.total("train")),
                          "per_round": _s(statistics.fmean(plain.per_round("train")))},
        "setup_s": _s(sum(v for k, v in ledger.stages[0].items() if k not in ledger.untimed)),
        "evaluate_s": _s(ledger.total("evaluate")),
        "spot_check_s": _s(ledger.total("spot_check")),
        "spot_check_steps": out.ledger.spot_check_steps,
        "spot_check_in_rounds": bool(s.verify_steps),
        "spot_check_ratio": round(spot_per_round / round_plain, 4),
        "steps_rerun": out.ledger.steps_rerun,
        "final_accuracy": round(out.ledger.accuracy[-1], 4),
        "accuracy_per_round": [round(a, 4) for a in out.ledger.accuracy],
        "centralized_accuracy": round(out.centralized_accuracy, 4),
        "centralized_s": _s(out.centralized_s),
        "same_model": True,  # run_pipeline raises otherwise
        "final_model": out.final_model.hex(),
        "model": s.model,
        "dataset": s.dataset,
        "params": model_spec(s.model).num_parameters,
        "edges": cfg.edges,
        "devices": cfg.edges * cfg.devices_per_edge,
        "devices_per_edge": cfg.devices_per_edge,
        "rounds": cfg.rounds,
        "device_rounds": s.device_rounds,
        "epochs": s.epochs,
        "readings": s.readings,
        "partition": s.partition,
        "seal": s.seal,
        "record_steps": out.work.config.record_steps,
        "verify_steps": s.verify_steps,
        "steps_per_round": steps // cfg.rounds,
        "timing": {"order": "alternating rounds, ABBA", "statistic": "median over rounds",
                   "cpu_share": round(out.cpu_share, 3)},
    }


def ledger_summary(out: PipelineOutcome) -> dict[str, Any]:
    """What the run left on the chains and in the stores (read before the stores are removed)."""
    ledger = out.ledger.ledger
    stores = ledger.stores()
    return {
        "txs": dict(sorted(ledger.tx_counts().items())),
        "main_height": ledger.main.state.height,
        "sub_heights": {ledger.chain_ids[e]: c.state.height for e, c in ledger.subs.items()},
        "blobs": sum(1 for store in stores for _ in store.addresses()),
        "blob_bytes": sum(store.size(a) for store in stores for a in store.addresses()),
    }


def table(r: dict[str, Any]) -> str:
    """A human summary (the JSON line has everything)."""
    plain = r["round_s_plain"]
    spot = f"{r['spot_check_steps']} step/update, {'in' if r['spot_check_in_rounds'] else 'outside'} the rounds"
    lines = [
        f"bench fl: {r['model']} ({r['params']:,} parameters) on {r['dataset']}, {r['edges']} edges x "
        f"{r['devices_per_edge']} devices, {r['rounds']} rounds x k={r['device_rounds']}, {r['epochs']} epochs, "
        f"{r['steps_per_round']} recorded steps/round, {'sealed' if r['seal'] else 'plain'} blobs",
        f"round (median)   plain {plain:.4f} s   with ledger {r['round_s_with_ledger']:.4f} s   "
        f"overhead_ratio {r['overhead_ratio']:.3f} (CPU time only: {r['overhead_ratio_cpu']:.3f})",
        f"{'stage':<12} {'per round s':>12} {'x plain round':>14} {'total s':>9}",
    ]
    for name, v in r["stages_s"].items():
        lines.append(f"{name:<12} {v['per_round']:>12.4f} {v['per_round'] / plain:>14.3f} {v['total']:>9.3f}")
    lines += [
        f"spot check   {r['spot_check_s']:.4f} s in all ({spot}), ratio {r['spot_check_ratio']:.3f} of a plain round",
        f"setup        {r['setup_s']:.4f} s before round 1 (task, data records, initial model), not in the rounds",
        "accuracy     " + " ".join(f"{a:.3f}" for a in r["accuracy_per_round"])
        + f"   final {r['final_accuracy']:.3f}, centralised {r['centralized_accuracy']:.3f}",
        f"same model   {r['same_model']} ({r['final_model'][:16]}…)",
    ]
    return "\n".join(lines)
