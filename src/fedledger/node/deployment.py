"""Lay out a local deployment: keys, genesis documents and one config per node.

Used by ``fedledger demo`` and the multi-process tests. Every node gets a fresh
random Ed25519 key; the main chain admits the cloud and the edges, each
sub-chain admits its edge, its devices and the cloud. The main chain is a BFT
chain run by ``main_validators`` processes: the cloud node itself (which also
runs the FL job) and validator-only nodes ``cloud-vK``. Each edge sub-chain is
a microchain run by ``validators_per_edge`` validator processes: the edge node
itself (which also aggregates) and validator-only nodes ``edge-N-vK``. The
validators of each chain are joined by a full mesh of signed TCP links. The
edge operator's node holds the Rule 3 arbitrator key of its sub-chain. An
``auditor`` node holds the auditor's reader key (``auditor.key``, a reader of
every sealed artefact) and serves model verification and training audits.
The cloud also knows the device pools, which it drives directly in
decentralised jobs (no edge aggregator).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedledger.crypto.keys import SigningKey
from fedledger.ledger.genesis import Genesis, Identity
from fedledger.node.config import NodeConfig

MAIN_CHAIN = "main"
# An idle main chain still decides a block a second, so its anchors reach the sub-chains promptly.
DEMO_BFT: dict[str, Any] = {"empty_block_ms": 1000}


def free_ports(n: int) -> list[int]:
    """Ask the kernel for ``n`` distinct free loopback ports."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Deployment:
    workdir: Path
    configs: dict[str, NodeConfig] = field(default_factory=dict)
    config_paths: dict[str, Path] = field(default_factory=dict)
    geneses: dict[str, Path] = field(default_factory=dict)
    auditor_key: Path | None = None  # a reader of every sealed artefact (``audit`` and ``verify`` commands)

    def url(self, name: str) -> str:
        return self.configs[name].url

    @property
    def cloud(self) -> str:
        return "cloud"

    @property
    def edges(self) -> list[str]:
        return [n for n, c in self.configs.items() if c.role == "edge"]

    def chain_of(self, edge: str) -> str:
        return str(self.configs[edge].fl["chain_id"])

    def auditor(self) -> SigningKey | None:
        """The deployment's auditor key: a reader of every sealed artefact."""
        if self.auditor_key is None:
            return None
        return SigningKey.from_seed(bytes.fromhex(self.auditor_key.read_text().strip()))


def make_deployment(
    workdir: Path,
    edges: int = 2,
    devices_per_edge: int = 10,
    fl: dict[str, Any] | None = None,
    block_interval_ms: int = 50,
    validators_per_edge: int = 4,
    microchain: dict[str, Any] | None = None,
    interlock_period: int = 4,
    accumulator: dict[str, Any] | None = None,
    main_validators: int = 4,
    bft: dict[str, Any] | None = None,
) -> Deployment:
    """Keys, genesis documents and configs for a cloud, ``edges`` edges and their device pools.

    ``bft`` overrides the main chain's BFT parameters (default ``DEMO_BFT``). Every chain attests an anchor every ``interlock_period`` finalized blocks;
    ``accumulator`` (``{"modulus": bytes}``, e.g. a ceremony's output) is the
    accumulator modulus all chains share (default: RSA-2048).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    fl = dict(fl or {})
    extra = validators_per_edge - 1
    main_extra = main_validators - 1
    ports = free_ports(2 + 2 * edges + edges * extra + main_extra + edges * validators_per_edge + main_validators)
    auditor_port = ports.pop()
    api_ports = iter(ports[1 + 2 * edges : 1 + 2 * edges + edges * extra + main_extra])
    p2p_ports = iter(ports[1 + 2 * edges + edges * extra + main_extra :])
    cloud_key = SigningKey.generate()
    main_keys = [cloud_key] + [SigningKey.generate() for _ in range(main_extra)]
    edge_keys = [SigningKey.generate() for _ in range(edges)]
    validator_keys = [[edge_keys[i]] + [SigningKey.generate() for _ in range(extra)] for i in range(edges)]
    arbitrators = [SigningKey.generate() for _ in range(edges)]
    device_keys = [[SigningKey.generate() for _ in range(devices_per_edge)] for _ in range(edges)]
    chains = [f"sub-{i + 1}" for i in range(edges)]
    now = int(time.time() * 1000)
    cloud_id = Identity(cloud_key.public_key, "cloud", "cloud", MAIN_CHAIN)
    edge_ids = [Identity(k.public_key, "edge", f"edge-{i + 1}", chains[i]) for i, k in enumerate(edge_keys)]

    dep = Deployment(workdir)
    acc = {"accumulator": accumulator} if accumulator else {}
    main_pks = tuple(k.public_key for k in main_keys)
    main_val_ids = tuple(Identity(k.public_key, "auditor", f"cloud-v{j + 1}", MAIN_CHAIN)
                         for j, k in enumerate(main_keys) if j > 0)
    sub_peers = {chain: [k.public_key for k in validator_keys[i]] for i, chain in enumerate(chains)}
    main = Genesis(MAIN_CHAIN, now, main_pks, (cloud_id, *main_val_ids, *edge_ids),
                   {"engine": "bft", "bft": dict(DEMO_BFT if bft is None else bft), **acc,
                    "interlock": {"role": "main", "period": interlock_period, "peers": sub_peers}})
    dep.geneses[MAIN_CHAIN] = _write(workdir / "main.genesis", main.encode())
    for i, chain in enumerate(chains):
        devs = tuple(Identity(k.public_key, "device", f"device-{i + 1}-{j + 1}", chain)
                     for j, k in enumerate(device_keys[i]))
        vals = tuple(k.public_key for k in validator_keys[i])
        val_ids = tuple(Identity(k.public_key, "edge", f"edge-{i + 1}-v{j + 1}", chain)
                        for j, k in enumerate(validator_keys[i]) if j > 0)
        params = {"committee_size": validators_per_edge, "arbitrator": arbitrators[i].public_key,
                  **(microchain or {})}
        interlock = {"role": "sub", "period": interlock_period, "peers": {MAIN_CHAIN: list(main_pks)}}
        sub = Genesis(chain, now, vals, (edge_ids[i], *val_ids, *devs, cloud_id),
                      {"engine": "microchain", "microchain": params, "interlock": interlock, **acc})
        dep.geneses[chain] = _write(workdir / f"{chain}.genesis", sub.encode())

    cloud_url = f"http://127.0.0.1:{ports[0]}"
    edge_urls = [f"http://127.0.0.1:{ports[1 + i]}" for i in range(edges)]
    pool_urls = [f"http://127.0.0.1:{ports[1 + edges + i]}" for i in range(edges)]
    auditor = SigningKey.generate()
    dep.auditor_key = _write(workdir / "auditor.key", auditor.seed().hex().encode())
    common = {"main_chain_id": MAIN_CHAIN, **fl}
    main_ports = [next(p2p_ports) for _ in main_keys]
    main_mesh = {k.public_key.hex(): f"127.0.0.1:{p}" for k, p in zip(main_keys, main_ports, strict=True)}
    dep.configs["cloud"] = NodeConfig(
        role="cloud", name="cloud", port=ports[0], data_dir=workdir / "cloud", key_seed=cloud_key.seed(),
        genesis=dep.geneses[MAIN_CHAIN], peers={"edges": edge_urls, "pools": pool_urls},
        fl={**common, "readers": [auditor.public_key.hex()]},
        block_interval_ms=block_interval_ms, p2p_port=main_ports[0], chain_peers=main_mesh,
    )
    for j in range(1, main_validators):
        vname = f"cloud-v{j + 1}"
        dep.configs[vname] = NodeConfig(
            role="validator", name=vname, port=next(api_ports), data_dir=workdir / vname,
            key_seed=main_keys[j].seed(), genesis=dep.geneses[MAIN_CHAIN], p2p_port=main_ports[j],
            chain_peers=main_mesh,
        )
    for i, chain in enumerate(chains):
        name = f"edge-{i + 1}"
        mesh_ports = [next(p2p_ports) for _ in validator_keys[i]]
        mesh = {k.public_key.hex(): f"127.0.0.1:{p}" for k, p in zip(validator_keys[i], mesh_ports, strict=True)}
        dep.configs[name] = NodeConfig(
            role="edge", name=name, port=ports[1 + i], data_dir=workdir / name, key_seed=edge_keys[i].seed(),
            genesis=dep.geneses[chain], main_genesis=dep.geneses[MAIN_CHAIN],
            peers={"cloud": cloud_url, "devices": [pool_urls[i]]}, fl={**common, "chain_id": chain},
            block_interval_ms=block_interval_ms, p2p_port=mesh_ports[0], chain_peers=mesh,
            arbitrator_seed=arbitrators[i].seed(),
        )
        for j in range(1, validators_per_edge):
            vname = f"{name}-v{j + 1}"
            dep.configs[vname] = NodeConfig(
                role="validator", name=vname, port=next(api_ports), data_dir=workdir / vname,
                key_seed=validator_keys[i][j].seed(), genesis=dep.geneses[chain], p2p_port=mesh_ports[j],
                chain_peers=mesh,
            )
        devices = [{"name": f"device-{i + 1}-{j + 1}", "key_seed": k.seed().hex(), "partition": i * devices_per_edge + j}
                   for j, k in enumerate(device_keys[i])]
        pool = f"devices-{i + 1}"
        dep.configs[pool] = NodeConfig(
            role="devices", name=pool, port=ports[1 + edges + i], data_dir=workdir / pool,
            key_seed=SigningKey.generate().seed(), main_genesis=dep.geneses[MAIN_CHAIN],
            peers={"cloud": cloud_url, "edge": edge_urls[i]},
            fl={**common, "chain_id": chain, "devices": devices, "partitions": edges * devices_per_edge,
                "edge_key": edge_keys[i].public_key.hex()},
        )
    dep.configs["auditor"] = NodeConfig(
        role="auditor", name="auditor", port=auditor_port, data_dir=workdir / "auditor", key_seed=auditor.seed(),
        main_genesis=dep.geneses[MAIN_CHAIN],
        peers={"chains": {MAIN_CHAIN: cloud_url, **{c: edge_urls[i] for i, c in enumerate(chains)}}},
        fl={"geneses": {c: str(dep.geneses[c]) for c in chains}},
    )
    for name, cfg in dep.configs.items():
        path = workdir / f"{name}.json"
        _write(path, json.dumps(cfg.to_json(), indent=2).encode())
        dep.config_paths[name] = path
    return dep


def _write(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def make_validator_cluster(
    workdir: Path,
    validators: int = 4,
    microchain: dict[str, Any] | None = None,
    clients: list[SigningKey] | None = None,
    chain_id: str = "sub-1",
    engine: str = "microchain",
    bft: dict[str, Any] | None = None,
) -> Deployment:
    """A lone chain: ``validators`` validator-only nodes in a full TCP mesh.

    ``engine`` is ``"microchain"`` (parameters from ``microchain``) or
    ``"bft"`` (the main chain's engine, parameters from ``bft``).
    ``clients`` are admitted as edge-role identities, so they may make
    successful identity calls (used by tests and benchmarks to generate load).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * validators)
    keys = [SigningKey.generate() for _ in range(validators)]
    ids = tuple(Identity(k.public_key, "edge", f"v{i + 1}", chain_id) for i, k in enumerate(keys))
    ids += tuple(Identity(k.public_key, "edge", f"client-{i + 1}", chain_id) for i, k in enumerate(clients or []))
    params = {"committee_size": validators, **(microchain or {})}
    chain_params = {"engine": "bft", "bft": dict(bft or {})} if engine == "bft" else \
        {"engine": "microchain", "microchain": params}
    genesis = Genesis(chain_id, int(time.time() * 1000), tuple(k.public_key for k in keys), ids, chain_params)
    dep = Deployment(workdir)
    dep.geneses[chain_id] = _write(workdir / f"{chain_id}.genesis", genesis.encode())
    mesh = {k.public_key.hex(): f"127.0.0.1:{ports[validators + i]}" for i, k in enumerate(keys)}
    for i, key in enumerate(keys):
        name = f"v{i + 1}"
        cfg = NodeConfig(role="validator", name=name, port=ports[i], data_dir=workdir / name, key_seed=key.seed(),
                         genesis=dep.geneses[chain_id], p2p_port=ports[validators + i], chain_peers=mesh)
        dep.configs[name] = cfg
        dep.config_paths[name] = _write(workdir / f"{name}.json", json.dumps(cfg.to_json(), indent=2).encode())
    return dep
