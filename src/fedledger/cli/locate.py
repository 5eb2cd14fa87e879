"""Find a deployment's chains and the auditor's reader key, for the commands that verify and audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from fedledger.audit.chainview import ChainView
from fedledger.audit.network import Network
from fedledger.crypto.keys import SigningKey
from fedledger.errors import ConfigError
from fedledger.ledger.genesis import Genesis
from fedledger.net.client import NodeClient
from fedledger.node.config import load_config, load_genesis


@dataclass
class Located:
    """One node URL (the chain's blob site where there is one) and the genesis document of every chain,
    and which chain is the main chain."""

    urls: dict[str, str] = field(default_factory=dict)
    geneses: dict[str, Genesis] = field(default_factory=dict)
    main_chain: str = ""

    def network(self, session: aiohttp.ClientSession, key: SigningKey | None = None) -> Network:
        views = {c: ChainView(NodeClient(self.urls[c], session), g) for c, g in self.geneses.items() if c in self.urls}
        if self.main_chain not in views:
            raise ConfigError(f"no node of the main chain {self.main_chain!r} was found")
        main = views.pop(self.main_chain)
        return Network(main, views, key)


def locate(workdir: Path) -> Located:
    """Read every node config in a deployment directory (as ``fedledger demo`` writes it)."""
    if not workdir.is_dir():
        raise ConfigError(f"no deployment directory {workdir}; pass --workdir")
    found = Located()
    for path in sorted(workdir.glob("*.json")):
        try:
            cfg = load_config(path)
        except ConfigError:
            continue
        if cfg.genesis is None:
            continue
        genesis = load_genesis(cfg.genesis)
        if cfg.role in ("cloud", "edge"):  # the node that also holds the chain's blobs
            found.urls[genesis.chain_id] = cfg.url
        else:
            found.urls.setdefault(genesis.chain_id, cfg.url)
        found.geneses[genesis.chain_id] = genesis
        if cfg.role == "cloud":
            found.main_chain = genesis.chain_id
    if not found.main_chain:
        raise ConfigError(f"{workdir} holds no cloud node config, so no main chain")
    return found


def reader_key(path: Path | None, workdir: Path) -> SigningKey | None:
    """The reader key that opens sealed artefacts: ``--key FILE``, else the deployment's ``auditor.key``."""
    if path is None:
        default = workdir / "auditor.key"
        if not default.exists():
            return None
        path = default
    try:
        return SigningKey.from_seed(bytes.fromhex(path.read_text().strip()))
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from None
    except ValueError:
        raise ConfigError(f"{path} must hold a 32-byte key seed in hex") from None
