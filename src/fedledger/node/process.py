"""Run one node as an OS process: HTTP API, chain loop and role, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiohttp
from aiohttp import web

from fedledger.errors import ConfigError
from fedledger.logs import log_event
from fedledger.net.api import NodeAPI
from fedledger.net.p2p import PeerNetwork
from fedledger.node.chain_node import ChainNode
from fedledger.node.config import NodeConfig, load_genesis
from fedledger.node.roles.base import RoleContext
from fedledger.storage.blobs import BlobStore

log = logging.getLogger("fedledger.node")


def _role_class(role: str) -> type | None:
    if role == "validator":
        return None
    if role == "cloud":
        from fedledger.node.roles.cloud import CloudRole

        return CloudRole
    if role == "edge":
        from fedledger.node.roles.edge import EdgeRole

        return EdgeRole
    if role == "auditor":
        from fedledger.node.roles.auditor import AuditorRole

        return AuditorRole
    from fedledger.node.roles.devices import DevicePoolRole

    return DevicePoolRole


def _peer_network(cfg: NodeConfig, chain: ChainNode | None) -> PeerNetwork | None:
    """The consensus transport, for a replica of a multi-validator chain."""
    if chain is None or cfg.p2p_port is None:
        return None
    peers = {}
    for pk_hex, addr in cfg.chain_peers.items():
        host, _, port = addr.rpartition(":")
        peers[bytes.fromhex(pk_hex)] = (host, int(port))
    net = PeerNetwork(key=cfg.key, network_id=chain.chain_id, host=cfg.host, port=cfg.p2p_port, peers=peers,
                      on_message=chain.on_message)

    def send(peer: bytes | None, payload: bytes, kind: str) -> None:
        if peer is None:
            net.broadcast(payload, kind=kind)
        else:
            net.send(peer, payload, kind=kind)

    chain.send = send
    chain.transport_stats = lambda: net.stats
    return net


def run_node(cfg: NodeConfig) -> None:
    """Blocking entry point for ``fedledger node run``."""
    asyncio.run(_serve(cfg))


async def _serve(cfg: NodeConfig) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    blobs = BlobStore(cfg.data_dir / "blobs")
    chain = None
    if cfg.genesis is not None:
        chain = ChainNode(cfg.data_dir / "chain.db", load_genesis(cfg.genesis), cfg.key, cfg.block_interval_ms,
                          arbitrator=cfg.arbitrator)
    net = _peer_network(cfg, chain)
    api = NodeAPI(cfg.name, cfg.role, blobs, chain)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        ctx = RoleContext(cfg=cfg, api=api, blobs=blobs, session=session, chain=chain)
        role = _role_class(cfg.role)
        if role is not None:
            role(ctx)
        runner = web.AppRunner(api.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, cfg.host, cfg.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"{cfg.name}: cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
        if net is not None:
            try:
                await net.start()
            except OSError as exc:
                await runner.cleanup()
                raise ConfigError(f"{cfg.name}: cannot listen on {cfg.host}:{cfg.p2p_port}: {exc}") from None
        loop_task = asyncio.create_task(chain.run(cfg.tick_ms)) if chain else None
        log_event(log, logging.INFO, "node started", name=cfg.name, role=cfg.role, url=cfg.url,
                  height=chain.chain.height if chain else None)
        waiters = [asyncio.create_task(stop.wait())] + ([loop_task] if loop_task else [])
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in waiters:
            task.cancel()
        for background in ctx.tasks:
            background.cancel()
        for task in done:
            if task is loop_task and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]
        await runner.cleanup()
        if net is not None:
            await net.stop()
        if loop_task:
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        if chain:
            chain.close()
        log_event(log, logging.INFO, "node stopped", name=cfg.name)
