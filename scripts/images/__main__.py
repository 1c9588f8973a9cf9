"""python -m scripts.images: see the package's docstring."""

from __future__ import annotations

import argparse

from scripts.images.build import LOCAL, PUBLISHED, build_all, default_base
from scripts.images.context import SERVICES, assemble


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.images", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the images with podman")
    build.add_argument("--base", default=default_base(),
                       help=f"{LOCAL}: a Debian base made here with debootstrap; {PUBLISHED}: "
                            "the Dockerfile's (a registry must be reachable); or an image "
                            "reference (default: RECSYS_IMAGES_BASE, else %(default)s)")
    context = commands.add_parser("context", help="assemble the build contexts only")
    for command in (build, context):
        command.add_argument("services", nargs="*", metavar="SERVICE",
                             help=f"{', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    services = tuple(args.services) or SERVICES
    unknown = set(services) - set(SERVICES)
    if unknown:
        parser.error(f"not a service: {', '.join(sorted(unknown))} (one of {', '.join(SERVICES)})")
    if args.command == "build":
        build_all(services, base_image=args.base)
    else:
        for service in services:
            print(assemble(service))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
