"""Bulk ingestion from a folder, through the same HTTP job API as every other client.

    python -m workers.cli ingest DIR --api URL --api-key KEY [--wait]

Files are sent as multipart uploads in chunks (one job per chunk, bounded by file count and
bytes); with ``--wait`` a progress bar polls the jobs until they all end. Exit status: 0 when
every item succeeded, 1 when some failed, 2 on a usage or HTTP error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from shared.vocabulary import FINISHED_JOB_STATUSES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
TERMINAL = FINISHED_JOB_STATUSES


class CliError(Exception):
    pass


def find_images(folder: Path, recursive: bool) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    files = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    by_sku: dict[str, Path] = {}
    for path in files:
        if path.stem in by_sku:
            raise CliError(f"two files give the SKU {path.stem!r}: {by_sku[path.stem]}, {path}")
        by_sku[path.stem] = path
    return files


def chunked(files: Sequence[Path], max_files: int, max_bytes: int) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    size = 0
    for path in files:
        length = path.stat().st_size
        if chunk and (len(chunk) >= max_files or size + length > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += length
    if chunk:
        yield chunk


class ApiClient:
    def __init__(self, base: str, api_key: str, timeout_s: float = 120.0) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base}{path}"

    def _check(self, response: requests.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = f"{body.get('code')}: {body.get('message')}"
            except ValueError:
                detail = response.text[:200]
            raise CliError(f"HTTP {response.status_code} from {response.url}: {detail}")
        return response.json()

    def submit(self, paths: Sequence[Path]) -> dict[str, Any]:
        with contextlib.ExitStack() as stack:
            files = [
                ("images", (p.name, stack.enter_context(p.open("rb")), "application/octet-stream"))
                for p in paths
            ]
            response = self.session.post(
                self._url("/api/v1/jobs"), files=files, timeout=self.timeout_s
            )
        return self._check(response)

    def job(self, status_url: str, per_page: int = 50) -> dict[str, Any]:
        response = self.session.get(
            self._url(status_url), params={"per_page": per_page}, timeout=self.timeout_s
        )
        return self._check(response)


def wait_for_jobs(
    client: ApiClient, status_urls: Sequence[str], total: int, poll_s: float
) -> list[dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    with tqdm(total=total, unit="img", desc="ingest", file=sys.stderr) as bar:
        while True:
            for url in status_urls:
                if url not in docs or docs[url]["status"] not in TERMINAL:
                    docs[url] = client.job(url)
            finished = sum(d["done"] + d["failed"] for d in docs.values())
            failed = sum(d["failed"] for d in docs.values())
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(finished - bar.n)
            if all(d["status"] in TERMINAL for d in docs.values()):
                return [docs[url] for url in status_urls]
            time.sleep(poll_s)


def ingest(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder")
    files = find_images(folder, args.recursive)
    if not files:
        raise CliError(f"no image files in {folder}")
    client = ApiClient(args.api, args.api_key)
    status_urls: list[str] = []
    chunks = list(chunked(files, args.chunk_files, args.chunk_mb * 1024 * 1024))
    for chunk in tqdm(
        chunks, desc="upload", unit="chunk", file=sys.stderr, disable=len(chunks) < 2
    ):
        created = client.submit(chunk)
        status_urls.append(created["status_url"])
        print(f"job {created['id']}: {len(chunk)} images -> {created['status_url']}")
    if not args.wait:
        return 0
    docs = wait_for_jobs(client, status_urls, len(files), args.poll_s)
    done = sum(d["done"] for d in docs)
    failed = sum(d["failed"] for d in docs)
    print(f"{done} succeeded, {failed} failed, {len(files)} images in {len(docs)} job(s)")
    for doc in docs:
        for error in doc["errors"]["items"]:
            print(f"  {error['sku']}: {error['reason']}: {error['error']}")
        if doc["errors"]["total"] > len(doc["errors"]["items"]):
            print(f"  ... and more: {doc['id']}")
    return 0 if failed == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("ingest", help="upload a folder of images as ingestion jobs")
    cmd.add_argument("dir", help="folder of images; each file's SKU is its name without extension")
    cmd.add_argument("--api", required=True, help="base URL of the web service")
    cmd.add_argument("--api-key", required=True)
    cmd.add_argument("--wait", action="store_true", help="show progress until the jobs end")
    cmd.add_argument("--recursive", action="store_true")
    cmd.add_argument("--chunk-files", type=int, default=200, help="files per job (default 200)")
    cmd.add_argument("--chunk-mb", type=int, default=64, help="MiB per upload (default 64)")
    cmd.add_argument("--poll-s", type=float, default=1.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return ingest(args)
    except (CliError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
