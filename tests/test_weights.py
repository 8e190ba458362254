"""dm21cli.functional.weights and ``dm21 weights``: search order, verification, install, download."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dm21cli.functional import weights
from dm21cli.core.errors import ExitStatus, WeightsError

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = "variables/variables.data-00000-of-00001"


@pytest.fixture(autouse=True)
def _no_env_and_fresh_cache(monkeypatch):
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    weights.clear_cache()
    yield
    weights.clear_cache()


def copy_root(src: Path, dst: Path, variants=weights.VARIANTS) -> Path:
    """Writable copy of a checkpoint root (the shared files are read-only)."""
    for variant in variants:
        for rel in weights.FILES:
            (dst / variant / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / variant / rel).write_bytes((src / variant / rel).read_bytes())
    return dst


def link_root(src: Path, dst: Path, variant="DM21") -> Path:
    """A root holding one variant as a symlink into the shared folder (cheap)."""
    dst.mkdir(parents=True)
    (dst / variant).symlink_to(src / variant, target_is_directory=True)
    return dst


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below root."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ search
def test_user_dir_follows_xdg_data_home():
    assert weights.user_checkpoints_dir() == Path(os.environ["XDG_DATA_HOME"]) / "dm21cli" / "checkpoints"


def test_search_order_option_then_env_then_user_dir(checkpoints_dir, tmp_path, monkeypatch):
    opt = link_root(checkpoints_dir, tmp_path / "opt")
    env = link_root(checkpoints_dir, tmp_path / "env")
    user = link_root(checkpoints_dir, weights.user_checkpoints_dir())

    assert weights.resolve_root() == (user, "user data dir")
    assert weights.locate("DM21") == user / "DM21"
    monkeypatch.setenv(weights.ENV_VAR, str(env))
    assert weights.resolve_root() == (env, "env DM21_CHECKPOINTS")
    assert weights.locate("DM21") == env / "DM21"
    assert weights.resolve_root(opt) == (opt, "option")
    assert weights.locate("DM21", opt) == opt / "DM21"
    assert weights.locate("DM21", str(opt)) == opt / "DM21"


def test_wrong_explicit_option_is_an_error_not_a_fallback(checkpoints_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_VAR, str(checkpoints_dir))  # valid, but must not be used
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError) as info:
        weights.locate("DM21", empty)
    msg = str(info.value)
    assert str(empty / "DM21") in msg and "--checkpoints option" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="does not exist"):
        weights.locate("DM21", tmp_path / "nowhere")


def test_wrong_env_var_is_an_error_not_a_fallback(checkpoints_dir, tmp_path, monkeypatch):
    link_root(checkpoints_dir, weights.user_checkpoints_dir())  # valid, but must not be used
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(WeightsError, match="environment variable DM21_CHECKPOINTS.*unset DM21_CHECKPOINTS"):
        weights.locate("DM21")


def test_variant_folder_given_instead_of_root_gets_a_hint(checkpoints_dir):
    with pytest.raises(WeightsError, match="looks like a variant folder"):
        weights.locate("DM21", checkpoints_dir / "DM21")


def test_nothing_installed_suggests_install_or_download():
    with pytest.raises(WeightsError) as info:
        weights.locate("DM21")
    msg = str(info.value)
    assert "user data dir" in msg and "dm21 weights install --from DIR" in msg and "dm21 weights download" in msg


# ------------------------------------------------------------ verification
@pytest.mark.parametrize("name, variant", [("DM21", "DM21"), ("dm21mc", "DM21mc"), (" Dm21M ", "DM21m"),
                                           ("DM21MU", "DM21mu")])
def test_locate_verifies_and_accepts_any_case(checkpoints_dir, name, variant):
    assert weights.locate(name, checkpoints_dir) == checkpoints_dir / variant


def test_unknown_variant_lists_valid_names(checkpoints_dir):
    with pytest.raises(WeightsError, match="unknown DM21 variant 'B3LYP'; valid names: DM21, DM21m, DM21mc, DM21mu"):
        weights.locate("B3LYP", checkpoints_dir)


def test_corrupted_data_byte_names_the_file_and_the_fix(checkpoints_dir, tmp_path):
    root = copy_root(checkpoints_dir, tmp_path / "ck", ["DM21"])
    flip_byte(root / "DM21" / DATA, 123_456)
    with pytest.raises(WeightsError) as info:
        weights.locate("DM21", root)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(root / "DM21" / DATA) in msg and "SHA-256 mismatch" in msg
    assert "--checkpoints option" in msg and f"dm21 weights install --from DIR --dest {root}" in msg


def test_missing_file_is_reported(checkpoints_dir, tmp_path):
    root = copy_root(checkpoints_dir, tmp_path / "ck", ["DM21m"])
    (root / "DM21m" / "smart_module.pb").unlink()
    with pytest.raises(WeightsError, match=r"DM21m/smart_module.pb: file is missing"):
        weights.locate("DM21m", root)


def test_digest_cache_notices_replaced_files(checkpoints_dir, tmp_path):
    root = copy_root(checkpoints_dir, tmp_path / "ck", ["DM21"])
    weights.locate("DM21", root)
    target = root / "DM21" / "tfhub_module.pb"
    target.unlink()
    target.write_bytes(b"\x08\x02")  # same size, new inode
    with pytest.raises(WeightsError, match="tfhub_module.pb: SHA-256 mismatch"):
        weights.locate("DM21", root)


def test_checksum_table_matches_the_shared_sha256sums(checkpoints_dir):
    listed = {}
    for line in (checkpoints_dir / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split()
        variant, _, rel = rel.partition("/")
        listed.setdefault(variant, {})[rel] = digest
    assert listed == weights.CHECKSUMS
    assert set(weights.CHECKSUMS) == set(weights.VARIANTS)
    assert all(set(v) == set(weights.FILES) for v in weights.CHECKSUMS.values())


def test_load_parameters_returns_float32_arrays_by_tf_name(checkpoints_dir):
    params = weights.load_parameters("dm21", checkpoints_dir)
    assert len(params) == 28
    assert all(a.dtype == np.float32 for a in params.values())
    w = params["hub_wrapper/local_functional_v2/MLP/ResidualBlock_3/linear/w"]
    assert w.shape == (256, 256) and np.isfinite(w).all()


def test_load_parameters_refuses_corrupted_weights(checkpoints_dir, tmp_path):
    root = copy_root(checkpoints_dir, tmp_path / "ck", ["DM21"])
    flip_byte(root / "DM21" / DATA, 10)
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        weights.load_parameters("DM21", root)


def test_status_reports_each_variant(checkpoints_dir, tmp_path):
    good = weights.status(checkpoints_dir)
    assert [s.variant for s in good] == list(weights.VARIANTS)
    assert all(s.verified and s.problem is None and s.source == "option" for s in good)
    assert good[2].path == checkpoints_dir / "DM21mc"

    root = copy_root(checkpoints_dir, tmp_path / "ck", ["DM21", "DM21mu"])
    flip_byte(root / "DM21mu" / "saved_model.pb", 0)
    states = {s.variant: s for s in weights.status(root)}
    assert states["DM21"].verified
    assert not states["DM21m"].verified and states["DM21m"].path is None
    assert "folder is missing" in states["DM21m"].problem
    assert not states["DM21mu"].verified and "saved_model.pb: SHA-256 mismatch" in states["DM21mu"].problem
    assert weights.status()[0].source == "user data dir"


# ---------------------------------------------------------------- install
def sha256sum_check(root: Path) -> list[str]:
    """What `sha256sum -c SHA256SUMS` run in root checks: the names it lists, each verified."""
    names = []
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
        names.append(name)
    return names


def test_install_from_into_user_dir(checkpoints_dir):
    root = weights.install_from(checkpoints_dir)
    assert root == weights.user_checkpoints_dir()
    for variant in weights.VARIANTS:
        assert weights.locate(variant) == root / variant
        assert os.access(root / variant / DATA, os.W_OK)  # not the read-only source modes
    # the variants, and the root's checksum list and description (licence, layout) that the source has
    extras = [name for name in weights.ROOT_FILES if (checkpoints_dir / name).is_file()]
    assert "SHA256SUMS" in extras
    assert (sorted(p.name for p in root.iterdir() if not p.name.startswith(".install"))
            == sorted([*weights.VARIANTS, *extras]))
    for name in extras:
        assert (root / name).read_bytes() == (checkpoints_dir / name).read_bytes()
    assert len(sha256sum_check(root)) == 4 * len(weights.FILES)


def test_install_without_a_checksum_list_writes_one(checkpoints_dir, tmp_path):
    source = copy_root(checkpoints_dir, tmp_path / "src", ["DM21", "DM21mc"])  # variant folders only
    dest = weights.install_from(source, tmp_path / "dest", variants=["DM21", "DM21mc"])
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".install")) == \
        ["DM21", "DM21mc", "SHA256SUMS"]
    assert (dest / "SHA256SUMS").read_text() == weights.sha256sums_text(["DM21", "DM21mc"])
    assert sorted(sha256sum_check(dest)) == sorted(f"{v}/{rel}" for v in ("DM21", "DM21mc")
                                                   for rel in weights.FILES)


def test_install_refuses_a_checksum_list_that_contradicts_the_published_digests(checkpoints_dir, tmp_path):
    source = copy_root(checkpoints_dir, tmp_path / "src")
    sums = (checkpoints_dir / "SHA256SUMS").read_text().replace(
        weights.CHECKSUMS["DM21m"]["smart_module.pb"], "0" * 64)
    (source / "SHA256SUMS").write_text(sums)
    with pytest.raises(WeightsError, match=r"refusing to install from .*SHA256SUMS: line \d+: "
                                           r"DM21m/smart_module.pb does not have its published SHA-256"):
        weights.install_from(source, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_install_replaces_a_corrupted_install(checkpoints_dir, tmp_path):
    dest = copy_root(checkpoints_dir, tmp_path / "dest", ["DM21"])
    flip_byte(dest / "DM21" / DATA, 5)
    (dest / "DM21" / "stray-file").write_text("x")
    weights.install_from(checkpoints_dir, dest, variants=["dm21"])
    assert weights.locate("DM21", dest) == dest / "DM21"
    assert not (dest / "DM21" / "stray-file").exists()


def test_install_refuses_corrupted_source_and_leaves_dest_untouched(checkpoints_dir, tmp_path):
    source = copy_root(checkpoints_dir, tmp_path / "src")
    flip_byte(source / "DM21mc" / "variables" / "variables.index", 100)
    dest = copy_root(checkpoints_dir, tmp_path / "dest", ["DM21"])
    before = snapshot(dest)
    with pytest.raises(WeightsError, match=r"refusing to install from .*DM21mc/variables/variables.index"):
        weights.install_from(source, dest)
    assert snapshot(dest) == before
    empty = tmp_path / "fresh"
    with pytest.raises(WeightsError):
        weights.install_from(tmp_path / "nowhere", empty)
    assert snapshot(empty) == {}


def test_concurrent_installs_do_not_clash(checkpoints_dir, tmp_path):
    dest = tmp_path / "dest"
    errors = []

    def work():
        try:
            weights.install_from(checkpoints_dir, dest, variants=["DM21", "DM21m"])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    extras = [name for name in weights.ROOT_FILES if (checkpoints_dir / name).is_file()]
    assert (sorted(p.name for p in dest.iterdir() if not p.name.startswith(".install"))
            == sorted(["DM21", "DM21m", *extras]))
    weights.clear_cache()
    assert weights.locate("DM21m", dest) == dest / "DM21m"


# ------------------------------------------------------------- download
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_serve():
    """Start threaded HTTP servers on 127.0.0.1; returns start(directory=..., slow_s=...) -> base URL."""
    servers = []
    release = threading.Event()

    def start(directory: Path | None = None, slow_s: float | None = None) -> str:
        if slow_s is not None:
            class Slow(_QuietHandler):
                def do_GET(self):
                    release.wait(slow_s)
                    super().do_GET()
            handler = functools.partial(Slow, directory=str(directory or "."))
        else:
            handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_from_local_http_server(checkpoints_dir, tmp_path, http_serve):
    url = http_serve(checkpoints_dir)
    messages = []
    dest = weights.download(url + "/", tmp_path / "dest", timeout_s=10, progress=messages.append)
    assert dest == tmp_path / "dest"
    assert len(messages) == 4 * len(weights.FILES)
    assert messages[-1] == f"downloading {url}/DM21mu/{DATA}"
    for variant in weights.VARIANTS:
        assert weights.locate(variant, dest) == dest / variant
    assert not [p for p in dest.iterdir() if p.name.startswith(".staging")]
    # upstream publishes no SHA256SUMS: the root gets one from the digests the download was checked with
    assert (dest / "SHA256SUMS").read_text() == weights.sha256sums_text()
    assert len(sha256sum_check(dest)) == 4 * len(weights.FILES)


def test_download_defaults_to_user_dir(checkpoints_dir, http_serve):
    root = weights.download(http_serve(checkpoints_dir), variants=["DM21mc"], timeout_s=10)
    assert root == weights.user_checkpoints_dir()
    assert weights.locate("DM21mc") == root / "DM21mc"


def test_download_checksum_mismatch_names_url_and_installs_nothing(checkpoints_dir, tmp_path, http_serve):
    served = copy_root(checkpoints_dir, tmp_path / "served", ["DM21", "DM21m"])
    flip_byte(served / "DM21m" / DATA, 999)
    url = http_serve(served)
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError) as info:
        weights.download(url, dest, timeout_s=10, variants=["DM21", "DM21m"])
    assert f"{url}/DM21m/{DATA}: SHA-256 mismatch" in str(info.value)
    assert snapshot(dest) == {} or set(snapshot(dest)) <= {".install.lock"}
    assert not list(dest.glob("DM21*"))
    assert not dest.exists()  # the download created it: removed again


def test_failed_download_leaves_the_destination_as_it_was(checkpoints_dir, tmp_path, http_serve):
    url = http_serve(checkpoints_dir) + "/missing"
    # a destination that did not exist, parents included: absent afterwards
    with pytest.raises(WeightsError):
        weights.download(url, tmp_path / "new" / "deeper" / "dest", timeout_s=10)
    assert not (tmp_path / "new").exists()
    # the default destination, the user data folder: nothing of dm21cli's left there
    data_home = Path(os.environ["XDG_DATA_HOME"])
    data_home.mkdir(parents=True, exist_ok=True)
    with pytest.raises(WeightsError):
        weights.download(url, timeout_s=10)
    assert list(data_home.iterdir()) == []
    # an existing destination with an install in it: every file as it was, nothing added
    dest = copy_root(checkpoints_dir, tmp_path / "dest", ["DM21"])
    before = snapshot(dest)
    names = sorted(p.name for p in dest.rglob("*"))
    with pytest.raises(WeightsError):
        weights.download(url, dest, timeout_s=10)
    assert snapshot(dest) == before and sorted(p.name for p in dest.rglob("*")) == names


def test_failed_download_suggests_install_from_a_folder(checkpoints_dir, tmp_path, http_serve):
    url = http_serve(checkpoints_dir) + "/missing"
    with pytest.raises(WeightsError) as info:
        weights.download(url, timeout_s=10)
    msg = str(info.value)
    assert msg.startswith(f"download {url}/DM21/saved_model.pb: HTTP 404") and "\n" not in msg
    assert "nothing installed" in msg and msg.endswith("run `dm21 weights install --from DIR`")
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError) as info:
        weights.download(url, dest, timeout_s=10)
    assert str(info.value).endswith(f"run `dm21 weights install --from DIR --dest {dest}`")


def test_download_http_404_names_url(checkpoints_dir, tmp_path, http_serve):
    url = http_serve(checkpoints_dir) + "/no/such/folder"
    with pytest.raises(WeightsError, match=rf"download {url}/DM21/saved_model.pb: HTTP 404"):
        weights.download(url, tmp_path / "dest", timeout_s=10)
    assert not list((tmp_path / "dest").glob("DM21*"))


def test_download_timeout(checkpoints_dir, tmp_path, http_serve):
    url = http_serve(checkpoints_dir, slow_s=5.0)
    start = time.monotonic()
    with pytest.raises(WeightsError, match=rf"download {url}/DM21/saved_model.pb: timed out after 0.3 s"):
        weights.download(url, tmp_path / "dest", timeout_s=0.3)
    assert time.monotonic() - start < 3.0


def test_download_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(WeightsError, match=rf"download {url}/DM21/saved_model.pb: "):
        weights.download(url, tmp_path / "dest", timeout_s=2)


# --------------------------------------------------------------- the CLI
def dm21(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != weights.ENV_VAR}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "dm21cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=60)


def test_cli_list_ok(checkpoints_dir):
    result = dm21("weights", "list", "--checkpoints", str(checkpoints_dir))
    assert result.returncode == ExitStatus.SUCCESS, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["variant", "verified", "source", "path", "problem"]
    assert [line.split()[:3] for line in lines[1:]] == [[v, "yes", "option"] for v in weights.VARIANTS]
    assert str(checkpoints_dir / "DM21mc") in result.stdout


def test_cli_list_corrupted_exits_3(checkpoints_dir, tmp_path):
    root = copy_root(checkpoints_dir, tmp_path / "ck")
    flip_byte(root / "DM21mc" / DATA, 77)
    result = dm21("weights", "list", "--checkpoints", str(root))
    assert result.returncode == ExitStatus.WEIGHTS_ERROR == 3
    row = [line for line in result.stdout.splitlines() if line.startswith("DM21mc ")][0]
    assert row.split()[1] == "no" and "SHA-256 mismatch" in row
    assert result.stderr.startswith("dm21: error: 1 of 4 variants")
    assert str(root / "DM21mc" / DATA) in result.stderr and "dm21 weights install" in result.stderr


def test_cli_list_uses_env_var_and_path_prints_root(checkpoints_dir):
    result = dm21("weights", "list", env_extra={weights.ENV_VAR: str(checkpoints_dir)})
    assert result.returncode == 0 and "env DM21_CHECKPOINTS" in result.stdout
    result = dm21("weights", "path", env_extra={weights.ENV_VAR: str(checkpoints_dir)})
    assert result.returncode == 0 and result.stdout == f"{checkpoints_dir}\n"
    result = dm21("weights", "path")
    assert result.stdout == f"{weights.user_checkpoints_dir()}\n" and "user data dir" in result.stderr


def test_cli_install_then_list(checkpoints_dir):
    result = dm21("weights", "install", "--from", str(checkpoints_dir))
    assert result.returncode == 0, result.stderr
    assert f"into {weights.user_checkpoints_dir()}" in result.stdout
    assert dm21("weights", "list").returncode == 0


def test_cli_download_and_errors(checkpoints_dir, tmp_path, http_serve):
    url = http_serve(checkpoints_dir)
    dest = tmp_path / "dest"
    result = dm21("weights", "download", "--url", url, "--timeout", "10", "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    assert f"downloading {url}/DM21/saved_model.pb" in result.stderr and str(dest) in result.stdout
    assert "is not searched by default" in result.stderr
    assert dm21("weights", "list", "--checkpoints", str(dest)).returncode == 0
    result = dm21("weights", "download", "--url", url + "/missing", "--dest", str(tmp_path / "d2"))
    assert result.returncode == 3 and "HTTP 404" in result.stderr
    assert f"dm21 weights install --from DIR --dest {tmp_path / 'd2'}" in result.stderr
    assert not (tmp_path / "d2").exists()
    assert dm21("weights", "download", "--timeout", "-1").returncode == ExitStatus.INPUT_ERROR


def test_importing_weights_pulls_in_neither_tensorflow_nor_pyscf(checkpoints_dir):
    code = (
        "import sys, dm21cli.functional.weights, dm21cli.functional.tfbundle, dm21cli.cli.weights\n"
        f"dm21cli.functional.weights.load_parameters('DM21', {str(checkpoints_dir)!r})\n"
        "print(sorted(m for m in ('tensorflow', 'pyscf', 'rich', 'google.protobuf') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
