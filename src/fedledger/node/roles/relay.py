"""Relaying quorum-signed anchors between chains (seed 000 §III: Type-II and Type-III).

An edge node relays its sub-chain's anchors to the main chain
(``interlock.anchor_subchain``); the cloud node relays the main chain's anchors
to every sub-chain (``interlock.anchor_mainchain``). A relayer only carries
what a quorum of the sending chain's validators signed; the receiving chain
checks that quorum, so a relayer can delay an anchor but not forge one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fedledger.crypto.keys import SigningKey
from fedledger.errors import FedledgerError, NodeUnavailable
from fedledger.logs import log_event
from fedledger.node.chain_node import ChainNode
from fedledger.node.submit import RemoteChain

log = logging.getLogger("fedledger.relay")
POLL_S = 0.1


class AnchorRelay:
    def __init__(self, node: ChainNode, key: SigningKey, target: RemoteChain, method: str) -> None:
        self.node = node
        self.key = key
        self.target = target
        self.method = method
        self.relayed = 0  # highest anchored height relayed
        self.anchors: dict[int, bytes] = {}  # anchored height -> committed anchor transaction
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        while True:
            cert = self.node.interlock.latest()
            if cert is not None and cert[0].height > self.relayed:
                await self._relay(*cert)
            await asyncio.sleep(POLL_S)

    async def _relay(self, anchor: Any, signatures: list[list[bytes]]) -> None:
        args = {"anchor": anchor.to_obj(), "signatures": signatures}
        try:
            tx_hash = await self.target.call(self.key, "interlock", self.method, args)
        except FedledgerError as exc:
            log_event(log, logging.INFO, "anchor not relayed", chain=anchor.chain_id, height=anchor.height,
                      to=self.target.chain_id, reason=str(exc))
            self.relayed = anchor.height  # a later anchor supersedes it
            return
        self.relayed = anchor.height
        self.anchors[anchor.height] = tx_hash
        async with self._changed:
            self._changed.notify_all()

    async def covering(self, height: int, timeout_s: float) -> tuple[int, bytes]:
        """Wait until an anchor at or above ``height`` is committed on the target; (anchored height, tx)."""
        async def wait() -> tuple[int, bytes]:
            while True:
                done = [h for h in self.anchors if h >= height]
                if done:
                    return min(done), self.anchors[min(done)]
                async with self._changed:
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout_s)
        except TimeoutError:
            raise NodeUnavailable(f"no anchor of {self.node.chain_id} at or above {height} reached "
                                  f"{self.target.chain_id} within {timeout_s}s") from None
