"""Node configuration files (JSON).

Example (an edge node)::

    {"role": "edge", "name": "edge-1", "host": "127.0.0.1", "port": 7101,
     "data_dir": "run/edge-1", "key_seed": "<64 hex>",
     "genesis": "run/sub-1.genesis", "main_genesis": "run/main.genesis",
     "peers": {"cloud": "http://127.0.0.1:7100", "devices": ["http://127.0.0.1:7201"]},
     "fl": {...}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedledger.crypto.keys import SigningKey
from fedledger.errors import ConfigError, DecodeError
from fedledger.ledger.genesis import Genesis

ROLES = ("cloud", "edge", "devices", "validator", "auditor")


@dataclass
class NodeConfig:
    role: str
    name: str
    port: int
    data_dir: Path
    key_seed: bytes
    host: str = "127.0.0.1"
    genesis: Path | None = None
    main_genesis: Path | None = None
    peers: dict[str, Any] = field(default_factory=dict)
    fl: dict[str, Any] = field(default_factory=dict)
    block_interval_ms: int = 50
    tick_ms: int = 10
    p2p_port: int | None = None  # consensus transport (TCP) for multi-validator chains
    chain_peers: dict[str, str] = field(default_factory=dict)  # validator public key hex -> "host:port"
    arbitrator_seed: bytes | None = None  # Rule 3 arbitrator key, on the node that holds it

    @property
    def arbitrator(self) -> SigningKey | None:
        return None if self.arbitrator_seed is None else SigningKey.from_seed(self.arbitrator_seed)

    @property
    def key(self) -> SigningKey:
        return SigningKey.from_seed(self.key_seed)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["key_seed"] = self.key_seed.hex()
        out["arbitrator_seed"] = None if self.arbitrator_seed is None else self.arbitrator_seed.hex()
        for k in ("data_dir", "genesis", "main_genesis"):
            out[k] = None if out[k] is None else str(out[k])
        return out


def load_config(path: Path | str) -> NodeConfig:
    """Read and check a node config; every problem is a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    known = set(NodeConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    try:
        cfg = NodeConfig(
            role=str(raw["role"]),
            name=str(raw["name"]),
            port=int(raw["port"]),
            data_dir=Path(raw["data_dir"]),
            key_seed=bytes.fromhex(raw["key_seed"]),
            host=str(raw.get("host", "127.0.0.1")),
            genesis=Path(raw["genesis"]) if raw.get("genesis") else None,
            main_genesis=Path(raw["main_genesis"]) if raw.get("main_genesis") else None,
            peers=dict(raw.get("peers", {})),
            fl=dict(raw.get("fl", {})),
            block_interval_ms=int(raw.get("block_interval_ms", 50)),
            tick_ms=int(raw.get("tick_ms", 10)),
            p2p_port=int(raw["p2p_port"]) if raw.get("p2p_port") else None,
            chain_peers={str(k): str(v) for k, v in dict(raw.get("chain_peers", {})).items()},
            arbitrator_seed=bytes.fromhex(raw["arbitrator_seed"]) if raw.get("arbitrator_seed") else None,
        )
    except KeyError as exc:
        raise ConfigError(f"{path}: missing setting {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: bad value: {exc}") from None
    if cfg.role not in ROLES:
        raise ConfigError(f"{path}: role must be one of {', '.join(ROLES)}, not {cfg.role!r}")
    if len(cfg.key_seed) != 32:
        raise ConfigError(f"{path}: key_seed must be 32 bytes of hex")
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"{path}: port must be 1-65535")
    if cfg.arbitrator_seed is not None and len(cfg.arbitrator_seed) != 32:
        raise ConfigError(f"{path}: arbitrator_seed must be 32 bytes of hex")
    for pk, addr in cfg.chain_peers.items():
        host, _, port = addr.rpartition(":")
        if len(pk) != 64 or not host or not port.isdigit():
            raise ConfigError(f"{path}: chain_peers maps a 64-hex-digit key to host:port, not {pk!r}: {addr!r}")
    if cfg.role in ("cloud", "edge", "validator") and cfg.genesis is None:
        raise ConfigError(f"{path}: a {cfg.role} node needs a genesis file")
    return cfg


def load_genesis(path: Path) -> Genesis:
    try:
        return Genesis.decode(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"genesis file {path} does not exist") from None
    except DecodeError as exc:
        raise ConfigError(f"genesis file {path} is malformed: {exc}") from None
