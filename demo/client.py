"""The demo talks to its stack only through the public HTTP API, like any client would."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from shared.vocabulary import FINISHED_JOB_STATUSES as FINISHED


class ApiClient:
    def __init__(self, base_url: str, api_key: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def _json(self, response: requests.Response) -> Any:
        if response.status_code >= 400:
            raise ApiCallError(response)
        return response.json()

    def submit_job(self, images: Sequence[Path]) -> dict[str, Any]:
        """POST every photo as a repeatable ``images`` field; the SKU is the file's stem."""
        with contextlib.ExitStack() as stack:
            files = [
                ("images", (path.name, stack.enter_context(path.open("rb")), "image/jpeg"))
                for path in images
            ]
            response = self.session.post(
                self._url("/api/v1/jobs"), files=files, timeout=self.timeout_s * 4
            )
        return self._json(response)

    def job(self, url: str) -> dict[str, Any]:
        return self._json(self.session.get(self._url(url), timeout=self.timeout_s))

    def wait_for_job(self, url: str, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll the job until it finishes, drawing its progress as a tqdm bar."""
        deadline = time.monotonic() + timeout_s
        doc = self.job(url)
        with tqdm(
            total=doc.get("total") or 0, unit="img", desc="   ingesting", mininterval=1.0
        ) as bar:
            while True:
                bar.total = doc.get("total") or bar.total
                finished = (doc.get("done") or 0) + (doc.get("failed") or 0)
                bar.update(max(0, finished - bar.n))
                bar.set_postfix(status=doc.get("status"), failed=doc.get("failed") or 0)
                if doc.get("status") in FINISHED:
                    return doc
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"job still {doc.get('status')} after {timeout_s:.0f} s "
                        f"({finished}/{bar.total} done)"
                    )
                time.sleep(poll_s)
                doc = self.job(url)

    def recommendations(self, sku: str, k: int, kinds: Sequence[str]) -> dict[str, Any]:
        response = self.session.get(
            self._url(f"/api/v1/items/{sku}/recommendations"),
            params={"k": k, "kinds": ",".join(kinds)},
            timeout=self.timeout_s,
        )
        return self._json(response)

    def item(self, sku: str) -> dict[str, Any]:
        response = self.session.get(self._url(f"/api/v1/items/{sku}"), timeout=self.timeout_s)
        return self._json(response)

    def ready(self) -> tuple[bool, Any]:
        try:
            response = self.session.get(self._url("/readyz"), timeout=5)
        except requests.RequestException as exc:
            return False, str(exc)
        try:
            body = response.json()
        except ValueError:
            body = response.text[:200]
        return response.status_code == 200, body


class ApiCallError(Exception):
    def __init__(self, response: requests.Response) -> None:
        try:
            body = response.json()
            detail = f"{body.get('code')}: {body.get('message')}"
        except ValueError:
            detail = response.text[:200]
        super().__init__(
            f"{response.request.method} {response.url} -> {response.status_code} {detail}"
        )
        self.status = response.status_code
