"""The base image where no registry is reachable: Debian 12 with Debian's Python 3.11, made
with `debootstrap --variant=minbase` into a folder and `podman import`ed. It is made once per
recipe: the tag carries a hash of the recipe, and an image with that tag in podman's storage is
used as is."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from scripts.images import podman

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# python3-venv: Python 3.11 with venv and the pip the build uses; ca-certificates: TLS to PyPI.
PACKAGES = ("python3-venv", "ca-certificates")
# What an image does not need: downloaded packages, package lists, documentation, locales.
TRIMMED = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
           "usr/share/info", "usr/share/locale")
CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "ENV LANG=C.UTF-8", 'CMD ["python3"]')


def tag() -> str:
    recipe = repr((SUITE, MIRROR, PACKAGES, TRIMMED, CHANGES)).encode()
    return f"localhost/recsys-base:{SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}"


def ensure_base() -> str:
    """The local base's reference, made first when podman does not have it."""
    ref = tag()
    if podman.exists("image", ref):
        print(f"base image {ref}: made before, reused", flush=True)
        return ref
    print(f"base image {ref}: debootstrap {SUITE} from {MIRROR} (a minute or two)", flush=True)
    with tempfile.TemporaryDirectory(prefix="recsys-base-") as scratch:
        root = Path(scratch) / "root"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        SUITE, str(root), MIRROR], check=True, timeout=1200,
                       stdout=subprocess.DEVNULL)
        for path in TRIMMED:
            shutil.rmtree(root / path, ignore_errors=True)
        changes = [arg for change in CHANGES for arg in ("--change", change)]
        with subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."],
                              stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None
            podman.podman("import", *changes, "-", ref, stdin=tar.stdout, timeout=600)
        if tar.returncode != 0:
            raise podman.PodmanError(f"tar of the base's root exited {tar.returncode}")
    return ref
