"""JupyterHub configuration of hpchub: read by the Helm chart, the local stack and the demo.

Everything comes from HPCHUB_* environment variables (see hpchub_hub.config.VARIABLES and
docs/spawner.md). Site-specific additions go in a file named by HPCHUB_EXTRA_CONFIG.
"""

import os
from pathlib import Path

from hpchub_hub.config import configure

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by JupyterHub
configure(c, os.environ)

_extra = os.environ.get("HPCHUB_EXTRA_CONFIG")
if _extra:
    load_subconfig(str(Path(_extra)))  # type: ignore[name-defined]  # noqa: F821
