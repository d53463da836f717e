"""``histoclr data fetch``: public data sets with stable URLs, downloaded through pooch.

Each :class:`Dataset` lists its files (URL, place under the data root, size, sha256, licence).
:func:`fetch` downloads the missing ones with ``pooch.retrieve`` (sha256 checked before a file
takes its place; a file already there with the right checksum is not downloaded again), through
:class:`ResumingDownloader`, pooch's downloader hook with HTTP ``Range`` requests so that an
interrupted download continues from the bytes it already has (kept in ``<file>.part``). The fetched
files are then described in ``<root>/fetched.csv`` (the data-manifest format), which
``histoclr data verify --root ROOT ROOT/fetched.csv`` checks.

Data sets without a stable URL (MoNuSeg: links behind the challenge's sign-up page) are listed with
the reason and where to put the files by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pooch
import requests

from histoclr.errors import HistoclrError
from histoclr.io import atomic_write_text
from histoclr.manifests.data import DATA_COLUMNS, format_data_manifest, read_data_manifest
from histoclr.progress import progress_bar

FETCHED_MANIFEST = "fetched.csv"
TIMEOUT_S = 30
CHUNK = 1 << 16
OPENSLIDE_TESTDATA = "https://openslide.cs.cmu.edu/download/openslide-testdata"


class FetchError(HistoclrError):
    """A download failed, or what arrived is not the file listed."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: where it comes from, where it goes under the data root, its facts."""

    url: str
    path: str             # relative to the data root, '/'-separated
    sha256: str
    bytes: int
    role: str = "slide"   # a data-manifest role
    facts: dict[str, str] = field(default_factory=dict)   # mpp, mpp_source, magnification, organ, ...


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    licence: str
    source: str
    files: tuple[RemoteFile, ...] = ()
    manual: str = ""      # why it cannot be fetched automatically, and what to do instead

    @property
    def fetchable(self) -> bool:
        return bool(self.files) and not self.manual


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        "openslide-cmu1-small",
        "OpenSlide test data: Aperio/CMU-1-Small-Region.svs, a small real Aperio SVS slide "
        "(2220 x 2967, 20x, 0.499 um/px, 1.9 MB)",
        licence="OpenSlide test data terms (CMU-1 files are listed there as CC0-1.0)",
        source=f"{OPENSLIDE_TESTDATA}/",
        files=(RemoteFile(
            f"{OPENSLIDE_TESTDATA}/Aperio/CMU-1-Small-Region.svs", "slides/CMU-1-Small-Region.svs",
            "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7", 1938955,
            facts={"mpp": "0.499", "mpp_source": "openslide", "magnification": "20"}),)),
    Dataset(
        "monuseg2018",
        "MoNuSeg 2018 training set: 30 H&E images (1000 x 1000, 40x) with nucleus outlines "
        "(Aperio XML), cut from TCGA slides (Kumar et al., IEEE TMI 2017, 2020)",
        licence="CC BY-NC-SA 4.0 (non-commercial research)",
        source="https://monuseg.grand-challenge.org/Data/",
        manual="not fetched automatically: the challenge hands its files out as Google Drive links "
               "from https://monuseg.grand-challenge.org/Data/ (no stable URL with a fixed checksum); "
               "download them by hand and place the images under ROOT/monuseg2018/labeled/images/ and "
               "the XML annotations under ROOT/monuseg2018/labeled/annotations/"),
)}


def list_datasets() -> list[str]:
    """One line per data set: name, what, licence, and how to get it."""
    lines = []
    for d in DATASETS.values():
        how = (f"{len(d.files)} file(s), {sum(f.bytes for f in d.files) / 1e6:.1f} MB"
               if d.fetchable else d.manual)
        lines.append(f"{d.name}: {d.description}; licence: {d.licence}; {how}")
    return lines


# ----------------------------------------------------------------------------- download
class ResumingDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that continues a partial
    download: bytes arrive in ``partial``, requested from where it ends (HTTP ``Range``); a server
    that ignores ``Range`` sends the whole file again. When complete, ``partial`` becomes pooch's
    ``output_file`` (pooch checks the sha256 and moves it into place)."""

    def __init__(self, partial: Path, expected_bytes: int | None = None, progress: bool = True,
                 timeout: float = TIMEOUT_S):
        self.partial, self.expected, self.progress, self.timeout = Path(partial), expected_bytes, progress, timeout

    def __call__(self, url: str, output_file, pooch_instance=None, check_only: bool = False):
        if check_only:
            return requests.head(url, timeout=self.timeout, allow_redirects=True).ok
        have = self.partial.stat().st_size if self.partial.is_file() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if r.status_code == 416 and have:          # nothing past what we have: it is complete
                total = have
            else:
                r.raise_for_status()
                if r.status_code != 206:                # no resume from this server: start over
                    have = 0
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else self.expected
                mode = "ab" if have else "wb"
                # a connection closed early ends the stream instead of raising, so that every byte
                # received is kept for the resume (the length is checked below)
                r.raw.enforce_content_length = False
                with open(self.partial, mode) as f, progress_bar(
                        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=PurePosixPath(url).name, disable=not self.progress, leave=False) as bar:
                    try:
                        for chunk in r.iter_content(CHUNK):
                            f.write(chunk)
                            bar.update(len(chunk))
                    except requests.RequestException as e:
                        f.flush()
                        raise _Interrupted(self.partial.stat().st_size, total, e) from None
        got = self.partial.stat().st_size
        if total is not None and got < total:
            raise _Interrupted(got, total, "connection closed early")
        os.replace(self.partial, output_file)


class _Interrupted(Exception):
    def __init__(self, got: int, total: int | None, why):
        super().__init__(f"interrupted after {got} of {total if total is not None else '?'} bytes "
                         f"({_reason(why)})")


def _reason(e) -> str:
    if isinstance(e, str):
        return e
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


def fetch_file(f: RemoteFile, root: str | Path, url: str | None = None, progress: bool = True) -> Path:
    """Download ``f`` (from ``url`` if given, e.g. a mirror) to ``root/f.path``; return the path.

    Raises:
        FetchError: one line naming the URL: unreachable (and where to place the file by hand),
            interrupted (run again to resume), or the wrong sha256 (no file is left behind).
    """
    url = url or f.url
    target = Path(root) / f.path
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    by_hand = f"offline? download {url} by hand and place it in {target.parent}/ (as {target.name})"
    try:
        pooch.retrieve(url, known_hash=f"sha256:{f.sha256}", fname=target.name, path=target.parent,
                       downloader=ResumingDownloader(partial, f.bytes, progress))
    except _Interrupted as e:
        raise FetchError(f"{url}: download {e}; run the same command again to resume") from None
    except ValueError as e:              # pooch: the hash does not match
        partial.unlink(missing_ok=True)
        if "hash" not in str(e).lower():
            raise
        raise FetchError(f"{url}: sha256 mismatch (expected {f.sha256[:12]}…): the server sent "
                         f"another file; nothing was written to {target}") from None
    except requests.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.response.status_code} {e.response.reason}; {by_hand}") from None
    except requests.RequestException as e:
        raise FetchError(f"{url}: cannot download ({_reason(_root_cause(e))}); {by_hand}") from None
    return target


def _root_cause(e: requests.RequestException) -> str:
    """urllib3's reason without its wrapper text (``Failed to resolve 'host' (...)``, ``Connection refused``)."""
    inner = e.args[0] if e.args else e
    text = str(getattr(inner, "reason", None) or inner)
    return text.split(">: ", 1)[-1]


def manifest_row(d: Dataset, f: RemoteFile) -> dict[str, str]:
    row = dict.fromkeys(DATA_COLUMNS, "")
    row.update(path=f.path, bytes=str(f.bytes), sha256=f.sha256, role=f.role,
               pair_id=PurePosixPath(f.path).stem, source=f"{d.name}: {f.url}", licence=d.licence)
    row.update({k: v for k, v in f.facts.items() if k in DATA_COLUMNS})
    return row


def fetch(name: str, root: str | Path, progress: bool = True, base_url: str | None = None,
          echo: Callable[[str], None] = print) -> Path:
    """Fetch data set ``name`` into ``root``; merge its files into ``root/fetched.csv``; return that.

    ``base_url`` replaces the data set's URL prefix up to the file's place (a mirror, or a test server).
    """
    d = DATASETS.get(name)
    if d is None:
        raise FetchError(f"unknown data set {name!r}; known: {', '.join(DATASETS)} (histoclr data fetch --list)")
    if not d.fetchable:
        raise FetchError(f"{name}: {d.manual.replace('ROOT', str(root))}")
    root = Path(root)
    for f in d.files:
        url = f"{base_url.rstrip('/')}/{f.path}" if base_url else None
        path = fetch_file(f, root, url, progress)
        echo(f"ok {path} ({f.bytes} bytes, sha256 {f.sha256[:12]}…)")
    manifest = root / FETCHED_MANIFEST
    rows = {r["path"]: r for r in (read_data_manifest(manifest) if manifest.is_file() else [])}
    rows.update({f.path: manifest_row(d, f) for f in d.files})
    atomic_write_text(manifest, format_data_manifest(sorted(rows.values(), key=lambda r: r["path"])))
    return manifest
