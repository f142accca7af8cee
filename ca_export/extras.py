"""Optional runtimes installed as package extras: whether each imports, and the one error
a command gives when it does not."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ca_export.errors import BadInputError
from ca_export.silence import silenced


@dataclass(frozen=True)
class Extra:
    """An extra of ``pyproject.toml``: its ``name``, the runtime it brings (``what``, as the
    error names it), and the ``modules`` that must import."""

    name: str
    what: str
    modules: tuple[str, ...]

    @property
    def hint(self) -> str:
        """The error line: what is missing and the install command."""
        return f'{self.what} not installed; install the extra: pip install -e ".[{self.name}]"'

    def available(self) -> bool:
        """Whether every module of the extra imports (what they print on import is
        dropped)."""
        try:
            with silenced():
                for module in self.modules:
                    importlib.import_module(module)
        except ImportError:
            return False
        return True

    def require(self) -> None:
        """Raise one clear error (exit 2) when the extra is missing."""
        if not self.available():
            raise BadInputError(self.hint)
