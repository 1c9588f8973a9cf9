"""The service images, built and run with podman (README: Deployment).

    python -m scripts.images build [--base local|published|REF] [SERVICE...]
    python -m scripts.images context [SERVICE...]

`build` assembles each service's context (context.py), makes the local base when it is asked
for and missing (base.py), builds the images (build.py) and prints each one's size and what it
carries. `context` only assembles the contexts, for another builder (docker, buildx, Compose).
"""
