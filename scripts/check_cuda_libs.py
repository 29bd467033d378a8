"""Every shared library of onnxruntime's CUDA provider and of torch's CUDA libraries resolves.

Run inside the GPU image at build time (Dockerfile.gpu): ``ldd`` each one and fail,
naming the library and what it lacks, if anything is "not found" besides the
driver's own libraries, which the host provides at run time (the NVIDIA container
toolkit mounts them). Needs no GPU.

    python scripts/check_cuda_libs.py [SITE_PACKAGES]
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

# The driver's: never in an image, always from the host.
DRIVER_LIBRARIES = ("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so",
                    "libnvcuvid.so", "libnvidia-encode.so")
SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")
NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def cuda_libraries(site: Path) -> list[Path]:
    found = sorted(site.glob("onnxruntime/capi/libonnxruntime_providers_cuda.so"))
    found += sorted(p for p in site.glob("torch/lib/*.so*")
                    if SHARED_LIBRARY.search(p.name) and "cuda" in p.name)
    return found


def missing(library: Path) -> list[str]:
    out = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=False)
    return [name for name in NOT_FOUND.findall(out.stdout)
            if not name.startswith(DRIVER_LIBRARIES)]


def main() -> int:
    site = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sysconfig.get_paths()["purelib"])
    libraries = cuda_libraries(site)
    if not libraries:
        print(f"check_cuda_libs: no CUDA library of onnxruntime or torch under {site}",
              file=sys.stderr)
        return 1
    failures = {lib: names for lib in libraries if (names := missing(lib))}
    for lib, names in failures.items():
        print(f"check_cuda_libs: {lib.relative_to(site)} needs {', '.join(names)}: not found",
              file=sys.stderr)
    if not failures:
        print(f"check_cuda_libs: {len(libraries)} CUDA libraries resolve "
              f"(the driver's libcuda aside)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
