"""``ApiClient``: calls to the visrec HTTP API, each returning the JSON document it answers.

Every error the API sends is ``{"code", "message", "details"}``; a call that gets one raises
:class:`ApiCallError` carrying those three fields, so a caller can branch on the stable ``code``.
Network failures stay ``requests.RequestException``: nothing was answered, so there is no code.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

JsonDoc = dict[str, Any]

# The job statuses after which a job never changes, as the API documents them (README "The
# API", the OpenAPI JobSchema). Written here rather than imported from the server's vocabulary
# module: this package is installed on its own by shop engineers, without the server's code, and
# the documented words are a contract the API keeps for clients already out there anyway.
FINISHED_JOB_STATUSES = frozenset({"succeeded", "partial", "failed"})

JOBS_PATH = "/api/v1/jobs"
MODELS_PATH = "/api/v1/models"


class ApiCallError(Exception):
    """The API answered a call with an HTTP error (4xx/5xx) or a body that is not JSON."""

    def __init__(
        self,
        method: str,
        url: str,
        status: int,
        code: str,
        message: str,
        details: Any = None,
    ) -> None:
        super().__init__(f"{method} {url} -> {status} {code}: {message}")
        self.method = method
        self.url = url
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiCallError:
        method = response.request.method or "?"
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "code" in body:
            return cls(
                method,
                response.url,
                response.status_code,
                str(body["code"]),
                str(body.get("message", "")),
                body.get("details"),
            )
        # Not the API's error shape: a proxy in between, or not our service at that address.
        return cls(
            method,
            response.url,
            response.status_code,
            "unexpected_response",
            response.text[:200],
        )


class ApiClient:
    """One HTTP session against ``base_url``; the API key is sent when one is given.

    Reads (jobs, items, recommendations) need no key; submitting jobs does.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        upload_timeout_s: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.upload_timeout_s = upload_timeout_s
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """An absolute URL for an API path; absolute URLs (a job's ``status_url``) pass through."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def job_url(self, job: str) -> str:
        """The status URL of a job given by its id, its ``status_url`` path, or a full URL."""
        if "/" in job:
            return self.url(job)
        return self.url(f"{JOBS_PATH}/{quote(job, safe='')}")

    def _document(self, response: requests.Response) -> JsonDoc:
        if response.status_code >= 400:
            raise ApiCallError.from_response(response)
        try:
            body = response.json()
        except ValueError:
            raise ApiCallError.from_response(response) from None
        if not isinstance(body, dict):
            raise ApiCallError(
                response.request.method or "?",
                response.url,
                response.status_code,
                "unexpected_response",
                "the body is JSON but not an object",
            )
        return body

    def submit_files(
        self,
        paths: Sequence[Path],
        attributes: Sequence[Mapping[str, Any]] | None = None,
    ) -> JsonDoc:
        """One job for these photos (multipart ``images``); each file's SKU is its stem.

        ``attributes``: one object per photo, in the same order (stock, price, style...).
        Answers ``{"id", "status", "status_url"}`` (202).
        """
        if attributes is not None and len(attributes) != len(paths):
            raise ValueError(f"{len(attributes)} attribute objects for {len(paths)} photos")
        form = [("attributes", json.dumps(dict(a))) for a in attributes or ()]
        with contextlib.ExitStack() as stack:
            files = [
                (
                    "images",
                    (
                        path.name,
                        stack.enter_context(path.open("rb")),
                        mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                    ),
                )
                for path in paths
            ]
            response = self.session.post(
                self.url(JOBS_PATH), data=form, files=files, timeout=self.upload_timeout_s
            )
        return self._document(response)

    def submit_items(self, items: Sequence[Mapping[str, str]]) -> JsonDoc:
        """One job for items the server fetches: ``{"sku", "url"}`` or ``{"sku", "path"}``."""
        response = self.session.post(
            self.url(JOBS_PATH), json={"items": list(items)}, timeout=self.timeout_s
        )
        return self._document(response)

    def job(self, job: str, per_page: int = 50) -> JsonDoc:
        """A job's status, counters and its first ``per_page`` failed items."""
        response = self.session.get(
            self.job_url(job), params={"per_page": per_page}, timeout=self.timeout_s
        )
        return self._document(response)

    def wait_for_jobs(
        self,
        jobs: Sequence[str],
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_poll: Callable[[Sequence[JsonDoc]], None] | None = None,
    ) -> list[JsonDoc]:
        """Poll the jobs until every one has finished; their last documents, in order.

        ``on_poll`` sees the documents after each round (a progress bar). Raises TimeoutError
        when ``timeout_s`` passes first; ``None`` waits as long as the jobs take.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        docs: dict[str, JsonDoc] = {}
        while True:
            for job in jobs:
                if job not in docs or docs[job].get("status") not in FINISHED_JOB_STATUSES:
                    docs[job] = self.job(job)
            current = [docs[job] for job in jobs]
            if on_poll is not None:
                on_poll(current)
            if all(doc.get("status") in FINISHED_JOB_STATUSES for doc in current):
                return current
            if deadline is not None and time.monotonic() > deadline:
                ids = [d.get("id") for d in current if d.get("status") not in FINISHED_JOB_STATUSES]
                raise TimeoutError(f"jobs still running after {timeout_s:.0f} s: {ids}")
            time.sleep(poll_s)

    def wait_for_job(
        self,
        job: str,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
        on_poll: Callable[[Sequence[JsonDoc]], None] | None = None,
    ) -> JsonDoc:
        return self.wait_for_jobs([job], timeout_s, poll_s, on_poll)[0]

    def item(self, sku: str) -> JsonDoc:
        response = self.session.get(
            self.url(f"/api/v1/items/{quote(sku, safe='')}"), timeout=self.timeout_s
        )
        return self._document(response)

    def recommendations(
        self,
        sku: str,
        k: int = 5,
        kinds: Sequence[str] | None = None,
        filters: Sequence[tuple[str, str]] = (),
    ) -> JsonDoc:
        """The ``k`` nearest other items per kind (top, bottom, full), nearest first.

        ``filters``: query parameters as the API names them, e.g. ``("attr.in_stock", "true")``,
        ``("distinct", "style")``; repeated names are sent repeated.
        """
        params: list[tuple[str, Any]] = [("k", k)]
        if kinds:
            params.append(("kinds", ",".join(kinds)))
        params.extend(filters)
        response = self.session.get(
            self.url(f"/api/v1/items/{quote(sku, safe='')}/recommendations"),
            params=params,
            timeout=self.timeout_s,
        )
        return self._document(response)

    def models(self) -> JsonDoc:
        """``{"serving": ..., "versions": [...]}``: the model versions and their progress."""
        return self._document(self.session.get(self.url(MODELS_PATH), timeout=self.timeout_s))

    def model_action(self, version: str, action: str) -> JsonDoc:
        """``build`` or ``serve`` (POST) or ``retire`` (DELETE) a model version (API key)."""
        path = f"{MODELS_PATH}/{quote(version, safe='')}"
        if action == "retire":
            response = self.session.delete(self.url(path), timeout=self.timeout_s)
        else:
            response = self.session.post(self.url(f"{path}/{action}"), timeout=self.timeout_s)
        return self._document(response)

    def wait_for_model(
        self,
        version: str,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_poll: Callable[[JsonDoc], None] | None = None,
    ) -> JsonDoc:
        """Poll until ``version`` is complete (or retired); its last document."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            found = [v for v in self.models().get("versions", []) if v.get("version") == version]
            if not found:
                raise ApiCallError("GET", self.url(MODELS_PATH), 404, "model_not_found", version)
            doc = found[0]
            if on_poll is not None:
                on_poll(doc)
            if doc.get("complete") or doc.get("state") == "retired":
                return doc
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"model version {version} still building after {timeout_s} s")
            time.sleep(poll_s)

    def ready(self) -> tuple[bool, Any]:
        """Whether ``/readyz`` answers 200, and its body (or why nothing answered).

        Never raises: callers poll it while a stack boots.
        """
        try:
            response = self.session.get(self.url("/readyz"), timeout=5)
        except requests.RequestException as exc:
            return False, str(exc)
        try:
            body = response.json()
        except ValueError:
            body = response.text[:200]
        return response.status_code == 200, body
