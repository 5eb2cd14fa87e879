"""Shared wiring handed to every role, and the FL job settings (hierarchical or decentralised)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from fedledger.audit.chainview import ChainView
from fedledger.errors import ConfigError, FedledgerError, VerificationFailed
from fedledger.fl.program import program_hash, training_program
from fedledger.net.api import NodeAPI
from fedledger.net.client import NodeClient
from fedledger.node.chain_node import ChainNode
from fedledger.node.config import NodeConfig, load_genesis
from fedledger.storage.blobs import BlobStore


@dataclass
class RoleContext:
    cfg: NodeConfig
    api: NodeAPI
    blobs: BlobStore
    session: aiohttp.ClientSession
    chain: ChainNode | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def client(self, url: str, timeout_s: float = 120.0) -> NodeClient:
        return NodeClient(url, self.session, timeout_s)

    def peer(self, name: str) -> str:
        url = self.cfg.peers.get(name)
        if not isinstance(url, str):
            raise ConfigError(f"{self.cfg.name}: peers.{name} must be a URL")
        return url

    def peer_list(self, name: str) -> list[str]:
        urls = self.cfg.peers.get(name, [])
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ConfigError(f"{self.cfg.name}: peers.{name} must be a list of URLs")
        return urls

    def main_view(self) -> ChainView:
        """Light-client view of the main chain, trusting only its genesis file."""
        if self.cfg.main_genesis is None:
            raise ConfigError(f"{self.cfg.name}: main_genesis is required for this role")
        return ChainView(self.client(self.peer("cloud")), load_genesis(self.cfg.main_genesis))


MODES = ("hierarchical", "decentralised")
AGGREGATIONS = ("fedavg", "secagg")


@dataclass(frozen=True)
class FLSettings:
    """The job every party agrees on: the training program (hashed into the authenticator) and how data flows.

    ``readings`` is the size of one signed data batch (one training step per batch and epoch);
    ``seal`` encrypts every artefact at rest for its readers; ``verify_steps`` is how many
    recorded training steps of each update the edge re-runs before accepting it;
    ``delegate_signing`` lets the edge sign data batches for its (weak) devices; ``min_results`` is
    how many results an aggregator needs (fewer fail the round; dropouts are reported, not waited for);
    ``mode`` is ``"hierarchical"`` (edges aggregate their devices, the cloud the edges) or
    ``"decentralised"`` (seed 002 §5.2.2: no aggregator, every device averages its peers' updates).
    ``aggregation`` is ``"fedavg"`` (the edge sees every update) or ``"secagg"`` (seed 001: devices
    mask, commit and secret-share their updates; the edge reconstructs only the weighted sum, with
    ``secagg_threshold`` (a fraction of the edge's devices, rounded up) share sums needed,
    ``secagg_noise_sigma`` DP noise per coordinate and ``secagg_keep`` the top-n filter).
    Secure aggregation hides updates, steps and data from the edge, so it cannot re-run training steps
    (``verify_steps = 0``; the task's readers still can); it runs one device round per cloud round.
    """

    model: str = "digits-mlp"
    epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    dataset: str = "digits"
    data_dir: str | None = None
    partition: str = "iid"
    alpha: float = 0.5
    readings: int = 32
    device_rounds: int = 1
    seal: bool = True
    verify_steps: int = 1
    delegate_signing: bool = False
    min_results: int = 1
    mode: str = "hierarchical"
    aggregation: str = "fedavg"
    secagg_threshold: float = 0.6
    secagg_noise_sigma: float = 0.0
    secagg_keep: int | None = None
    secagg_frac_bits: int = 16

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"fl mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"fl aggregation must be one of {', '.join(AGGREGATIONS)}, not {self.aggregation!r}")
        if self.secure:
            if self.mode != "hierarchical":
                raise ConfigError("secure aggregation needs the hierarchical mode (an edge reconstructs the sum)")
            if self.verify_steps:
                raise ConfigError("secure aggregation hides updates from the edge, so it cannot re-run their "
                                  "training steps: set verify_steps = 0 (the task's readers still can)")
            if self.device_rounds != 1:
                raise ConfigError("secure aggregation runs one device round per cloud round (device_rounds = 1)")
            if not 0 < self.secagg_threshold <= 1:
                raise ConfigError(f"secagg_threshold is a fraction in (0, 1], not {self.secagg_threshold!r}")
            self.secagg_params(1)  # the other secagg_* settings must make valid parameters

    @property
    def secure(self) -> bool:
        return self.aggregation == "secagg"

    def secagg_params(self, participants: int) -> Any:
        """Seed 001's public parameters for a round with ``participants`` devices (``protocol.Params``)."""
        from fedledger.fl.secagg.protocol import Params, threshold_of

        try:
            return Params(threshold=threshold_of(self.secagg_threshold, participants),
                          frac_bits=int(self.secagg_frac_bits), noise_sigma=float(self.secagg_noise_sigma),
                          keep=self.secagg_keep)
        except FedledgerError as exc:
            raise ConfigError(f"bad secagg settings: {exc}") from None

    @classmethod
    def from_config(cls, fl: dict[str, Any]) -> FLSettings:
        known = {k: fl[k] for k in cls.__dataclass_fields__ if k in fl}
        try:
            return cls(**known)
        except TypeError as exc:
            raise ConfigError(f"bad fl settings: {exc}") from None

    @property
    def data_path(self) -> Path | None:
        """Where local dataset files live (``mnist``); not the node's own data directory."""
        return Path(self.data_dir) if self.data_dir else None

    def sealed_for(self, *parties: bytes, readers: Iterable[bytes] = ()) -> list[bytes] | None:
        """Recipients of an artefact: ``parties`` and the task's ``readers``; ``None`` when stored plain."""
        return [*parties, *readers] if self.seal else None

    def program(self) -> dict[str, Any]:
        return training_program(self.model, self.epochs, self.batch_size, self.lr, self.momentum)

    def program_hash(self) -> bytes:
        return program_hash(self.program())


async def fetch_task(client: NodeClient, settings: FLSettings) -> dict[str, Any]:
    """The task open on the main chain (served by ``client``), which must run ``settings``' program."""
    task = await client.state("fl", "task")
    if task is None:
        raise VerificationFailed("no FL task is open on the main chain")
    if task["program"] != settings.program_hash().hex():
        raise VerificationFailed("the main chain's task runs another training program than this node")
    return dict(task)


def task_readers(task: dict[str, Any]) -> list[bytes]:
    """The task's extra readers of sealed artefacts (auditors)."""
    return [bytes.fromhex(r) for r in task["readers"]]
