"""Real photos that nobody here made, fetched from package registries into a cache.

Never committed: benchmarks, scripts and opt-in tests call ``photo(name)`` and get a path in
the cache (``$GANPAINT_PHOTOS``, default ``~/.cache/ganpaint/photos``), fetched on first use:
- wallpapers (2560×1600 JPEGs and larger) from Debian's ``plasma-workspace-wallpapers``
  (``apt-get download`` + ``dpkg-deb -x``; KDE artists' photos, licences in the package's
  ``copyright`` file, which is kept next to them);
- small photos from scikit-image's wheel (``pip download``; only the PNGs are read);
- portraits (faces, for the default face model's gallery), all public-domain photos of the
  US government: Grace Hopper (US Navy) from matplotlib's wheel (``mpl-data/sample_data``),
  Barack Obama (three times) and Joe Biden (White House) from the test images of
  ``face_recognition``'s source archive (``pip download --no-binary``).

    python benchmarks/photos.py [NAME ...]     # fetch and print paths (all when no names)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WALLPAPER_PACKAGE = "plasma-workspace-wallpapers"
SKIMAGE_PACKAGE = "scikit-image==0.26.0"
# name -> path inside the unpacked Debian package
WALLPAPERS = {
    name: f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg"
    for name in (
        "BytheWater",
        "FallenLeaf",
        "Path",
        "Kite",
        "EveningGlow",
        "Autumn",
        "ColorfulCups",
        "summer_1am",
    )
}
SKIMAGE = ("astronaut", "chelsea", "coffee", "motorcycle_left")
# name -> (pip requirement, extra pip options, path inside the wheel / source archive)
PORTRAITS = {
    "grace_hopper": (
        "matplotlib==3.10.9",
        ["--only-binary", ":all:"],
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    ),
    **{
        name: (
            "face_recognition==1.3.0",
            ["--no-binary", ":all:"],
            f"face_recognition-1.3.0/tests/test_images/{name}.jpg",
        )
        for name in ("obama", "obama2", "obama3", "biden")
    },
}


def cache_dir() -> Path:
    return Path(os.environ.get("GANPAINT_PHOTOS", Path.home() / ".cache/ganpaint/photos"))


def photo(name: str) -> Path:
    """Path of a cached real photo (fetched on first use); KeyError for unknown names."""
    if name in WALLPAPERS:
        out = cache_dir() / "wallpapers" / f"{name}.jpg"
        if not out.exists():
            _fetch_wallpapers()
        return out
    if name in SKIMAGE:
        out = cache_dir() / "skimage" / f"{name}.png"
        if not out.exists():
            _fetch_skimage()
        return out
    if name in PORTRAITS:
        out = cache_dir() / "portraits" / f"{name}.jpg"
        if not out.exists():
            _fetch_portrait(name)
        return out
    raise KeyError(f"unknown photo {name!r}; known: {sorted([*WALLPAPERS, *SKIMAGE, *PORTRAITS])}")


def _fetch_wallpapers() -> None:
    dest = cache_dir() / "wallpapers"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["apt-get", "download", WALLPAPER_PACKAGE],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
        for name, rel in WALLPAPERS.items():
            shutil.copyfile(f"{tmp}/x/{rel}", dest / f"{name}.jpg.part")
            os.replace(dest / f"{name}.jpg.part", dest / f"{name}.jpg")
        copyright_file = Path(tmp, "x/usr/share/doc", WALLPAPER_PACKAGE, "copyright")
        if copyright_file.exists():
            shutil.copyfile(copyright_file, dest / "copyright")


def _pip_download(tmp: str, requirement: str, options: list[str]) -> Path:
    """One package file (wheel or source archive), without dependencies, into tmp."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
        + ["--disable-pip-version-check", "-d", tmp, *options, requirement],
        check=True,
    )
    return next(p for p in Path(tmp).iterdir() if p.suffix in (".whl", ".gz"))


def _fetch_skimage() -> None:
    dest = cache_dir() / "skimage"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(tmp, SKIMAGE_PACKAGE, ["--only-binary", ":all:"])
        with zipfile.ZipFile(wheel) as z:
            for name in SKIMAGE:
                (dest / f"{name}.png.part").write_bytes(z.read(f"skimage/data/{name}.png"))
                os.replace(dest / f"{name}.png.part", dest / f"{name}.png")


def _fetch_portrait(name: str) -> None:
    """Every portrait that the same package file holds (one download per package)."""
    requirement, options, _ = PORTRAITS[name]
    dest = cache_dir() / "portraits"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download(tmp, requirement, options)
        for other, (req, _, member) in PORTRAITS.items():
            if req != requirement:
                continue
            if archive.suffix == ".whl":
                with zipfile.ZipFile(archive) as z:
                    data = z.read(member)
            else:
                with tarfile.open(archive) as t:
                    f = t.extractfile(member)
                    assert f is not None, member
                    data = f.read()
            (dest / f"{other}.jpg.part").write_bytes(data)
            os.replace(dest / f"{other}.jpg.part", dest / f"{other}.jpg")


if __name__ == "__main__":
    for n in sys.argv[1:] or [*WALLPAPERS, *SKIMAGE, *PORTRAITS]:
        print(photo(n))
