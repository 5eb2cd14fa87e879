"""``fedledger bench secagg``: seed 001's verifiable secure aggregation against three baselines.

One round of the protocol (:mod:`fedledger.fl.secagg.session`) with ``--devices``
devices at one edge and the cloud's verified sum, on random updates of
``--params`` coordinates, timed end to end with every party's work done in
this process one after another (as Flower's in-process run does). Measured in
the same run:

* ``plain_s``: the plain float sum of the same updates (FedAvg's arithmetic);
* ``paillier_s``: one round of threshold Paillier (seed 003, DeepChain): every
  device encrypts, the aggregator multiplies, ``t`` parties post proven
  decryption shares, the combiner verifies and combines. Timed on
  ``--paillier-slice`` coordinates and scaled linearly (``paillier_scaled``);
* ``flower_secaggplus_s``: Flower 1.41's SecAgg+ in-process at the same N, D
  and threshold (``pip install 'fedledger[bench]'``; null when absent).

``round_s`` is the median over ``--rounds`` rounds after one warm-up round.
Ratios: ``speedup_vs_paillier = paillier_s / round_s`` and
``vs_flower_secaggplus = flower_secaggplus_s / round_s`` (above 1: faster than
Flower, while also verifiable). ``bytes_per_device`` counts what one device
sends: its masked update, its share for each participant, its sketches, its
share sum and the digests. Like every benchmark, the last line of stdout is
exactly one JSON object.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console

from fedledger.crypto.keys import SigningKey
from fedledger.errors import UsageError
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg import session as S
from fedledger.fl.secagg.field import decode


@dataclass(frozen=True)
class Options:
    params: int
    devices: int
    threshold: int
    rounds: int
    paillier_slice: int
    key_bits: int
    flower: bool
    noise_sigma: float = 0.01


def options(params: int, devices: int, threshold: int | None, rounds: int, paillier_slice: int,
            key_bits: int, flower: bool, quick: bool) -> Options:
    if quick:
        params, rounds, paillier_slice, key_bits = min(params, 20_000), 1, min(paillier_slice, 16), 1024
    t = threshold if threshold is not None else math.ceil(0.6 * devices)
    if not 1 <= t <= devices:
        raise UsageError(f"--threshold must be between 1 and --devices ({devices}), got {t}")
    return Options(params, devices, t, rounds, paillier_slice, key_bits, flower)


def _round(opts: Options, ups: dict[str, np.ndarray], r: int) -> tuple[float, S.EdgeOutcome, S.CloudOutcome]:
    names = sorted(ups)
    params = P.Params(threshold=opts.threshold, noise_sigma=opts.noise_sigma, weight_budget=64)
    edge = SigningKey.from_seed(bytes([1]) * 32)
    context = f"bench/{r}".encode()
    start = time.perf_counter()
    out = S.run_edge("edge", edge, context, ups, {n: 1 for n in names}, params,
                     noise_keys=S.simulation_keys(r, names, "noise"),
                     share_key=S.simulation_keys(r, names, "share").__getitem__)
    cloud = S.run_cloud(context, [out], params)
    return time.perf_counter() - start, out, cloud


def run(opts: Options, console: Console) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    ups = {f"device-{i:03d}": rng.normal(0.0, 0.01, opts.params) for i in range(opts.devices)}
    plain = []
    for _ in range(max(3, opts.rounds)):
        start = time.perf_counter()
        total = np.zeros(opts.params)
        for v in ups.values():
            total += v
        plain.append(time.perf_counter() - start)
    plain_s = statistics.median(plain)
    want = total

    console.log(f"seed 001 protocol: {opts.devices} devices, {opts.params:,} parameters, t = {opts.threshold}")
    times, stages = [], []
    for r in range(opts.rounds + 1):
        secs, out, cloud = _round(opts, ups, r)
        if not cloud.accepted or out.penalised:
            raise UsageError("an honest benchmark round was refused; this is a bug")
        err = float(np.max(np.abs(decode(cloud.total, 16) - want)))
        if err > opts.devices * 2.0**-17 + 1e-12:
            raise UsageError(f"secure sum off by {err}; this is a bug")
        if r:  # round 0 warms up caches and imports
            times.append(secs)
            stages.append({**out.timings, **cloud.timings})
    round_s = statistics.median(times)
    stage_s = {k: statistics.median(s[k] for s in stages) for k in stages[0]}

    from fedledger.fl.paillier_agg import paillier_round_seconds

    console.log(f"threshold Paillier ({opts.key_bits}-bit modulus) on {opts.paillier_slice} coordinates")
    pai = paillier_round_seconds(opts.params, opts.devices, opts.threshold, slice_size=opts.paillier_slice,
                                 key_bits=opts.key_bits, insecure_for_tests=opts.key_bits < 2048)

    flower: dict[str, Any] | None = None
    flower_note = ""
    if opts.flower:
        from fedledger.sim.flower_secagg import flower_available, flower_secaggplus_round

        if flower_available():
            console.log("Flower SecAgg+ in-process")
            flower = flower_secaggplus_round(opts.devices, opts.params, opts.threshold)
        else:
            flower_note = "Flower is not installed: pip install 'fedledger[bench]'"
    flower_s = float(flower["round_s"]) if flower else None
    return {
        "bench": "secagg",
        "params": opts.params,
        "devices": opts.devices,
        "threshold": opts.threshold,
        "rounds": opts.rounds,
        "round_s": round_s,
        "stages_s": stage_s,
        "plain_s": plain_s,
        "overhead_vs_plain": round_s / plain_s if plain_s else None,
        "paillier_s": float(pai["seconds"]),
        "paillier_scaled": bool(pai["scaled"]),
        "paillier_slice": int(pai["slice_size"]),
        "paillier_key_bits": int(pai["key_bits"]),
        "speedup_vs_paillier": float(pai["seconds"]) / round_s,
        "flower_secaggplus_s": flower_s,
        "flower_plain_s": float(flower["plain_s"]) if flower else None,
        "vs_flower_secaggplus": flower_s / round_s if flower_s else None,
        "flower_note": flower_note or (f"flwr {flower['flwr_version']}, in-process" if flower else "skipped"),
        "bytes_per_device": out.bytes_per_device,
        "max_abs_error": err,
        "goals": {"round_under_1s": round_s < 1.0, "paillier_100x": float(pai["seconds"]) / round_s >= 100,
                  "flower_1x": (flower_s / round_s >= 1) if flower_s else None},
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }


def table(result: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    t = Table(title=f"secure aggregation: {result['devices']} devices, {result['params']:,} parameters, "
                    f"t = {result['threshold']}")
    t.add_column("scheme")
    t.add_column("s / round", justify="right")
    t.add_column("ratio to ours", justify="right")
    t.add_row("seed 001 (verifiable, this)", f"{result['round_s']:.3f}", "1")
    t.add_row("plain sum", f"{result['plain_s']:.4f}", f"{result['plain_s'] / result['round_s']:.3f}")
    t.add_row("threshold Paillier" + (" (scaled)" if result["paillier_scaled"] else ""),
              f"{result['paillier_s']:.1f}", f"{result['speedup_vs_paillier']:.0f}")
    if result["flower_secaggplus_s"] is not None:
        t.add_row("Flower SecAgg+ (not verifiable)", f"{result['flower_secaggplus_s']:.3f}",
                  f"{result['vs_flower_secaggplus']:.2f}")
    console.print(t)
    console.print(f"bytes sent per device: {result['bytes_per_device']:,}; stages: "
                  + ", ".join(f"{k} {v:.3f}s" for k, v in result["stages_s"].items()))
