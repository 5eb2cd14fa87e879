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
from fedledger.node.chain_node import ChainNode
from fedledger.node.config import NodeConfig, load_genesis
from fedledger.node.roles.base import RoleContext
from fedledger.storage.blobs import BlobStore

log = logging.getLogger("fedledger.node")


def _role_class(role: str) -> type:
    if role == "cloud":
        from fedledger.node.roles.cloud import CloudRole

        return CloudRole
    if role == "edge":
        from fedledger.node.roles.edge import EdgeRole

        return EdgeRole
    from fedledger.node.roles.devices import DevicePoolRole

    return DevicePoolRole


def run_node(cfg: NodeConfig) -> None:
    """Blocking entry point for ``fedledger node run``."""
    asyncio.run(_serve(cfg))


async def _serve(cfg: NodeConfig) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    blobs = BlobStore(cfg.data_dir / "blobs")
    chain = None
    if cfg.genesis is not None:
        chain = ChainNode(cfg.data_dir / "chain.db", load_genesis(cfg.genesis), cfg.key, cfg.block_interval_ms)
    api = NodeAPI(cfg.name, cfg.role, blobs, chain)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        ctx = RoleContext(cfg=cfg, api=api, blobs=blobs, session=session, chain=chain)
        _role_class(cfg.role)(ctx)
        runner = web.AppRunner(api.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, cfg.host, cfg.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"{cfg.name}: cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
        loop_task = asyncio.create_task(chain.run(cfg.tick_ms)) if chain else None
        log_event(log, logging.INFO, "node started", name=cfg.name, role=cfg.role, url=cfg.url,
                  height=chain.chain.height if chain else None)
        waiters = [asyncio.create_task(stop.wait())] + ([loop_task] if loop_task else [])
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in waiters:
            task.cancel()
        for task in done:
            if task is loop_task and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]
        await runner.cleanup()
        if loop_task:
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        if chain:
            chain.close()
        log_event(log, logging.INFO, "node stopped", name=cfg.name)
