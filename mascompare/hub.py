"""Whether the Hugging Face Hub answers, asked quickly.

Offline, `datasets` and `from_pretrained` retry for ~24 s before failing; this probe lets them
fail at once with one clear sentence instead.
"""

from __future__ import annotations

import urllib.error
import urllib.request

PROBE_TIMEOUT_S = 5.0


def reachable(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_TIMEOUT_S)
    except urllib.error.HTTPError:
        return True  # the server answered, even if not with 200
    except (OSError, ValueError):  # URLError, timeouts, refused connections, a malformed endpoint
        return False
    return True
