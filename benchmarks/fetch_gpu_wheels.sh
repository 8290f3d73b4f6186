#!/usr/bin/env bash
# Download, into .whl/, the wheels a bare GPU image lacks for benchmarks/gpu_checks.sh: nbval, ipykernel,
# ipywidgets, nbclient, cityscapesscripts, pyspng and what they need, for CPython 3.12 on x86-64 Linux (the
# image: torch, torchvision, OpenCV, matplotlib, scikit-learn, pytest and tqdm are there already, and so are
# the packages in HAVE below, which are removed again after the download). Run it where pip reaches PyPI:
#
#     bash benchmarks/fetch_gpu_wheels.sh          # then gpu_checks.sh installs .whl/*.whl on the GPU machine
#
# .whl/ is git-ignored; carry it to the GPU machine with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON_VERSION:-3.12}
rm -rf .whl && mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --only-binary=:all: --python-version "$python" --implementation cp "${platforms[@]}" \
    -d .whl nbval ipykernel ipywidgets nbclient cityscapesscripts pyspng
# On the image already (its package list): keep one version of each, the image's.
HAVE="numpy matplotlib pillow pytest tqdm packaging pygments psutil python_dateutil six requests certifi
charset_normalizer idna urllib3 attrs jinja2 markupsafe contourpy cycler fonttools kiwisolver pyparsing iniconfig
pluggy typing_extensions setuptools pyyaml coverage anyio h11 httpx httpcore colorama"
for name in $HAVE; do
    rm -f .whl/"$name"-*.whl .whl/"${name//_/-}"-*.whl
done
ls .whl | sed 's/-[0-9].*//' | tr '\n' ' '
echo
du -sh .whl
