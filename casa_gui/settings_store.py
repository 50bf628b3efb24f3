"""The app's remembered settings: a typed dataclass saved as JSON under the user config dir.

``CASA_CONFIG_DIR`` (and ``CASA_LOG_DIR``) redirect everything, so tests never touch
the real user configuration. Window layout lives beside it in an INI QSettings file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

APP = "casa-studio"
ROLES = ("base", "target", "lora")
MAX_RECENT = 10

log = logging.getLogger("casa_gui")


def config_dir() -> Path:
    env = os.environ.get("CASA_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def log_dir() -> Path:
    env = os.environ.get("CASA_LOG_DIR")
    if env:
        return Path(env)
    if os.environ.get("CASA_CONFIG_DIR"):
        return Path(os.environ["CASA_CONFIG_DIR"]) / "logs"
    import platformdirs

    return Path(platformdirs.user_log_dir(APP, appauthor=False))


@dataclass
class GuiSettings:
    """Everything the window remembers between sessions (not the layout)."""
    base: str = ""
    target: str = ""
    lora: str = ""
    target_loras: list[str] = field(default_factory=list)   # distillation LoRAs, PATH[:STRENGTH] each
    expert: str = ""                                         # of a two-expert model; "" for one transformer
    recent: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in ROLES})
    method: str = "casa"
    params: dict[str, dict[str, float]] = field(default_factory=dict)   # method -> its parameters' values
    rank: str = "same"
    device: str = "auto"
    precision: str = "auto"
    out_format: str = "same"
    out_dtype: str = "same"
    export_dir: str = ""
    theme: str = "system"            # system | light | dark

    def transfer_settings(self):
        """The remembered method and its parameters (defaults where a value is missing or out of range)."""
        from casa_core.api import CasaError, TransferSettings, methods

        try:
            method = methods.get(self.method).name
        except CasaError:
            method = methods.names()[0]
        own = {p.name for p in methods.get(method).Params.describe()}
        values = {k: v for k, v in self.params.get(method, {}).items() if k in own}
        try:
            return TransferSettings.of(method, **values)
        except CasaError:
            return TransferSettings.of(method)

    def keep_settings(self, s) -> None:
        """Remember ``s`` (the other methods' values stay as they were)."""
        self.method = s.method
        self.params = {**self.params, s.method: s.params.to_dict()}

    def remember(self, role: str, path: str) -> None:
        """Make ``path`` the last and most recent source for ``role``."""
        if not path:
            return
        setattr(self, role, path)
        items = [p for p in self.recent.get(role, []) if p != path]
        self.recent[role] = [path, *items][:MAX_RECENT]

    @classmethod
    def load(cls, path: Path | None = None) -> GuiSettings:
        path = path or settings_path()
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable settings %s: %s", path, exc)
            return cls()
        out = cls()
        known = {f.name: f for f in fields(cls)}
        if isinstance(raw, dict):   # settings of 0.1.0 kept CASA's thresholds at the top level
            old = {k: raw.pop(k) for k in ("tau", "q_dom", "q_act") if isinstance(raw.get(k), (int, float))}
            if old and "params" not in raw:
                raw["params"] = {"casa": old}
        for k, v in raw.items() if isinstance(raw, dict) else ():
            if k not in known:
                continue
            default = getattr(out, k)
            if k == "recent":
                if isinstance(v, dict):
                    out.recent = {r: [str(p) for p in v.get(r, []) if isinstance(p, str)][:MAX_RECENT]
                                  for r in ROLES}
            elif k == "params":
                if isinstance(v, dict):
                    out.params = {str(m): {str(n): float(x) for n, x in vals.items()
                                           if isinstance(x, (int, float)) and not isinstance(x, bool)}
                                  for m, vals in v.items() if isinstance(vals, dict)}
            elif k == "target_loras":
                if isinstance(v, list):
                    out.target_loras = [p for p in v if isinstance(p, str)]
            elif isinstance(default, float) and isinstance(v, (int, float)):
                setattr(out, k, float(v))
            elif isinstance(default, str) and isinstance(v, str):
                setattr(out, k, v)
        return out

    def save(self, path: Path | None = None) -> None:
        path = path or settings_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.part")
            tmp.write_text(json.dumps(asdict(self), indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot save settings to %s: %s", path, exc)


def settings_path() -> Path:
    return config_dir() / "settings.json"


def layout_settings():
    """QSettings for window geometry and dock/splitter state (INI file beside settings.json)."""
    from PySide6.QtCore import QSettings

    config_dir().mkdir(parents=True, exist_ok=True)
    return QSettings(str(config_dir() / "layout.ini"), QSettings.Format.IniFormat)
