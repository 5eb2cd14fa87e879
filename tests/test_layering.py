"""Import lint: heavy and outer layers stay out of the ledger side (STYLE.md principles 5 and 6)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "fedledger"
LEDGER_SIDE = ("crypto", "codec", "ledger", "contracts", "consensus", "storage")
FORBIDDEN = ("torch", "fedledger.node", "fedledger.cli", "fedledger.net", "fedledger.fl", "fedledger.audit",
             "aiohttp", "sklearn")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", LEDGER_SIDE)
def test_ledger_side_layers_import_no_runtime_cli_or_torch(layer: str) -> None:
    bad = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert not bad, "\n".join(bad)


def test_validator_processes_never_load_torch() -> None:
    """An edge validator (ledger, storage, node runtime, edge role) must run without torch."""
    code = (
        "import sys\n"
        "import fedledger.ledger, fedledger.storage.chainstore, fedledger.storage.verify\n"
        "import fedledger.node.process, fedledger.node.roles.edge, fedledger.audit.lineage\n"
        "bad = [m for m in ('torch', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)})
