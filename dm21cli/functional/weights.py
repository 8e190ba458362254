"""Find, verify, install and download the DM21 checkpoints (the network weights).

The weights are data published by DeepMind (CC BY 4.0), never part of this
package.  A *checkpoint root* is a folder holding ``DM21/``, ``DM21m/``,
``DM21mc/`` and ``DM21mu/``, each a TF1 hub module with the five files in
:data:`FILES`.  The root is searched for in this order, and the first source
that is *set* is used -- an option or environment variable that points at a
wrong folder is an error, never silently skipped:

1. an explicit directory (the ``--checkpoints DIR`` option of ``dm21``);
2. the environment variable ``DM21_CHECKPOINTS``;
3. the per-user data folder, ``platformdirs.user_data_dir("dm21cli")/checkpoints``
   (on Linux ``$XDG_DATA_HOME/dm21cli/checkpoints``, by default
   ``~/.local/share/dm21cli/checkpoints``), where ``dm21 weights install`` and
   ``dm21 weights download`` put them.

Installing also places the root's ``SHA256SUMS`` (every file's SHA-256, for
``sha256sum -c``), copied from the source when it has one that agrees with
:data:`CHECKSUMS` and written from that table otherwise, and copies the
source's ``README.md`` and ``ARCHITECTURE.md`` (licence, attribution, layout)
when present.

Every file is checked against the SHA-256 in :data:`CHECKSUMS` before use.
Digests are cached per (path, device, inode, size, mtime) for the life of the
process, so one run hashes each file once.  This module imports neither
TensorFlow nor PySCF.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from dm21cli.core.errors import WeightsError
from dm21cli.functional import VARIANTS

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "VARIANTS", "FILES", "CHECKSUMS", "UPSTREAM_URL", "ENV_VAR", "VariantStatus",
    "canonical_variant", "user_checkpoints_dir", "resolve_root", "locate",
    "load_parameters", "install_from", "download", "status", "fix_hint", "clear_cache",
    "ROOT_FILES", "sha256sums_text",
]


#: the five files of every variant, relative to its folder.
FILES = (
    "saved_model.pb",
    "tfhub_module.pb",
    "smart_module.pb",
    "variables/variables.index",
    "variables/variables.data-00000-of-00001",
)

#: SHA-256 of every published file (from the checkpoints' SHA256SUMS).
CHECKSUMS: dict[str, dict[str, str]] = {
    "DM21": {
        "saved_model.pb": "17dfe6a6b29ed78a1a1b2629d30e0290856d6bea91a9bc4e445558d14215320a",
        "tfhub_module.pb": "2d88972e9536ba54deed37db380728b3c58eab9bca1d173ae523098b0774cdf5",
        "smart_module.pb": "2daf0d8125b8704372dc71135c7e91e4b9790b816f77d39b3063ccb5c0cae7cd",
        "variables/variables.index": "5918c6ce71365eed6fe4e9e7dc9a996e598fb061cb6d7eae14b12f27a69d63df",
        "variables/variables.data-00000-of-00001": "b4cb392a9b6de8385f98347dc2e134d492060a7835ec4dc0fc7ff11d72fdb2b9",
    },
    "DM21m": {
        "saved_model.pb": "050d778fb8ced365e62cb571000b94a594be3a9483c27112959ec6589646557f",
        "tfhub_module.pb": "2d88972e9536ba54deed37db380728b3c58eab9bca1d173ae523098b0774cdf5",
        "smart_module.pb": "9a35da924d16699338d30986b813dee963c47aa07198874cfa0a35ae6b740ff2",
        "variables/variables.index": "384a0651340ff6b9fe9e93dfbaf0478ceb1e39c5ab4c58dd617d67ff27833feb",
        "variables/variables.data-00000-of-00001": "61e5814cab7e953a9b732f291494670b70cf96d4681f59ae8f4403526a20cfdb",
    },
    "DM21mc": {
        "saved_model.pb": "9bb0da9df797bd8ccc027975c9e701b948220fdfea8d926bbaaad74c2aace037",
        "tfhub_module.pb": "2d88972e9536ba54deed37db380728b3c58eab9bca1d173ae523098b0774cdf5",
        "smart_module.pb": "1ac647fa08687a29e4250380a24fdb9a511d2e04a15598c2d36de69cb7183fba",
        "variables/variables.index": "7dac9b16a5ca2ce82795f3b13dfd9eb0a44356bac488cc96286bc87f68362bba",
        "variables/variables.data-00000-of-00001": "ade31ae97b5b19c3706daf925d734338339b0e1979a7f51dce6d613acddd30e5",
    },
    "DM21mu": {
        "saved_model.pb": "85afa121d127be2c334ad42b867825fa694981ac37b7a8ddf2b4fd5b940657be",
        "tfhub_module.pb": "2d88972e9536ba54deed37db380728b3c58eab9bca1d173ae523098b0774cdf5",
        "smart_module.pb": "d5de95f040582d0f4081d658b8437c2f6fd18ab23ab6ce77c356e5b8ecce15c2",
        "variables/variables.index": "cd408fd152d42cf68df605ff186b5b981d5c7189b4a0026f2caec6e5d81834e1",
        "variables/variables.data-00000-of-00001": "f8f8677e00c1a32383064b86f77c107545f761cd23628e32ff88d9856160f735",
    },
}

#: files of a checkpoint root beside the variant folders that installing copies
#: when the source has them: the checksum list, and the data's own description
#: (licence and attribution, layout of the graph).
SUMS_FILE = "SHA256SUMS"
ROOT_FILES = (SUMS_FILE, "README.md", "ARCHITECTURE.md")

UPSTREAM_URL = (
    "https://raw.githubusercontent.com/google-deepmind/deepmind-research/master/"
    "density_functional_approximation_dm21/density_functional_approximation_dm21/checkpoints"
)
ENV_VAR = "DM21_CHECKPOINTS"

#: values of VariantStatus.source / the second item of resolve_root()
SOURCE_OPTION = "option"
SOURCE_ENV = f"env {ENV_VAR}"
SOURCE_USER = "user data dir"

_SOURCE_TEXT = {
    SOURCE_OPTION: "the --checkpoints option",
    SOURCE_ENV: f"the environment variable {ENV_VAR}",
    SOURCE_USER: "the user data dir",
}
_GET_HINT = "run `dm21 weights install --from DIR` or `dm21 weights download`"
#: what a failed download suggests: the folder may be at hand without the network
_INSTALL_HINT = ("if you have the checkpoint folder (DeepMind's density_functional_approximation_dm21/"
                 "checkpoints, holding DM21, DM21m, DM21mc, DM21mu), run `dm21 weights install --from DIR{dest}`")
_MAX_DOWNLOAD_BYTES = 64 << 20  # no published file is larger than 2 MB
_LOCK_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class VariantStatus:
    """State of one variant, for ``dm21 weights list`` and ``dm21 info``.

    path: the variant's folder if it exists, else None; source: which search
    step chose the root ("option", "env DM21_CHECKPOINTS", "user data dir");
    verified: every file present with the right SHA-256; problem: one line.
    """

    variant: str
    path: Path | None
    source: str | None
    verified: bool
    problem: str | None


# ------------------------------------------------------------------ search
def canonical_variant(name: str) -> str:
    """Return the official spelling of a variant name (case-insensitive), e.g. "dm21mc" -> "DM21mc"."""
    wanted = str(name).strip().lower()
    for variant in VARIANTS:
        if variant.lower() == wanted:
            return variant
    raise WeightsError(f"unknown DM21 variant {name!r}; valid names: {', '.join(VARIANTS)}")


def user_checkpoints_dir() -> Path:
    """The per-user checkpoint root: ``platformdirs.user_data_dir("dm21cli") / "checkpoints"``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("dm21cli", appauthor=False)) / "checkpoints"


def resolve_root(checkpoints: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Return (checkpoint root, source) by the search order in the module doc.

    The root need not exist; ``locate`` reports what is missing.  source is
    "option", "env DM21_CHECKPOINTS" or "user data dir".
    """
    if checkpoints is not None and str(checkpoints) != "":
        return Path(checkpoints).expanduser(), SOURCE_OPTION
    env = os.environ.get(ENV_VAR, "")
    if env.strip():
        return Path(env).expanduser(), SOURCE_ENV
    return user_checkpoints_dir(), SOURCE_USER


def _fix_hint(source: str, root: Path) -> str:
    """How to fix missing or corrupted weights found through ``source``."""
    if source == SOURCE_USER:
        return _GET_HINT
    get = (f"run `dm21 weights install --from DIR --dest {root}` "
           f"or `dm21 weights download --dest {root}`")
    if source == SOURCE_OPTION:
        return f"point --checkpoints at a folder holding {', '.join(VARIANTS)}, or {get}"
    return f"fix or unset {ENV_VAR}, or {get}"


# ------------------------------------------------------------ verification
_digest_cache: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, cached by (path, dev, inode, size, mtime_ns)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _digest_cache.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = _digest_cache[key] = h.hexdigest()
    return digest


def clear_cache() -> None:
    """Forget cached digests (e.g. after editing files in place within one process)."""
    _digest_cache.clear()


def _find_problem(variant: str, folder: Path) -> tuple[Path, str] | None:
    """First (file, problem) of a variant folder, or None if every file verifies."""
    if not folder.is_dir():
        return folder, "folder is missing"
    for rel in FILES:
        path = folder / rel
        if not path.is_file():
            return path, "file is missing"
        try:
            digest = _sha256(path)
        except OSError as exc:
            return path, f"cannot read file ({exc.strerror or exc})"
        if digest != CHECKSUMS[variant][rel]:
            return path, "SHA-256 mismatch (file corrupted or not the published one)"
    return None


def _diagnose(variant: str, root: Path) -> tuple[Path, str] | None:
    """(path, problem) of a variant under ``root``, or None if it verifies."""
    folder = root / variant
    problem = _find_problem(variant, folder)
    if problem is None:
        return None
    path, what = problem
    if not root.is_dir():
        return root, "checkpoint folder does not exist"
    if path == folder and (root / "saved_model.pb").is_file():
        what += f" ({root} looks like a variant folder: give its parent)"
    return path, what


def _locate(variant: str, root: Path, source: str) -> Path:
    problem = _diagnose(variant, root)
    if problem is None:
        return root / variant
    raise WeightsError(f"{variant} weights: {problem[0]}: {problem[1]} (location from "
                       f"{_SOURCE_TEXT[source]}); {_fix_hint(source, root)}")


def locate(variant: str, checkpoints: str | os.PathLike | None = None) -> Path:
    """Return the verified folder of ``variant`` (e.g. ".../checkpoints/DM21").

    checkpoints: an explicit checkpoint root (the CLI's ``--checkpoints``);
    None searches ``DM21_CHECKPOINTS`` then the user data dir.  Raises
    WeightsError (one line: which file, which search source, how to fix) if
    the variant is unknown, or a file is missing or fails its SHA-256.
    """
    variant = canonical_variant(variant)
    root, source = resolve_root(checkpoints)
    return _locate(variant, root, source)


def load_parameters(variant: str, checkpoints: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Locate, verify and read a variant's weights, without TensorFlow.

    Returns ``{TF variable name: numpy.ndarray}`` as stored (float32), e.g.
    ``hub_wrapper/local_functional_v2/MLP/ResidualBlock_3/linear/w`` (256, 256).
    """
    from dm21cli.functional.tfbundle import read_bundle

    folder = locate(variant, checkpoints)
    return read_bundle(folder / "variables" / "variables")


def status(checkpoints: str | os.PathLike | None = None) -> list[VariantStatus]:
    """Verify every variant at the resolved root; never raises for missing weights."""
    root, source = resolve_root(checkpoints)
    out = []
    for variant in VARIANTS:
        folder = root / variant
        problem = _diagnose(variant, root)
        out.append(VariantStatus(
            variant, folder if folder.is_dir() else None, source, problem is None,
            None if problem is None else f"{problem[0]}: {problem[1]}"))
    return out


def fix_hint(checkpoints: str | os.PathLike | None = None) -> str:
    """One-line advice for getting the weights where the search will find them."""
    root, source = resolve_root(checkpoints)
    return _fix_hint(source, root)


# --------------------------------------------------------------- installing
def _variants(variants: Iterable[str]) -> list[str]:
    names = [variants] if isinstance(variants, str) else list(variants)
    out = [canonical_variant(v) for v in names]
    if not out:
        raise WeightsError("no DM21 variant selected")
    return list(dict.fromkeys(out))


def sha256sums_text(variants: Iterable[str] = VARIANTS) -> str:
    """The published SHA-256 of every file of ``variants``, in ``sha256sum`` format:
    one ``<digest>  <variant>/<file>`` a line, the layout of the checkpoints' SHA256SUMS."""
    names = _variants(variants)
    return "".join(f"{CHECKSUMS[v][rel]}  {v}/{rel}\n" for rel in FILES for v in names)


def _sums_problem(path: Path) -> str | None:
    """Why a SHA256SUMS file contradicts :data:`CHECKSUMS`, or None if every
    variant file it lists has its published digest (other names are ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read it ({exc})"
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            return f"line {number} is not '<sha256>  <variant>/<file>'"
        digest, name = parts
        variant, _, rel = name.lstrip("*").partition("/")
        published = CHECKSUMS.get(variant, {}).get(rel)
        if published is not None and digest.lower() != published:
            return f"line {number}: {name} does not have its published SHA-256"
    return None


def _remove_created(created: list[Path]) -> None:
    """Remove folders that an install created (outermost first in the list) while empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def _staged(dest: str | os.PathLike | None):
    """(root, staging): the destination root, created if needed, and a fresh
    staging folder inside it (same file system, so `_commit` can rename).

    The staging folder is always removed.  If the body fails, so are the
    folders this created: a failed install or download leaves a destination
    that did not exist as it was, absent.
    """
    root = Path(dest).expanduser() if dest is not None else user_checkpoints_dir()
    created = [p for p in (root, *root.parents) if not p.exists()][::-1]
    staging = None
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WeightsError(f"cannot create checkpoint folder {root}: {exc.strerror or exc}") from exc
        try:
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        except OSError as exc:
            raise WeightsError(f"cannot write into {root}: {exc.strerror or exc}") from exc
        yield root, staging
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _commit(root: Path, staging: Path, variants: list[str], root_files: list[str]) -> None:
    """Move verified ``staging/<variant>`` folders and ``staging/<root file>`` into
    ``root`` under a file lock.

    Each variant appears by a rename within one file system, so readers see
    either the old complete folder or the new one (or, for an instant during
    replacement, none -- never a half-written one).  Without a SHA256SUMS among
    root_files, one is written from :data:`CHECKSUMS` for the variants present.
    """
    import filelock

    lock = filelock.FileLock(str(root / ".install.lock"), timeout=_LOCK_TIMEOUT_S)
    try:
        with lock:
            for variant in variants:
                problem = _find_problem(variant, staging / variant)
                if problem is not None:  # paranoia: checked again just before it goes live
                    raise WeightsError(f"{variant} weights: {problem[0]}: {problem[1]}; nothing installed")
            for variant in variants:
                target = root / variant
                if target.exists() or target.is_symlink():
                    os.rename(target, staging / f"{variant}.old")
                os.rename(staging / variant, target)
            if SUMS_FILE not in root_files:
                present = [v for v in VARIANTS if (root / v).is_dir()]
                (staging / SUMS_FILE).write_text(sha256sums_text(present), encoding="utf-8")
                root_files = [*root_files, SUMS_FILE]
            for name in root_files:
                os.replace(staging / name, root / name)
    except filelock.Timeout as exc:
        raise WeightsError(f"another dm21 install holds {lock.lock_file}; try again later") from exc
    except OSError as exc:
        raise WeightsError(f"cannot install weights into {root}: {exc.strerror or exc}") from exc


def install_from(source: str | os.PathLike, dest: str | os.PathLike | None = None,
                 variants: Iterable[str] = VARIANTS) -> Path:
    """Copy and verify checkpoints from ``source`` (a root holding DM21/, DM21m/, ...).

    dest: the checkpoint root to install into (default: the user data dir).
    The source is verified first and refused, leaving dest untouched, if any
    file is missing or fails its SHA-256, or if its SHA256SUMS contradicts the
    published digests.  Files are copied into a temporary folder inside dest,
    verified again and renamed into place under a file lock, together with the
    source's :data:`ROOT_FILES` that exist (a SHA256SUMS is written when the
    source has none).  Returns the destination root.
    """
    names = _variants(variants)
    source = Path(source).expanduser()
    for variant in names:
        problem = _find_problem(variant, source / variant)
        if problem is not None:
            raise WeightsError(f"refusing to install from {source}: {problem[0]}: {problem[1]}")
    if (source / SUMS_FILE).is_file():
        problem = _sums_problem(source / SUMS_FILE)
        if problem is not None:
            raise WeightsError(f"refusing to install from {source}: {source / SUMS_FILE}: {problem}")
    extras = [name for name in ROOT_FILES if (source / name).is_file()]
    with _staged(dest) as (root, staging):
        try:
            for variant in names:
                for rel in FILES:
                    target = staging / variant / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source / variant / rel, target)  # not the read-only modes
            for name in extras:
                shutil.copyfile(source / name, staging / name)
        except OSError as exc:
            raise WeightsError(f"cannot copy weights from {source} to {root}: {exc.strerror or exc}") from exc
        _commit(root, staging, names, extras)
    return root


def _fetch(url: str, target: Path, expected: str, timeout_s: float) -> None:
    """Download url into target, refusing it unless its SHA-256 is ``expected``."""
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "dm21cli"})
    h = hashlib.sha256()
    nbytes = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response, open(target, "wb") as out:
            while chunk := response.read(1 << 16):
                nbytes += len(chunk)
                if nbytes > _MAX_DOWNLOAD_BYTES:
                    raise WeightsError(f"download {url}: larger than any published file; refused")
                h.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"download {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            reason = f"timed out after {timeout_s:g} s"
        raise WeightsError(f"download {url}: {reason}") from exc
    except TimeoutError as exc:
        raise WeightsError(f"download {url}: timed out after {timeout_s:g} s") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, bad URL, ...
        raise WeightsError(f"download {url}: {exc.__class__.__name__}: {exc}") from exc
    if h.hexdigest() != expected:
        raise WeightsError(f"download {url}: SHA-256 mismatch (got {h.hexdigest()[:16]}..., "
                           f"expected {expected[:16]}...)")


def download(base_url: str = UPSTREAM_URL, dest: str | os.PathLike | None = None,
             timeout_s: float = 60.0, variants: Iterable[str] = VARIANTS,
             progress: Callable[[str], None] | None = None) -> Path:
    """Download, verify and install checkpoints from ``{base_url}/{variant}/{file}``.

    timeout_s: seconds allowed for connecting and for each read before the
    download fails.  dest: the checkpoint root (default: the user data dir).
    progress: called with a one-line message before each file.  Every file
    must match its SHA-256 before anything is installed; on any network
    error, HTTP error, timeout or mismatch, WeightsError names the URL and
    suggests ``dm21 weights install --from DIR``, and dest is left as it was
    (a folder the download created is removed again).  The root gets a
    SHA256SUMS written from :data:`CHECKSUMS`.  Returns the destination root.
    """
    names = _variants(variants)
    base = base_url.rstrip("/")
    with _staged(dest) as (root, staging):
        try:
            for variant in names:
                for rel in FILES:
                    url = f"{base}/{variant}/{rel}"
                    if progress is not None:
                        progress(f"downloading {url}")
                    target = staging / variant / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _fetch(url, target, CHECKSUMS[variant][rel], timeout_s)
        except WeightsError as exc:
            hint = _INSTALL_HINT.format(dest="" if dest is None else f" --dest {root}")
            raise WeightsError(f"{exc}; nothing installed; {hint}") from exc
        _commit(root, staging, names, [])
    return root
