"""Shared wiring handed to every role."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from fedledger.audit.chainview import ChainView
from fedledger.errors import ConfigError
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


@dataclass(frozen=True)
class FLSettings:
    """The training program every party of a job agrees on (hashed into the authenticator)."""

    model: str = "digits-mlp"
    epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0

    @classmethod
    def from_config(cls, fl: dict[str, Any]) -> FLSettings:
        known = {k: fl[k] for k in cls.__dataclass_fields__ if k in fl}
        try:
            return cls(**known)
        except TypeError as exc:
            raise ConfigError(f"bad fl settings: {exc}") from None

    def program(self) -> dict[str, Any]:
        return training_program(self.model, self.epochs, self.batch_size, self.lr, self.momentum)

    def program_hash(self) -> bytes:
        return program_hash(self.program())
