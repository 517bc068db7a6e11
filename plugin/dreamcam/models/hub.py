"""Whether the Hugging Face hub answers, asked once per load with a short timeout; while it
does not, huggingface_hub is told to stay offline, so loads fail (or use the local cache) at
once instead of waiting on network timeouts."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0


class Hub:
    """Whether the Hugging Face hub answers, asked once per load; blocks all hub traffic when it does not."""

    def __init__(self, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._online: bool | None = None
        self._guarding = False

    def online(self) -> bool:
        if self._online is None:
            self._online = hub_reachable(self.timeout_s)
            if not self._online:
                log.info("the Hugging Face hub is not reachable: loading from local files and the cache only")
                if self._guarding:
                    from huggingface_hub import constants

                    constants.HF_HUB_OFFLINE = True
        return self._online

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """While offline, make huggingface_hub refuse every request at once instead of waiting on timeouts."""
        from huggingface_hub import constants

        saved = constants.HF_HUB_OFFLINE
        self._guarding = True
        if self._online is False:
            constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            self._guarding = False
            constants.HF_HUB_OFFLINE = saved


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S, endpoint: str | None = None) -> bool:
    """True when the hub endpoint gives any HTTP answer within timeout_s seconds (DNS included)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = endpoint or constants.ENDPOINT
    answered = threading.Event()

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
            answered.set()
        except urllib.error.HTTPError:
            answered.set()
        except Exception as e:  # noqa: BLE001 - any failure to get an answer means offline
            log.debug("hub probe %s failed: %s", url, e)

    # getaddrinfo has no timeout of its own, so the probe runs in a thread we stop waiting for.
    thread = threading.Thread(target=probe, name="dreamcam-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return answered.is_set()
