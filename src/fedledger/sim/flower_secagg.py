"""Same-run baseline: one round of Flower's SecAgg+ (Bell et al. 2020), in one process.

``fedledger bench secagg`` reports Flower's time per secure-aggregation round
next to ours, at the same number of clients N, vector length D and Shamir
threshold t. Nothing here re-implements the protocol: the round is Flower's own
server workflow (``flwr.server.workflow.SecAggPlusWorkflow``, with its legacy
``FedAvg`` strategy) talking to N Flower ``ClientApp`` objects wrapped in
Flower's client mod (``flwr.client.mod.secaggplus_mod``). Key agreement (ECDH +
HKDF), Shamir sharing, Fernet encryption of the shares, quantisation, the
pairwise and private mask PRG and the masked-vector arithmetic are therefore
all Flower's code, run in Flower's stage order.

The only piece written here is the transport. ``flwr.serverapp.Grid`` is
Flower's abstract interface between a server workflow and the nodes; the
subclass below delivers each message to the destination node's ``ClientApp``
synchronously in this process (no gRPC, no SuperLink, no separate processes).
Every message and every reply still crosses that boundary the way Flower ships
it: it gets its content-addressed message id, is broken into Flower's
inflatable objects (``deflate``) and is rebuilt on the other side
(``inflate_object_from_contents``), so each side works on its own copy, as it
would across a network. The time spent there is reported as ``transport_s``.

Flower is an optional dependency (``pip install 'fedledger[bench]'``, pinned to
1.41.0); it is imported only when a round is run.
"""

from __future__ import annotations

import functools
import importlib.util
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from fedledger.errors import ConfigError
from fedledger.logs import quieted

__all__ = ["FLOWER_PIN", "flower_available", "flower_secaggplus_round"]

#: The Flower release the ``bench`` extra pins; results record the version actually used.
FLOWER_PIN = "1.41.0"

_MISSING = "Flower is not installed: pip install 'fedledger[bench]'"

# Run and node identities of the in-process federation. Flower reserves node id 1
# for the SuperLink (``flwr.common.constant.SUPERLINK_NODE_ID``); client node ids
# are arbitrary non-zero integers.
_RUN_ID = 7_001
_FIRST_NODE_ID = 1_001


def flower_available() -> bool:
    """True if ``flwr`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("flwr") is not None


def _require_flower() -> Any:
    try:
        import flwr
    except ImportError as exc:
        raise ConfigError(_MISSING) from exc
    return flwr


@contextmanager
def _server_identity(run_id: int) -> Iterator[None]:
    """Set Flower's process-wide task identity (read by ``Message``) to the server's."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@functools.cache
def _grid_class() -> type:
    """Build (once) the in-process ``Grid`` subclass; needs ``flwr`` importable."""
    from flwr.app import Message
    from flwr.serverapp.grid import Grid
    from flwr.supercore.inflatable.inflatable_object import (
        get_all_nested_objects,
        no_object_id_recompute,
    )
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    class InProcessGrid(Grid):
        """Deliver each message to its node's ``ClientApp`` in this process."""

        def __init__(self, run: Any, nodes: dict[int, tuple[Any, Any]]) -> None:
            self._run = run
            self.nodes = nodes  # node id -> (ClientApp, Context)
            self._replies: dict[str, Any] = {}
            self.transport_s = 0.0

        def _ship(self, msg: Any) -> Any:
            """Id ``msg``, deflate it into Flower's objects, and rebuild the receiver's copy."""
            t0 = time.perf_counter()
            with no_object_id_recompute():
                root = msg.object_id
                msg.metadata.__dict__["_message_id"] = root
                contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(msg).items()}
            copy: Any = inflate_object_from_contents(root, contents)
            copy.metadata.__dict__["_message_id"] = root
            self.transport_s += time.perf_counter() - t0
            return copy

        def set_run(self, run: Any) -> None:
            self._run = run

        @property
        def run(self) -> Any:
            return self._run

        def create_message(
            self,
            content: Any,
            message_type: str,
            dst_node_id: int,
            group_id: str,
            ttl: float | None = None,
        ) -> Any:
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self) -> Iterable[int]:
            return list(self.nodes)

        def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
            ids: list[str] = []
            for msg in messages:
                delivered = self._ship(msg)
                app, context = self.nodes[delivered.metadata.dst_node_id]
                reply = app(delivered, context)
                self._replies[delivered.metadata.message_id] = self._ship(reply)
                ids.append(delivered.metadata.message_id)
            return ids

        def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:
            return [self._replies.pop(mid) for mid in message_ids if mid in self._replies]

        def send_and_receive(
            self, messages: Iterable[Any], *, timeout: float | None = None
        ) -> Iterable[Any]:
            return self.pull_messages(self.push_messages(messages))

    return InProcessGrid


def _client_app(vector: np.ndarray, *, secure: bool) -> Any:
    """A Flower ``ClientApp`` whose local training returns ``vector``.

    With ``secure`` it is wrapped in ``secaggplus_mod``, as in Flower's SecAgg+ example.
    """
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    class FixedUpdateClient(NumPyClient):
        def fit(self, parameters: Any, config: Any) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            # Weight 1, and max_weight=1.0 in the workflow: Flower's factor is exactly 1.
            return [vector], 1, {}

    def client_fn(context: Any) -> Any:
        return FixedUpdateClient().to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secure else [])


def _plain_sum(vectors: list[np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    """Median time of the plain (unprotected) server-side sum of the same vectors."""
    times: list[float] = []
    total = np.zeros(vectors[0].shape, dtype=np.float64)
    for _ in range(max(repeat, 5)):
        t0 = time.perf_counter()
        total = np.zeros(vectors[0].shape, dtype=np.float64)
        for v in vectors:
            total += v
        times.append(time.perf_counter() - t0)
    return statistics.median(times), total


def _run_rounds(
    workflow: Callable[[Any, Any], None],
    vectors: list[np.ndarray],
    *,
    secure: bool,
    repeat: int,
) -> tuple[list[float], list[float], list[np.ndarray]]:
    """Run ``repeat`` Flower rounds of ``workflow``; return wall times, transport times, means."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.supercore.run import Run

    n = len(vectors)
    nodes: dict[int, tuple[Any, Any]] = {}
    for i, vec in enumerate(vectors):
        nid = _FIRST_NODE_ID + i
        ctx = Context(
            run_id=_RUN_ID, node_id=nid, node_config={}, state=RecordDict(), run_config={}
        )
        nodes[nid] = (_client_app(vec, secure=secure), ctx)
    grid = _grid_class()(Run.create_empty(run_id=_RUN_ID), nodes)
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_evaluate_clients=0,
        min_available_clients=n,
    )

    times: list[float] = []
    transport: list[float] = []
    means: list[np.ndarray] = []
    for round_no in range(1, repeat + 1):
        base = Context(
            run_id=_RUN_ID,
            node_id=SUPERLINK_NODE_ID,
            node_config={},
            state=RecordDict(),
            run_config={},
        )
        context = LegacyContext(base, strategy=strategy)
        for nid in nodes:
            context.client_manager.register(GridClientProxy(nid, grid, _RUN_ID))
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: round_no}
        )
        # The global model the server sends out with the fit instructions.
        start = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters([np.zeros(vectors[0].shape, dtype=np.float32)]),
            keep_input=True,
        )
        context.state.array_records[MAIN_PARAMS_RECORD] = start
        grid.transport_s = 0.0

        t0 = time.perf_counter()
        workflow(grid, context)
        times.append(time.perf_counter() - t0)
        transport.append(grid.transport_s)

        out = context.state.array_records[MAIN_PARAMS_RECORD]
        if out is start:
            # Flower's workflows halt (and log why) without replacing the global model.
            raise RuntimeError("Flower's workflow halted before producing an aggregate")
        (mean,) = parameters_to_ndarrays(compat.arrayrecord_to_parameters(out, keep_input=True))
        means.append(np.asarray(mean, dtype=np.float64))
    return times, transport, means


def flower_secaggplus_round(
    num_clients: int,
    params: int,
    threshold: int,
    *,
    seed: int = 0,
    clipping_range: float = 8.0,
    quantization_range: int = 4194304,
    modulus_range: int = 4294967296,
    num_shares: int | None = None,
    repeat: int = 1,
    with_fedavg: bool = False,
) -> dict[str, Any]:
    """Run Flower 1.41's SecAgg+ over ``num_clients`` float32 vectors of length ``params``.

    ``threshold`` is Flower's ``reconstruction_threshold`` as an integer: how many
    Shamir shares rebuild a client's mask seed or key. ``num_shares`` is how many
    neighbours (itself included) each client shares with; the default,
    ``num_clients``, is the complete graph (every client masks against every
    other, t-of-N sharing). Flower requires ``num_shares > 2`` and
    ``1 < threshold < num_shares`` when both are integers.

    Result keys: ``round_s`` is the median wall time over ``repeat`` rounds (each in
    ``round_times_s``) of one call of Flower's workflow: setup (two EC key pairs per
    client), share keys (Shamir splitting of each client's mask seed and key, ECDH +
    HKDF and Fernet encryption per neighbour), collect masked vectors (the fit
    reply, decryption of the shares, quantisation, private and pairwise masks, the
    server's modular sum), unmask (share reconstruction, mask removal,
    dequantisation) and the FedAvg strategy's final step, for all clients, plus the
    transport of every message (its share in ``transport_s``). Drawing the vectors
    and building the ``ClientApp`` objects, node contexts and client registry happen
    before the clock starts. ``plain_s`` is the NumPy sum of the same vectors. With
    ``with_fedavg``, ``fedavg_s`` is a plain Flower FedAvg round (no SecAgg+) over
    the same clients and transport.

    Raises :class:`~fedledger.errors.ConfigError` if Flower is missing or a size is
    invalid, and :class:`RuntimeError` if the unmasked sum differs from the plain
    sum by more than Flower's quantisation error.
    """
    flwr = _require_flower()
    if num_clients < 3:
        raise ConfigError("SecAgg+ needs at least 3 clients")
    if params < 1:
        raise ConfigError("params must be at least 1")
    shares = num_clients if num_shares is None else num_shares
    if not 2 < shares <= num_clients:
        raise ConfigError(f"num_shares must be in 3..{num_clients}, got {shares}")
    if shares < num_clients and shares % 2 == 0:
        # Flower's neighbourhoods are symmetric rings: an even size is bumped to the
        # next odd one after the clients have been told the even size.
        raise ConfigError(f"num_shares below num_clients must be odd, got {shares}")
    if not 1 < threshold < shares:
        raise ConfigError(f"threshold must be in 2..{shares - 1}, got {threshold}")
    if num_clients * quantization_range >= modulus_range:
        # Flower's sum of N quantised vectors would wrap around the modulus.
        raise ConfigError("num_clients * quantization_range must be below modulus_range")
    if repeat < 1:
        raise ConfigError("repeat must be at least 1")

    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.default_workflows import default_fit_workflow

    rng = np.random.default_rng(seed)
    vectors = [
        np.clip(rng.standard_normal(params, dtype=np.float32), -clipping_range, clipping_range)
        for _ in range(num_clients)
    ]
    plain_s, plain_total = _plain_sum(vectors, repeat)

    workflow = SecAggPlusWorkflow(
        num_shares=shares,
        reconstruction_threshold=threshold,
        max_weight=1.0,
        clipping_range=clipping_range,
        quantization_range=quantization_range,
        modulus_range=modulus_range,
    )
    # Per client, Flower's stochastic rounding is off by less than one quantisation
    # level, and shifting a float32 input into [0, 2 * clipping_range] before
    # scaling rounds it by at most one float32 ulp at 2 * clipping_range.
    step = 2.0 * clipping_range / quantization_range
    shift_ulp = float(np.spacing(np.float32(2.0 * clipping_range)))
    tolerance = num_clients * (step + shift_ulp) * (1.0 + 1e-9)

    with quieted("flwr"), _server_identity(_RUN_ID):
        times, transport, means = _run_rounds(workflow, vectors, secure=True, repeat=repeat)
        errors = [float(np.max(np.abs(num_clients * m - plain_total))) for m in means]
        # The workflow returns the weighted mean; every weight is 1, so N * mean is the sum.
        if not max(errors) <= tolerance:
            raise RuntimeError(
                f"Flower SecAgg+ aggregate differs from the plain sum by {max(errors):.3g} "
                f"(allowed {tolerance:.3g})"
            )
        result: dict[str, Any] = {
            "round_s": statistics.median(times),
            "round_times_s": times,
            "transport_s": statistics.median(transport),
            "plain_s": plain_s,
            "flwr_version": str(flwr.__version__),
            "clients": num_clients,
            "params": params,
            "num_shares": shares,
            "threshold": threshold,
            "clipping_range": clipping_range,
            "quantization_range": quantization_range,
            "modulus_range": modulus_range,
            "max_abs_error": max(errors),
            "tolerance": tolerance,
        }
        if with_fedavg:
            fa_times, _, fa_means = _run_rounds(
                default_fit_workflow, vectors, secure=False, repeat=repeat
            )
            fa_err = max(float(np.max(np.abs(num_clients * m - plain_total))) for m in fa_means)
            if not fa_err <= 1e-4 * max(1.0, float(np.max(np.abs(plain_total)))):
                raise RuntimeError(f"Flower FedAvg mean differs from the plain sum by {fa_err:.3g}")
            result["fedavg_s"] = statistics.median(fa_times)
    return result
